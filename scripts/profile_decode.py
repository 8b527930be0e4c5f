"""ONNX Runtime's profiler on the decode stages of an engine folder: where the VAE decoder and vocoder spend time.

    python scripts/profile_decode.py ENGINE_FOLDER [--seconds 80] [--threads 2] [--stages vae_decoder,vocoder]
        [--chunk-frames 0]

Runs each stage once (after one warm-up run at a short length, so session set-up is not profiled) on random
inputs of the requested length with ``SessionOptions.enable_profiling`` and the engine's own session settings
(``OrtStage``), then prints, per stage, the time by operator type and the ten slowest nodes. With
``--chunk-frames`` the vocoder runs in chunks of that many mel frames (``runtime.decode``).

    python scripts/profile_decode.py --torch random:audioldm2 [--seconds 80] [--threads 2]

profiles the same stages of the PyTorch pipeline instead (``vae.decode`` and the vocoder, one shot, with
``torch.profiler``): time by aten operator (self CPU time), on inputs of the same shapes.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from pathlib import Path

import numpy as np


def profile_stage(path: Path, feeds: dict[str, np.ndarray], warm: dict[str, np.ndarray], threads: int,
                  run=None) -> tuple[float, dict, list]:  # noqa: ANN001
    import onnxruntime as ort

    from litefocus_export.backends.onnxruntime import runner
    from litefocus_export.core.heap import return_large_buffers_to_os

    return_large_buffers_to_os()  # as OrtStage runs the engines
    options = runner.session_options(threads, optimization_level=runner.load_level(path.stem))
    options.enable_profiling = True
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    session.run(None, warm)
    start = time.perf_counter()
    if run is None:
        session.run(None, feeds)
    else:
        run(session)
    seconds = time.perf_counter() - start
    trace_path = Path(session.end_profiling())
    trace = json.loads(trace_path.read_text())
    by_op: dict[str, float] = defaultdict(float)
    nodes: dict[str, float] = defaultdict(float)
    warm_end = None
    for event in trace:
        if event.get("cat") == "Session" and event.get("name") == "model_run" and warm_end is None:
            warm_end = event["ts"] + event["dur"]
    for event in trace:
        if event.get("cat") != "Node" or not event["name"].endswith("_kernel_time"):
            continue
        if warm_end is not None and event["ts"] < warm_end:
            continue
        op = event.get("args", {}).get("op_name", "?")
        by_op[op] += event["dur"] / 1e6
        nodes[f"{event['name'][:-len('_kernel_time')]} ({op})"] += event["dur"] / 1e6
    trace_path.unlink(missing_ok=True)
    return seconds, dict(by_op), sorted(nodes.items(), key=lambda kv: -kv[1])[:10]


def profile_torch(model: str, seconds: float, threads: int, stages: list[str]) -> None:
    """``torch.profiler`` over the PyTorch pipeline's VAE decoder and vocoder at ``seconds``."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from litefocus_export.models import load_pipeline, pipeline_geometry

    torch.set_num_threads(threads)
    pipe = load_pipeline(model)
    geometry = pipeline_geometry(pipe)
    frames = geometry.latent_frames(seconds)
    latents = torch.randn(1, pipe.vae.config.latent_channels, frames, geometry.latent_freq_bins)
    mel = torch.randn(1, frames * geometry.vae_scale, geometry.mel_bins)
    calls = {"vae_decoder": (lambda x: pipe.vae.decode(x).sample, latents, latents[:, :, :8]),
             "vocoder": (pipe.vocoder, mel, mel[:, :32])}
    for name in stages:
        fn, x, warm = calls[name]
        with torch.inference_mode():
            fn(warm)
            start = time.perf_counter()
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                fn(x)
            wall = time.perf_counter() - start
        events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
        total = sum(e.self_cpu_time_total for e in events) / 1e6
        print(f"\n{name} (torch), {seconds:g} s, {threads} threads: {wall:.2f} s wall (profiled), "
              f"{total:.2f} s self CPU")
        for e in sorted(events, key=lambda e: -e.self_cpu_time_total)[:12]:
            value = e.self_cpu_time_total / 1e6
            print(f"  {e.key:40s} {value:8.2f} s  {100 * value / total:5.1f}%  ({e.count} calls)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("engines", nargs="?", help="engine folder (ONNX Runtime); not with --torch")
    parser.add_argument("--torch", metavar="MODEL", help="profile this model's PyTorch pipeline instead")
    parser.add_argument("--seconds", type=float, default=80.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--stages", default="vae_decoder,vocoder")
    parser.add_argument("--chunk-frames", type=int, default=0)
    args = parser.parse_args()
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    if (args.torch is None) == (args.engines is None):
        parser.error("give an engine folder or --torch MODEL")
    if args.torch:
        profile_torch(args.torch, args.seconds, args.threads, stages)
        return

    from litefocus_export.artifacts.manifest import read_manifest
    from litefocus_export.core.geometry import AudioGeometry
    from litefocus_export.core.vocoder_field import VocoderField
    from litefocus_export.runtime.decode import chunked_vocode

    folder = Path(args.engines)
    manifest = read_manifest(folder)
    geometry = AudioGeometry.from_manifest(manifest["geometry"])
    mel_frames = geometry.mel_frames(args.seconds)
    rng = np.random.default_rng(0)
    for name in stages:
        stage = manifest["stages"][name]
        if name == "vae_decoder":
            shape = (1, int(manifest["geometry"]["latent_channels"]), geometry.latent_frames(args.seconds),
                     geometry.latent_freq_bins)
            feeds, warm = {"latents": rng.standard_normal(shape, dtype=np.float32)}, {
                "latents": rng.standard_normal((*shape[:2], 8, shape[3]), dtype=np.float32)}
            run = None
        else:
            feeds = {"mel": rng.standard_normal((1, 1, mel_frames, geometry.mel_bins), dtype=np.float32)}
            warm = {"mel": feeds["mel"][:, :, :32]}
            field = VocoderField.from_stage(stage)

            def run(session, mel=feeds["mel"], field=field):  # noqa: ANN001
                return chunked_vocode(lambda part: session.run(None, {"mel": np.ascontiguousarray(part)})[0], mel,
                                      field, args.chunk_frames)
        seconds, by_op, slowest = profile_stage(folder / stage["engine"], feeds, warm, args.threads, run)
        total = sum(by_op.values())
        print(f"\n{name}, {args.seconds:g} s, {args.threads} threads: {seconds:.2f} s wall, {total:.2f} s in kernels")
        for op, value in sorted(by_op.items(), key=lambda kv: -kv[1]):
            print(f"  {op:28s} {value:8.2f} s  {100 * value / total:5.1f}%")
        print("  slowest nodes:")
        for node, value in slowest:
            print(f"    {value:8.2f} s  {node}")


if __name__ == "__main__":
    main()
