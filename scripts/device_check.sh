#!/usr/bin/env bash
# Device check on a CUDA machine, from a clean checkout:  bash scripts/device_check.sh
#
#   1. the fused Triton kernel: python scripts/device_check_kernel.py (correctness, then speed);
#   2. where TensorRT is installed: build the tiny random AudioLDM2 at 10 s with the TensorRT backend
#      (LiteFocus as plugin, then as native function body) and compare each UNet engine, run through the
#      runtime's TrtStage, with ONNX Runtime on the exported unet.onnx (same feeds, profile's opt shape).
#
# Without TensorRT, step 2 prints a line and is skipped. Exits 1 if a check fails.
set -uo pipefail
cd "$(dirname "$0")/.."
status=0

python scripts/device_check_kernel.py || status=1

if ! python -c "import tensorrt" 2>/dev/null; then
    echo "TensorRT not installed: skipped the engine build"
    exit "$status"
fi
if ! python -c "import litefocus_export.plugins.tensorrt" 2>/dev/null; then
    pip install -q -e . || pip install -q --no-build-isolation --no-deps -e . || echo "warning: pip install -e . failed"
fi
if ! python -c "import litefocus_export.plugins.tensorrt" 2>/dev/null; then
    echo "litefocus_export is not installed (pip install -e . failed): skipped the engine build"
    exit 1
fi
python -c "import tensorrt; print('TensorRT', tensorrt.__version__)"

lfe() { if command -v litefocus-export >/dev/null; then litefocus-export "$@"; else
    python -c "from litefocus_export.cli import main; main()" "$@"; fi; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

for impl in plugin native; do
    echo "== TensorRT engines, LiteFocus as $impl"
    if ! lfe build --model random:audioldm2-tiny --seconds 10 --backend tensorrt --attention-impl "$impl" \
            --out "$tmp/$impl"; then
        status=1
        continue
    fi
    python - "$(ls -d "$tmp/$impl"/*/ | head -n 1)" "$impl" <<'EOF' || status=1
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort

from litefocus_export.build.tensorrt import profile_shapes
from litefocus_export.geometry import downsampled_length
from litefocus_export.manifest import read_manifest
from litefocus_export.runtime.tensorrt_runner import TrtStage

folder, impl = Path(sys.argv[1]), sys.argv[2]
manifest = read_manifest(folder)
unet = manifest["stages"]["unet"]
frames = manifest["latent_frames"]
layers = unet.get("litefocus_layers") or []
shapes = profile_shapes("unet", unet["inputs"], frames, litefocus=manifest["litefocus"], layers=layers)
rng = np.random.default_rng(0)
feeds = {}
for name, (_, opt, _) in shapes.items():
    if name.startswith("litefocus_index_"):  # distinct token indices of each patched layer, as the sampler draws
        width = int(name.rsplit("_", 1)[1])
        level = next(layer["level"] for layer in layers if layer["width"] == width)
        tokens = downsampled_length(frames[1], level) * width
        feeds[name] = np.stack([rng.choice(tokens, opt[1], replace=False) for _ in range(opt[0])]).astype(np.int64)
    elif unet["inputs"][name]["dtype"] == "int64":
        feeds[name] = np.ones(opt, np.int64)
    elif name == "timestep":
        feeds[name] = np.full(opt, 500.0, np.float32)
    else:
        feeds[name] = rng.standard_normal(opt, dtype=np.float32)

with TrtStage(folder / unet["engine"]) as stage:
    got = stage(feeds)["noise_pred"]
onnx_file = Path(manifest["export"]["folder"]) / unet["file"]
ref = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"]).run(["noise_pred"], feeds)[0]
error = float(np.abs(got - ref).max() / max(float(np.abs(ref).max()), 1e-6))
verdict = "ok" if error < 1e-2 else "FAILED"
print(f"UNet engine ({impl}, {manifest['backend']['architecture']}) vs ONNX Runtime, latent frames {frames[1]}: "
      f"max |diff| / max |ref| = {error:.2e} {verdict}")
sys.exit(verdict != "ok")
EOF
done
exit "$status"
