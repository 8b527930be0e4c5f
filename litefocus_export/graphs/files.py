"""A rewritten ONNX model saved beside the engine it is built into (onnx only)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)
# weights of a rewritten model go to one side file; protobuf cannot serialise a model over 2 GB
WEIGHTS_INLINE_LIMIT = 1 << 30


def rewrite_to_file(onnx_path: Path, out_path: Path, rewrite: Callable[[Any], dict[str, int]],
                    runtime: str) -> dict[str, int]:
    """Apply ``rewrite`` (in place on the loaded model; returns how often each pass fired) to ``onnx_path``; when
    any fired, save the result as ``out_path`` (weights over ``WEIGHTS_INLINE_LIMIT`` in ``<out_path>.data``) and
    log one line naming ``runtime``. Returns the counts."""
    import onnx

    model = onnx.load(str(onnx_path))
    counts = rewrite(model)
    if any(counts.values()):
        fired = ", ".join(f"{name} x{count}" for name, count in counts.items() if count)
        log.info("%s rewritten for %s: %s", onnx_path.name, runtime, fired)
        side = out_path.with_name(out_path.name + ".data")
        side.unlink(missing_ok=True)  # onnx appends to an existing side file
        weights = sum(t.ByteSize() for t in model.graph.initializer)
        onnx.save(model, str(out_path), save_as_external_data=weights > WEIGHTS_INLINE_LIMIT,
                  all_tensors_to_one_file=True, location=side.name, size_threshold=1024)
    return counts
