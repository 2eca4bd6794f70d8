"""The one rule of the project's services: nothing is open beyond loopback.

A service bound to a loopback address (``127.0.0.0/8``, ``::1``, ``localhost``) is reachable
only from this machine; any other address (a LAN address, ``0.0.0.0``, ``::``, a host name)
may be reachable from a network, and then the service must authenticate its clients:
the tracking server with MLflow's ``basic-auth`` app (:mod:`ops.tracking_auth`), the Dask
scheduler and workers with mutual TLS (:mod:`ops.dask_tls`). Stdlib only.
"""

from __future__ import annotations

import ipaddress

#: Host names that always mean this machine's loopback interface.
LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"})


class ExposureError(ValueError):
    """A service would listen beyond loopback without authenticating its clients."""


def is_loopback(host: str) -> bool:
    """True when ``host`` (an IP literal, optionally ``[...]``-bracketed, or a name) is loopback only.

    ``127.0.0.1``, ``127.0.0.5``, ``::1``, ``localhost`` -> True; ``0.0.0.0``, ``::``, ``""``,
    ``10.0.0.4``, ``myhost`` -> False (a wildcard or a name other than localhost may be reachable
    from a network). Never resolves names (no DNS at start-up; a resolver could say anything).
    """
    h = (host or "").strip().strip("[]").lower()
    if h in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(h.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def require_protected(host: str, protected: bool, service: str, how: str) -> None:
    """Raise :class:`ExposureError` when ``service`` would bind ``host`` beyond loopback unprotected.

    ``protected`` says whether the service authenticates its clients (auth on / TLS on);
    ``how`` is the fix named in the message (e.g. ``"drop AUTH=none"``).
    """
    if not protected and not is_loopback(host):
        raise ExposureError(
            f"{service} would listen on {host!r}, beyond loopback, without authentication: refused. "
            f"Anyone who can reach that address could use it; {how}, or bind 127.0.0.1")
