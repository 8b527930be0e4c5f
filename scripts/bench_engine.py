"""UNet step at 80 s on random:audioldm2 (real size, batch 2, fp32, CPU, 2 threads), in one run:
ONNX Runtime LiteFocus engine vs stock diffusers UNet (SDPA) vs patched PyTorch UNet.

Exports only the UNet (cached under $LITEFOCUS_CACHE), builds the ORT engine, then times each variant
in its own process (peak RSS is per process). Usage: python scripts/bench_engine.py [--seconds 80]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from litefocus_export.report.measure import peak_rss_mb  # VmHWM: ru_maxrss keeps the parent's peak


def time_engine(folder: str, seconds: float, threads: int, raw: bool) -> dict:
    """One UNet step on the engine folder, or (``raw``) on the un-optimised export it was built from."""
    from litefocus_export.backends.onnxruntime import OrtStage
    from litefocus_export.core.contract import UNET, example_unet_feeds
    from litefocus_export.runtime import EngineFolder

    engines = EngineFolder(folder, threads=threads, stages=(UNET,))
    unet = engines.stage(UNET)
    frames = engines.geometry.latent_frames(seconds)
    feeds = example_unet_feeds(unet["inputs"], frames, seed=0, layers=unet.get("litefocus_layers", []),
                               sparse_ratio=engines.sparse_ratio)
    if raw:
        export = engines.manifest["export"]["folder"]
        run = OrtStage(Path(export) / unet["file"], threads=threads)
    else:
        run = engines.runner(UNET)
    run(feeds)  # warm-up: session creation and first-run allocations
    start = time.perf_counter()
    run(feeds)
    return {"variant": "raw-onnx" if raw else "engine", "step_s": time.perf_counter() - start}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=80.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--raw", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        result = time_engine(args.child, args.seconds, args.threads, args.raw)
        result["peak_rss_mb"] = peak_rss_mb()
        print(json.dumps(result))
        return
    from litefocus_export.backends.build import BuildSettings, build_engines
    from litefocus_export.core.durations import DurationProfile
    from litefocus_export.export import ExportSettings

    start = time.perf_counter()
    settings = BuildSettings(model="random:audioldm2", profile=DurationProfile.for_seconds(args.seconds),
                             export=ExportSettings(stages=("unet",)))
    folder = build_engines(settings, "engines")
    print(f"engine: {folder} (export + build {time.perf_counter() - start:.0f} s)", flush=True)
    bench = [sys.executable, "scripts/bench_attention.py", "--seconds", str(args.seconds), "--threads",
             str(args.threads), "--child"]
    rows = [json.loads(subprocess.run([*bench, str(args.seconds), impl], capture_output=True, text=True,
                                      check=True).stdout.strip().splitlines()[-1]) for impl in
            ("stock", "litefocus-fast")]
    child = [sys.executable, __file__, "--seconds", str(args.seconds), "--threads", str(args.threads), "--child",
             str(folder)]
    engine, raw = (json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True)
                              .stdout.strip().splitlines()[-1]) for cmd in (child, [*child, "--raw"]))
    stock, patched = rows
    print(f"\n| {args.seconds:g} s, batch 2, fp32 | UNet step | peak RSS |\n|---|---|---|")
    print(f"| stock diffusers UNet (SDPA) | {stock['forward_s']:.2f} s | {stock['peak_rss_mb']:.0f} MB |")
    print(f"| patched PyTorch UNet (LiteFocus) | {patched['forward_s']:.2f} s | {patched['peak_rss_mb']:.0f} MB |")
    print(f"| ONNX Runtime, raw exported ONNX | {raw['step_s']:.2f} s | {raw['peak_rss_mb']:.0f} MB |")
    print(f"| ONNX Runtime LiteFocus engine | {engine['step_s']:.2f} s | {engine['peak_rss_mb']:.0f} MB |")
    print(f"\nengine vs stock: {stock['forward_s'] / engine['step_s']:.2f}x; "
          f"engine vs patched torch: {patched['forward_s'] / engine['step_s']:.2f}x; "
          f"engine vs raw ONNX: {raw['step_s'] / engine['step_s']:.2f}x")


if __name__ == "__main__":
    main()
