"""Load test of a litefocus_audio server on loopback: N requests at concurrency C, latency percentiles.

Loopback only (127.0.0.0/8, localhost, ::1), bounded in requests and time, stops by itself.

    # against a running server
    python scripts/load_test.py --url 127.0.0.1:8000 --requests 16 --concurrency 8 --seconds 10
    # start servers itself: the same load at --max-batch 1 and 4, plus the same request on the Sampler directly
    python scripts/load_test.py --engines engines/audioldm2-10s-... --requests 16 --concurrency 8 --seconds 10 \\
        --compare-batch 1,4 --direct

Prints p50/p95/p99 latency, throughput (audio seconds per wall second), errors and refusals (queue full).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import ipaddress
import statistics
import sys
import time
from pathlib import Path

from litefocus_export.core.errors import EngineError
from litefocus_export.core.request import GenerationRequest
from litefocus_export.serve.client import send
from litefocus_export.serve.process import ServerProcess

MAX_REQUESTS = 1000


def loopback(url: str) -> str:
    host = url.removeprefix("http://").rsplit(":", 1)[0].strip("[]")
    if host != "localhost" and not ipaddress.ip_address(host).is_loopback:
        sys.exit(f"error: {url} is not a loopback address: this load test only targets this machine")
    return url


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def run_load(url: str, args: argparse.Namespace) -> dict:
    """``args.requests`` requests at ``args.concurrency``, stopping at ``args.max_wall`` seconds."""
    latencies, errors, refused = [], [], 0
    deadline = time.monotonic() + args.max_wall

    def one(index: int) -> float | None:
        if time.monotonic() > deadline:
            return None
        request = GenerationRequest(prompt=args.prompt, seconds=args.seconds, steps=args.steps, seed=index)
        start = time.perf_counter()
        send(url, request, timeout_s=args.max_wall)
        return time.perf_counter() - start

    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(args.concurrency) as pool:
        for future in [pool.submit(one, i) for i in range(args.requests)]:
            try:
                latency = future.result()
            except EngineError as exc:
                refused += "queue is full" in str(exc)
                errors.append(str(exc))
                continue
            if latency is not None:
                latencies.append(latency)
    wall = time.perf_counter() - start
    return {"ok": len(latencies), "errors": len(errors) - refused, "refused": refused, "wall_s": wall,
            "p50": percentile(latencies, 50) if latencies else None,
            "p95": percentile(latencies, 95) if latencies else None,
            "p99": percentile(latencies, 99) if latencies else None,
            "throughput": len(latencies) * args.seconds / wall, "first_error": errors[0] if errors else None}


def report(label: str, r: dict) -> None:
    fmt = lambda v: "-" if v is None else f"{v:.2f} s"  # noqa: E731
    print(f"{label}: {r['ok']} ok, {r['errors']} errors, {r['refused']} refused in {r['wall_s']:.1f} s; "
          f"p50 {fmt(r['p50'])}, p95 {fmt(r['p95'])}, p99 {fmt(r['p99'])}; "
          f"throughput {r['throughput']:.3f} audio s / s", flush=True)
    if r["first_error"]:
        print(f"  first error: {r['first_error']}", flush=True)


def with_server(engines: list[str], max_batch: int, args: argparse.Namespace) -> dict:
    """Start ``litefocus-export serve`` on free loopback ports, run the load, stop it (SIGTERM)."""
    server = ServerProcess([Path(e) for e in engines], "--max-batch", str(max_batch), "--max-queue-delay-ms",
                    str(args.queue_delay_ms), "--max-queue", str(max(64, args.requests)))
    try:
        return run_load(server.url, args)
    finally:
        server.stop()


def direct(engines: list[str], args: argparse.Namespace) -> float:
    """Median seconds of the same request on the Sampler in this process (no server)."""
    from litefocus_export.runtime import Sampler

    sampler = Sampler(engines[0], progress=False)
    times = []
    for seed in range(max(3, min(args.requests, 5))):
        start = time.perf_counter()
        sampler(GenerationRequest(prompt=args.prompt, seconds=args.seconds, steps=args.steps, seed=seed))
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="a running server's HTTP endpoint (loopback only)")
    parser.add_argument("--engines", nargs="+", help="engine folders: start servers here instead")
    parser.add_argument("--requests", type=int, default=16)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--prompt", default="rain on a tin roof")
    parser.add_argument("--compare-batch", default="1,4", help="max-batch values to compare (with --engines)")
    parser.add_argument("--queue-delay-ms", type=float, default=100.0)
    parser.add_argument("--direct", action="store_true", help="also time the request on the Sampler directly")
    parser.add_argument("--max-wall", type=float, default=1800.0, help="stop sending after this many seconds")
    args = parser.parse_args()
    if not 1 <= args.requests <= MAX_REQUESTS or not 1 <= args.concurrency <= 64:
        parser.error(f"--requests must be 1..{MAX_REQUESTS} and --concurrency 1..64")
    if bool(args.url) == bool(args.engines):
        parser.error("give --url (a running server) or --engines (start servers here)")
    print(f"{args.requests} requests of {args.seconds:g} s, {args.steps} steps, concurrency {args.concurrency}")
    if args.url:
        report(loopback(args.url), run_load(args.url, args))
        return
    results = {}
    for batch in (int(b) for b in args.compare_batch.split(",")):
        results[batch] = with_server(args.engines, batch, args)
        report(f"--max-batch {batch}", results[batch])
    if len(results) == 2:
        (b1, r1), (b2, r2) = results.items()
        print(f"throughput --max-batch {b2} vs {b1}: {r2['throughput'] / r1['throughput']:.2f}x")
    if args.direct:
        alone = direct(args.engines, args)
        first = next(iter(results.values()))
        print(f"the same request on the Sampler directly: {alone:.2f} s (median)")
        if args.concurrency == 1 and first["p50"]:
            print(f"serving overhead (server p50 / Sampler): {first['p50'] / alone:.3f}x")


if __name__ == "__main__":
    main()
