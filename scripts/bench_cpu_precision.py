"""One UNet step on the CPU, every precision and its honest peers, measured alternately in one run.

    python scripts/bench_cpu_precision.py --model random:audioldm2 --seconds 80 --threads 2 [--rounds 2]
    python scripts/bench_cpu_precision.py --seconds 320 --warmup 0 \
        --variants stock-fp32,onnxruntime-full-fp32,onnxruntime-fp32   # long audio: LiteFocus vs full, one backend

Variants (batch 2, the same seeded inputs for all; ``report.measure`` jobs, one process each so peak RSS is its own):
- ``stock-fp32``: the diffusers UNet, full attention (SDPA), fp32;
- ``stock-bf16``: the same after ``.to(torch.bfloat16)``;
- ``openvino-full-bf16``: the stock full-attention UNet exported to ONNX and built with OpenVINO in bf16 (what a
  user with a bf16 CPU would pick instead);
- ``onnxruntime-full-fp32``: the stock full-attention UNet as an ONNX Runtime engine (LiteFocus's peer on its own
  backend);
- ``onnxruntime-fp32``: our ONNX Runtime LiteFocus engine;
- ``openvino-fp32``, ``openvino-bf16``, ``openvino-int8``: our OpenVINO LiteFocus engines.
Each round runs every variant once (``--warmup`` calls, then ``--repeats`` timed calls); the table shows the median over
rounds. Errors: full-attention variants against ``stock-fp32``, LiteFocus ones against ``onnxruntime-fp32`` (the
same LiteFocus samples: every engine draws them from the same seed). Variants this CPU cannot run as asked (bf16
without bf16 units) are listed as skipped.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from litefocus_export.report.measure import measure_in_process

VARIANTS = ("stock-fp32", "stock-bf16", "openvino-full-bf16", "onnxruntime-full-fp32", "onnxruntime-fp32",
            "openvino-fp32", "openvino-bf16", "openvino-int8")
PEERS = ("stock-fp32", "stock-bf16", "openvino-full-bf16", "onnxruntime-full-fp32", "onnxruntime-fp32")
REFERENCE = {"full": "stock-fp32", "litefocus": "onnxruntime-fp32"}


def variant_settings(variant: str) -> tuple[str, str, str | None]:
    """(backend, attention, precision) of a variant."""
    if variant.startswith("stock-"):
        return "torch", "full", variant.removeprefix("stock-")
    parts = variant.split("-")
    attention = "full" if "full" in parts else "litefocus"
    return parts[0], attention, parts[-1]


def engine_folder(model: str, seconds: float, backend: str, attention: str, precision: str) -> Path:
    """The UNet-only engine folder of a variant (built, or reused from the cache)."""
    from litefocus_export.artifacts.cache import cache_root
    from litefocus_export.backends.build import BuildSettings, build_engines
    from litefocus_export.core.durations import DurationProfile
    from litefocus_export.export import ExportSettings

    settings = BuildSettings(model=model, profile=DurationProfile.for_seconds(seconds), backend=backend,
                             export=ExportSettings(attention=attention, stages=("unet",)),
                             engine_precision=precision if backend == "openvino" else None)
    return build_engines(settings, cache_root() / "report-engines")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="random:audioldm2")
    parser.add_argument("--seconds", type=float, default=80.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=1, help="passes over every variant (alternating)")
    parser.add_argument("--repeats", type=int, default=1, help="timed calls per variant and round")
    parser.add_argument("--warmup", type=int, default=1, help="untimed calls first (0 for long audio: minutes each)")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    args = parser.parse_args()

    from litefocus_export.backends.openvino.cpu import cpu_features

    features = cpu_features()
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        raise SystemExit(f"unknown variants {', '.join(unknown)}; valid: {', '.join(VARIANTS)}")
    skipped = {v: "this CPU has no bf16 units" for v in variants if v.endswith("bf16") and not features.bf16}
    variants = [v for v in variants if v not in skipped]
    folders = {}
    for variant in variants:
        backend, attention, precision = variant_settings(variant)
        if backend != "torch":
            start = time.perf_counter()
            folders[variant] = engine_folder(args.model, args.seconds, backend, attention, precision)
            print(f"{variant}: {folders[variant]} ({time.perf_counter() - start:.0f} s)", flush=True)

    results: dict[str, list[dict]] = {v: [] for v in variants}
    with tempfile.TemporaryDirectory() as tmp:
        for round_index in range(args.rounds):
            for variant in variants:
                backend, attention, precision = variant_settings(variant)
                output = Path(tmp) / f"{variant}.npy"
                job = {"variant": variant, "model": args.model, "backend": backend, "attention": attention,
                       "engines": str(folders.get(variant)) if variant in folders else None,
                       "dtype": precision, "seconds": args.seconds, "stages": "unet", "steps": 1,
                       "repeats": args.repeats, "warmup": args.warmup, "seed": 0, "threads": args.threads,
                       "sparse_ratio": 0.1, "levels": [8], "output": str(output) if round_index == 0 else None}
                start = time.perf_counter()
                results[variant].append(measure_in_process(job, Path(tmp), variant))
                print(f"round {round_index + 1}: {variant} step {np.median(results[variant][-1]['unet_step_s']):.2f} s "
                      f"({time.perf_counter() - start:.0f} s with load)", flush=True)
        outputs = {v: np.load(Path(tmp) / f"{v}.npy") for v in variants}

    step = {v: float(np.median([t for r in results[v] for t in r["unet_step_s"]])) for v in variants}
    peak = {v: max(r["peak_rss_mb"] for r in results[v]) for v in variants}
    print(f"\nCPU: {features.describe()}; {args.threads} threads; {args.model}, "
          f"{args.seconds:g} s, batch 2, UNet step, median of {args.rounds} round(s) x {args.repeats} "
          f"after {args.warmup} warm-up call(s)\n")
    peers = [peer for peer in PEERS if peer in step]
    print("| variant | UNet step | peak RSS | relative error (max / rms) | "
          + " | ".join(f"vs {peer}" for peer in peers) + " |")
    print("|---|---|---|---|" + "---|" * len(peers))
    for variant in variants:
        _, attention, _ = variant_settings(variant)
        reference = REFERENCE[attention]
        error = "reference"
        if variant != reference and reference in outputs:
            diff = outputs[variant].astype(np.float64) - outputs[reference]
            error = (f"{np.abs(diff).max() / np.abs(outputs[reference]).max():.1e} / "
                     f"{np.linalg.norm(diff) / np.linalg.norm(outputs[reference]):.1e} vs {reference}")
        ratios = [f"{step[peer] / step[variant]:.2f}x" for peer in peers]
        print(f"| {variant} | {step[variant]:.2f} s | {peak[variant]:.0f} MB | {error} | {' | '.join(ratios)} |")
    for variant, reason in skipped.items():
        print(f"| {variant} | skipped: {reason} | | |" + " |" * len(peers))


if __name__ == "__main__":
    main()
