"""Whole generations, stage by stage, against their FLOP floors: the stock PyTorch pipeline vs the ORT engine.

One run of each variant, each in its own process (``litefocus_export.report.measure``, peak RSS and per-stage
peaks are its own), then one table: seconds and peak memory per stage, the stage's GFLOP (counted on the meta
device: ``report.flops``), its floor at this machine's measured convolution rate (an ORT Conv measured here,
in this run), and measured / floor. Every ratio comes from numbers measured in this one run.

    python scripts/bench_generation.py --model random:audioldm2 --seconds 80 --steps 10 --threads 2

Variants: ``torch`` (the stock diffusers pipeline, full attention), ``torch-bf16`` (the same after
``.to(torch.bfloat16)``), ``onnxruntime`` (the LiteFocus engine, built or taken from the cache), ``openvino-fp32``,
``openvino-bf16``, ``openvino-int8`` (the LiteFocus OpenVINO engines). Every variant generates with the same seed;
with ``onnxruntime`` among them, each other engine's audio gets its log-mel distance (dB, ``report.quality``) to the
fp32 ONNX Runtime engine's audio. ``--requests N`` runs N generations in the same process (a long-running
server's view: resident memory between requests is printed). ``--chunk-frames`` sets the vocoder chunk
(``LITEFOCUS_VOCODER_CHUNK``; 0: one-shot).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from litefocus_export.report.measure import measure_in_process

STAGES = (("conditioning", "conditioning"), ("unet_steps", "UNet steps"), ("vae_decode", "VAE decode"),
          ("vocoder", "vocoder"))


def conv_rate(threads: int) -> dict[str, float]:
    """GFLOP/s of ORT's CPU Conv on three shapes of the decode stages (best of 5 runs each); the best is the
    machine's rate."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    shapes = {  # name: (input shape, weight shape, pads)
        "conv1d 512x512 k11 @ 40000": ((1, 512, 40000), (512, 512, 11), [5, 5]),
        "conv2d 256x256 3x3 @ 500x64": ((1, 256, 500, 64), (256, 256, 3, 3), [1, 1, 1, 1]),
        "conv2d 512x512 3x3 @ 250x32": ((1, 512, 250, 32), (512, 512, 3, 3), [1, 1, 1, 1]),
    }
    rates = {}
    rng = np.random.default_rng(0)
    for name, (x_shape, w_shape, pads) in shapes.items():
        weight = helper.make_tensor("w", TensorProto.FLOAT, w_shape,
                                    rng.standard_normal(w_shape, dtype=np.float32).ravel().tolist())
        node = helper.make_node("Conv", ["x", "w"], ["y"], pads=pads)
        graph = helper.make_graph([node], "conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [weight])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        x = rng.standard_normal(x_shape, dtype=np.float32)
        feeds = {"x": x}
        session.run(None, feeds)
        best = min(_timed(session.run, None, feeds) for _ in range(5))
        flops = 2 * int(np.prod(x_shape)) * w_shape[0] * int(np.prod(w_shape[2:]))  # same padding, stride 1
        rates[name] = flops / best / 1e9
        del session
    return rates


def _timed(fn, *args) -> float:  # noqa: ANN001, ANN002
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def engine_folder(model: str, seconds: float, variant: str = "onnxruntime") -> Path:
    from litefocus_export.artifacts.cache import cache_root
    from litefocus_export.backends.build import BuildSettings, build_engines
    from litefocus_export.core.durations import DurationProfile
    from litefocus_export.export import ExportSettings
    from litefocus_export.report.settings import split_variant

    backend, precision = split_variant(variant)
    settings = BuildSettings(model=model, profile=DurationProfile.for_seconds(seconds), export=ExportSettings(),
                             backend=backend, engine_precision=precision)
    return build_engines(settings, cache_root() / "report-engines")


def memory_estimate_mb(engines: Path, seconds: float) -> float:
    """What ``build`` estimated (``backends.memory``) for a generation of ``seconds`` on these engines."""
    from litefocus_export.artifacts.manifest import read_manifest
    from litefocus_export.backends.onnxruntime.memory import estimate_generation_memory

    export = Path(read_manifest(engines, verify_hashes=False)["export"]["folder"])
    return estimate_generation_memory(export, read_manifest(export, verify_hashes=False), seconds).total / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="random:audioldm2")
    parser.add_argument("--seconds", type=float, default=80.0)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--variants", default="torch,onnxruntime")
    parser.add_argument("--requests", type=int, default=1, help="generations per process (memory between them)")
    parser.add_argument("--warmup", type=int, default=0, help="1-step generations before the timed ones")
    parser.add_argument("--engines", default=None, help="engine folder (default: build or reuse the cached one)")
    parser.add_argument("--chunk-frames", type=int, default=None, help="vocoder chunk in mel frames (0: one-shot)")
    parser.add_argument("--prompt", default="rain on a tin roof")
    args = parser.parse_args()

    from litefocus_export.report.flops import decode_flops, unet_step_flops

    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    rates = conv_rate(args.threads)
    rate = max(rates.values())
    for name, value in rates.items():
        print(f"conv rate, ORT, {args.threads} threads, {name}: {value:.1f} GFLOP/s")
    unet = unet_step_flops(args.model, args.seconds, 0.1, (8,))
    decode = decode_flops(args.model, args.seconds)
    from litefocus_export.report.settings import split_variant

    engine_variants = [v for v in variants if not v.startswith("torch")]
    if args.engines and len(engine_variants) > 1:
        raise SystemExit("--engines names one folder: give one engine variant with it")
    engines = {v: Path(args.engines) if args.engines else engine_folder(args.model, args.seconds, v)
               for v in engine_variants}
    env = dict(os.environ)
    if args.chunk_frames is not None:
        env["LITEFOCUS_VOCODER_CHUNK"] = str(args.chunk_frames)
    results, waveforms = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for variant in variants:
            backend, precision = split_variant(variant)
            attention = "full" if backend == "torch" else "litefocus"
            output = Path(tmp) / f"{variant}.npy"
            job = {"variant": variant, "model": args.model, "backend": backend, "dtype": precision or "fp32",
                   "engines": str(engines[variant]) if variant in engines else None,
                   "attention": attention, "seconds": args.seconds, "stages": "all", "steps": args.steps,
                   "repeats": args.requests, "warmup": args.warmup, "seed": 0, "prompt": args.prompt,
                   "threads": args.threads, "sparse_ratio": 0.1, "levels": [8], "output": str(output)}
            start = time.perf_counter()
            results[variant] = measure_in_process(job, Path(tmp), f"{variant}-{attention}", env)
            waveforms[variant] = np.load(output)
            print(f"{variant}: measured in {time.perf_counter() - start:.0f} s", flush=True)

    gflop = {"conditioning": None, "vae_decode": decode["vae_decoder"]["total_gflop"],
             "vocoder": decode["vocoder"]["total_gflop"]}
    print(f"\n{args.model}, {args.seconds:g} s, {args.steps} steps, {args.threads} threads, fp32; floor = GFLOP / "
          f"{rate:.1f} GFLOP/s (best measured ORT Conv rate)\n")
    header = ["stage", "GFLOP (torch / engine)", "floor s (engine)"]
    for variant in variants:
        header += [f"{variant} s", f"{variant} / floor", f"{variant} peak MB"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for key, label in (*STAGES, ("end_to_end", "end to end")):
        if key == "unet_steps":
            flop = {v: unet["full_total_gflop" if v.startswith("torch") else "litefocus_total_gflop"] * args.steps
                    for v in variants}
        elif key == "end_to_end":
            flop = None
        else:
            flop = dict.fromkeys(variants, gflop[key]) if gflop.get(key) else None
        floor = {v: flop[v] / rate for v in flop} if flop else None
        engine = next((v for v in variants if not v.startswith("torch")), variants[0])
        cells = [label, f"{flop[variants[0]]:.0f} / {flop[engine]:.0f}" if flop else "-",
                 f"{floor[engine]:.1f}" if floor else "-"]
        for variant in variants:
            raw = results[variant]
            seconds = np.median(raw[f"{key}_s"])
            peak = raw.get(f"{key}_peak_mb") if key != "end_to_end" else [raw["peak_rss_mb"]]
            cells += [f"{seconds:.1f}", f"{seconds / floor[variant]:.2f}x" if floor else "-",
                      f"{max(peak):.0f}" if peak else "-"]
        print("| " + " | ".join(cells) + " |")
    if {"torch", "onnxruntime"} <= set(results):
        t, e = (np.median(results[v]["end_to_end_s"]) for v in ("torch", "onnxruntime"))
        print(f"\nengine vs stock PyTorch, end to end: {t / e:.2f}x; peak RSS engine "
              f"{results['onnxruntime']['peak_rss_mb']:.0f} MB vs PyTorch {results['torch']['peak_rss_mb']:.0f} MB")
        decode_engine = sum(np.median(results["onnxruntime"][f"{k}_s"]) for k in ("vae_decode", "vocoder"))
        decode_floor = (gflop["vae_decode"] + gflop["vocoder"]) / rate
        print(f"engine VAE decode + vocoder: {decode_engine:.1f} s, floor {decode_floor:.1f} s, "
              f"{decode_engine / decode_floor:.2f}x")
    if "torch" in results:
        stock = np.median(results["torch"]["end_to_end_s"])
        for variant in (v for v in variants if v != "torch"):
            ratio = stock / np.median(results[variant]["end_to_end_s"])
            print(f"{variant} vs stock PyTorch fp32, end to end: {ratio:.2f}x; peak RSS "
                  f"{results[variant]['peak_rss_mb']:.0f} MB vs {results['torch']['peak_rss_mb']:.0f} MB")
    if "onnxruntime" in waveforms:
        from litefocus_export.report.quality import mel_distance_db, sample_rate_of

        rate_hz = sample_rate_of(args.model)
        for variant in (v for v in variants if v not in ("onnxruntime", "torch")):
            print(f"{variant}: log-mel distance to the fp32 ONNX Runtime engine's audio (same seed): "
                  f"{mel_distance_db(waveforms[variant], waveforms['onnxruntime'], rate_hz):.3f} dB")
    for variant in engine_variants:
        print(f"{variant}: peak RSS {results[variant]['peak_rss_mb']:.0f} MB; the build's memory estimate "
              f"{memory_estimate_mb(engines[variant], args.seconds):.0f} MB")
    for variant, raw in results.items():
        between = raw.get("between_requests_rss_mb")
        if between:
            print(f"{variant}: RSS after each request (MB): {', '.join(f'{v:.0f}' for v in between)}")


if __name__ == "__main__":
    main()
