#!/usr/bin/env bash
# Device check on a CUDA machine, from a clean checkout:  bash scripts/device_check.sh [OUT_DIR]
#
#   1. the fused Triton kernel: python scripts/device_check_kernel.py (correctness, then speed);
#   2. end to end: python scripts/device_check_e2e.py (real-size random AudioLDM2: parity, one UNet
#      evaluation at 10/40/80 s and a whole 80 s generation, stock vs LiteFocus), writing e2e.json and
#      e2e.md into OUT_DIR (default $OUT, else device_check_out); it needs diffusers: where it is missing,
#      wheels carried in .whl/ are installed into a temp folder first;
#   3. where TensorRT is installed: build the tiny random AudioLDM2 at 10 s with the TensorRT backend
#      (LiteFocus as plugin, then as native function body) and compare each UNet engine, run through the
#      runtime's TrtStage, with ONNX Runtime on the exported unet.onnx (same feeds, profile's opt shape).
#
# Steps 1-2 stay under ~8 minutes on an H200 (step 2 gets what is left of 420 s as its --budget-s and skips
# the rest with a note). Without diffusers, step 2 prints a line and is skipped; without TensorRT, step 3.
# Exits 1 if a check fails.
set -uo pipefail
cd "$(dirname "$0")/.."
status=0
out="${1:-${OUT:-device_check_out}}"
mkdir -p "$out"

python scripts/device_check_kernel.py 2>&1 | tee "$out/kernel.log" || status=1

if ! python -c "import diffusers" 2>/dev/null && compgen -G ".whl/*.whl" >/dev/null; then
    site=$(mktemp -d)
    python -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" .whl/*.whl \
        && export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
if python -c "import diffusers" 2>/dev/null; then
    budget=$(( 420 - SECONDS > 60 ? 420 - SECONDS : 60 ))
    PYTHONUNBUFFERED=1 python scripts/device_check_e2e.py --out "$out" --budget-s "$budget" 2>&1 \
        | tee "$out/e2e.log" || status=1
else
    echo "diffusers not installed (carry its wheel in .whl/): skipped the end-to-end check"
fi

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

from litefocus_export.backends.tensorrt import TrtStage
from litefocus_export.core.contract import example_unet_feeds
from litefocus_export.artifacts.manifest import read_manifest

folder, impl = Path(sys.argv[1]), sys.argv[2]
manifest = read_manifest(folder)
unet = manifest["stages"]["unet"]
frames = manifest["latent_frames"]
# the engine profile's opt shape (batch 2, the build's opt length), samples drawn as the sampler draws them
feeds = example_unet_feeds(unet["inputs"], frames[1], seed=0, layers=unet.get("litefocus_layers") or [],
                           sparse_ratio=(manifest["litefocus"] or {}).get("sparse_ratio", 0.0))

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
