#!/usr/bin/env bash
# Device check on a CUDA machine, from a checkout:  bash scripts/device_check.sh [OUT_DIR]
#
# Runs the package's three checks (litefocus-export device-check CHECK; see litefocus_export/devicecheck/):
#   1. kernel: the fused Triton kernel (correctness, then speed);
#   2. e2e: real-size random AudioLDM2: parity, one UNet evaluation at 10/40/80 s and a whole 80 s generation,
#      stock vs LiteFocus, writing e2e.json and e2e.md into OUT_DIR (default $OUT, else device_check_out); it
#      needs diffusers: where it is missing, wheels carried in .whl/ are installed into a temp folder first;
#   3. tensorrt: where TensorRT is installed, the tiny model's TensorRT UNet engines (plugin, native) against
#      ONNX Runtime.
#
# Steps 1-2 stay under ~8 minutes on an H200 (step 2 gets what is left of 420 s as its --budget-s and skips
# the rest with a note). Without diffusers, step 2 prints a line and is skipped; without TensorRT, step 3.
# Exits 1 if a check fails.
set -uo pipefail
cd "$(dirname "$0")/.."
status=0
out="${1:-${OUT:-device_check_out}}"
mkdir -p "$out"
# the installed command, else this checkout's package (the device machine gets a copy, not an install)
lfe() { if command -v litefocus-export >/dev/null; then litefocus-export "$@"; else
    python -m litefocus_export.cli "$@"; fi; }

lfe device-check kernel 2>&1 | tee "$out/kernel.log" || status=1

if ! python -c "import diffusers" 2>/dev/null && compgen -G ".whl/*.whl" >/dev/null; then
    site=$(mktemp -d)
    python -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" .whl/*.whl \
        && export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
if python -c "import diffusers" 2>/dev/null; then
    budget=$(( 420 - SECONDS > 60 ? 420 - SECONDS : 60 ))
    PYTHONUNBUFFERED=1 lfe device-check e2e --out "$out" --budget-s "$budget" 2>&1 | tee "$out/e2e.log" || status=1
else
    echo "diffusers not installed (carry its wheel in .whl/): skipped the end-to-end check"
fi

if python -c "import tensorrt" 2>/dev/null && ! python -c "import litefocus_export.plugins.tensorrt" 2>/dev/null; then
    # the TensorRT plugin is built and loaded from the installed package
    pip install -q -e . || pip install -q --no-build-isolation --no-deps -e . || echo "warning: pip install -e . failed"
fi
lfe device-check tensorrt 2>&1 | tee "$out/tensorrt.log" || status=1
exit "$status"
