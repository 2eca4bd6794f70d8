"""A small closed-loop HTTP load generator (asyncio + httpx) for the served model.

Bounded in count and time, loopback only. Used by the load test and by `make bench`.
"""

from __future__ import annotations

import asyncio
import time
from urllib.parse import urlparse

import httpx
import numpy as np

LOOPBACK = {"127.0.0.1", "localhost", "::1"}


async def _worker(client, url, body, remaining, latencies, errors, deadline):
    while remaining[0] > 0 and time.monotonic() < deadline:
        remaining[0] -= 1
        t0 = time.perf_counter()
        try:
            r = await client.post(url, content=body, headers={"Content-Type": "application/json"})
            ok = r.status_code == 200
        except httpx.HTTPError:
            ok = False
        latencies.append((time.perf_counter() - t0) * 1000)
        if not ok:
            errors[0] += 1


async def _run(base_url, body, n_requests, concurrency, max_seconds):
    latencies, errors, remaining = [], [0], [n_requests]
    deadline = time.monotonic() + max_seconds
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        t0 = time.perf_counter()
        await asyncio.gather(*[
            _worker(client, f"{base_url}/invocations", body, remaining, latencies, errors, deadline)
            for _ in range(concurrency)])
        wall = time.perf_counter() - t0
    return latencies, errors[0], wall


def run_load(base_url: str, body: bytes, n_requests: int = 2000, concurrency: int = 8,
             max_seconds: float = 300.0) -> dict:
    """POST ``body`` to ``base_url/invocations`` ``n_requests`` times, ``concurrency`` at once.

    Returns ``{"requests", "errors", "p50_ms", "p99_ms", "rps", "wall_s"}``; a request
    that is not HTTP 200 counts as an error. Refuses non-loopback hosts (ValueError).
    """
    host = urlparse(base_url).hostname
    if host not in LOOPBACK:
        raise ValueError(f"load generator targets loopback only, not {host!r}")
    latencies, errors, wall = asyncio.run(_run(base_url, body, n_requests, concurrency, max_seconds))
    lat = np.array(latencies)
    return {"requests": len(lat), "errors": errors, "p50_ms": float(np.percentile(lat, 50)),
            "p99_ms": float(np.percentile(lat, 99)), "rps": len(lat) / wall, "wall_s": wall}
