"""TensorRT device check: the tiny random AudioLDM2 built at 10 s with the TensorRT backend, LiteFocus as the
plugin and as the native function body; each UNet engine, run through the runtime's ``TrtStage``, against ONNX
Runtime on the exported ``unet.onnx`` (same feeds, the profile's opt shape).

    litefocus-export device-check tensorrt [--model random:audioldm2-tiny] [--seconds 10]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

TOLERANCE = 1e-2  # max |diff| / max |ref|: TensorRT picks its own kernels (TF32 where allowed)


def compare_unet_engine(folder: Path, impl: str) -> bool:
    """The folder's UNet engine against ONNX Runtime on its export, one line printed; True when within tolerance."""
    import numpy as np

    from ..artifacts.manifest import read_manifest
    from ..backends.onnxruntime.runner import OrtStage
    from ..backends.tensorrt import TrtStage
    from ..core.contract import example_unet_feeds

    manifest = read_manifest(folder)
    unet = manifest["stages"]["unet"]
    frames = manifest["latent_frames"]
    # the engine profile's opt shape (batch 2, the build's opt length), samples drawn as the sampler draws them
    feeds = example_unet_feeds(unet["inputs"], frames[1], seed=0, layers=unet.get("litefocus_layers") or [],
                               sparse_ratio=(manifest["litefocus"] or {}).get("sparse_ratio", 0.0))
    with TrtStage(folder / unet["engine"]) as stage:
        got = stage(feeds)["noise_pred"]
    onnx_file = Path(manifest["export"]["folder"]) / unet["file"]
    with OrtStage(onnx_file) as reference:  # the runtime's CPU runner, as every other reference run
        ref = reference(feeds)["noise_pred"]
    error = float(np.abs(got - ref).max() / max(float(np.abs(ref).max()), 1e-6))
    verdict = "ok" if error < TOLERANCE else "FAILED"
    print(f"UNet engine ({impl}, {manifest['backend']['architecture']}) vs ONNX Runtime, latent frames {frames[1]}: "
          f"max |diff| / max |ref| = {error:.2e} {verdict}", flush=True)
    return verdict == "ok"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="litefocus-export device-check tensorrt",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="random:audioldm2-tiny")
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args(argv)
    from ..backends.build import BuildSettings, build_engines
    from ..core.durations import DurationProfile
    from ..core.errors import LiteFocusError

    try:
        import tensorrt
    except ImportError:
        print("TensorRT not installed: skipped the engine build", flush=True)
        return 0
    print(f"TensorRT {tensorrt.__version__}", flush=True)
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        for impl in ("plugin", "native"):
            print(f"== TensorRT engines, LiteFocus as {impl}", flush=True)
            try:
                settings = BuildSettings(model=args.model, profile=DurationProfile.for_seconds(args.seconds),
                                         backend="tensorrt", attention_impl=impl)
                folder = build_engines(settings, Path(tmp) / impl)
                ok &= compare_unet_engine(folder, impl)
            except LiteFocusError as error:
                print(f"error: {error}", file=sys.stderr, flush=True)
                ok = False
    return 0 if ok else 1
