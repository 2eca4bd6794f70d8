"""A small load generator for the served model: threads + httpx, loopback only.

    python -m entrypoints.loadtest http://127.0.0.1:5001 --requests 2000 --concurrency 8 --out load.json

sends ``--requests`` POST ``/invocations`` requests with at most
``--concurrency`` in flight, cycling over request bodies built from real
stacks, and reports the count of errors and the latency percentiles (ms). The
figures are measurements, never assertions: on a shared machine they are noisy.
Reused by the benchmark (``serve_p50_ms_c1``, ``serve_p50_ms_c8``, ...).
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from dataclasses import asdict, dataclass, field
from urllib.parse import urlparse

import numpy as np

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


@dataclass
class LoadResult:
    """What one load run measured.

    Attributes
    ----------
    n_requests, concurrency : int
    n_errors : int
        Requests that failed: transport error, timeout or a status other than 200.
    errors : dict[str, int]
        Error kind (``status 500``, ``ReadTimeout``, ...) -> count.
    wall_s : float
        Wall time of the whole run, seconds.
    throughput_rps : float
        Completed requests per second of wall time.
    p50_ms, p90_ms, p99_ms, max_ms : float
        Latency percentiles of all requests (numpy ``percentile``, linear), ms.
    """

    url: str
    n_requests: int
    concurrency: int
    n_errors: int
    errors: dict[str, int] = field(default_factory=dict)
    wall_s: float = 0.0
    throughput_rps: float = 0.0
    p50_ms: float = float("nan")
    p90_ms: float = float("nan")
    p99_ms: float = float("nan")
    max_ms: float = float("nan")

    def to_dict(self) -> dict:
        return asdict(self)


def stack_bodies(stacks: list[np.ndarray], per_request: int = 1) -> list[bytes]:
    """JSON bodies ``{"inputs": [STACK, ...]}`` with ``per_request`` stacks of one shape each.

    stacks: float ``(32, H, W)`` arrays; stacks are grouped by shape (one
    request holds stacks of one size). Returns the encoded bodies.
    """
    by_shape: dict[tuple, list[np.ndarray]] = {}
    for s in stacks:
        by_shape.setdefault(s.shape, []).append(s)
    bodies = []
    for group in by_shape.values():
        for i in range(0, len(group), per_request):
            chunk = group[i:i + per_request]
            bodies.append(json.dumps({"inputs": [np.asarray(s, np.float64).tolist() for s in chunk]}).encode())
    return bodies


def _check_loopback(url: str) -> None:
    host = urlparse(url).hostname
    if host not in LOOPBACK_HOSTS:
        raise ValueError(f"load target {url!r} is not a loopback address; only {LOOPBACK_HOSTS} are allowed")


def _run(url: str, bodies: list[bytes], n_requests: int, concurrency: int,
         timeout_s: float, deadline_s: float) -> LoadResult:
    """``concurrency`` threads, each with its own keep-alive ``httpx.Client``, share the requests.

    Blocking clients on threads (the GIL is released while a thread waits on its
    socket) add less of the client's own time to each measured latency than one
    asyncio client does (the comparison is in docs/benchmarks.md).
    """
    import httpx

    latencies = np.full(n_requests, np.nan)
    errors: dict[str, int] = {}
    lock = threading.Lock()
    counter = itertools.count()
    stop_at = time.perf_counter() + deadline_s
    headers = {"Content-Type": "application/json"}

    def worker() -> None:
        with httpx.Client(timeout=timeout_s) as client:
            while time.perf_counter() < stop_at:
                i = next(counter)  # itertools.count: one atomic step under the GIL
                if i >= n_requests:
                    return
                start = time.perf_counter()
                try:
                    r = client.post(f"{url}/invocations", content=bodies[i % len(bodies)], headers=headers)
                    kind = None if r.status_code == 200 else f"status {r.status_code}"
                except httpx.HTTPError as exc:
                    kind = type(exc).__name__
                latencies[i] = (time.perf_counter() - start) * 1000.0
                if kind:
                    with lock:
                        errors[kind] = errors.get(kind, 0) + 1

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start

    done = latencies[~np.isnan(latencies)]
    if len(done) < n_requests:
        errors["not sent (deadline)"] = n_requests - len(done)
    result = LoadResult(url=url, n_requests=n_requests, concurrency=concurrency,
                        n_errors=sum(errors.values()), errors=errors, wall_s=wall,
                        throughput_rps=len(done) / wall if wall > 0 else 0.0)
    if len(done):
        result.p50_ms, result.p90_ms, result.p99_ms = (float(v) for v in np.percentile(done, [50, 90, 99]))
        result.max_ms = float(done.max())
    return result


def run_load(url: str, bodies: list[bytes], n_requests: int = 2000, concurrency: int = 8,
             timeout_s: float = 30.0, deadline_s: float = 300.0) -> LoadResult:
    """Send ``n_requests`` bodies (cycled) to ``url``/invocations, ``concurrency`` at a time.

    Bounded in count and time: requests not sent by ``deadline_s`` (seconds)
    count as errors; each request times out after ``timeout_s``.

    Raises
    ------
    ValueError
        ``url`` is not on a loopback address, or no bodies / bad counts.
    """
    _check_loopback(url)
    if not bodies or n_requests < 1 or concurrency < 1:
        raise ValueError("need at least one body, one request and concurrency >= 1")
    return _run(url.rstrip("/"), bodies, n_requests, concurrency, timeout_s, deadline_s)
