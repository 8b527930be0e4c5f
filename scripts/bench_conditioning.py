"""Text conditioning of N requests: one at a time vs one batch (``TextConditioner.encode_batch``).

Exports the text stages of a model into a temporary folder (ONNX Runtime, CPU), then encodes N prompts of
different lengths with classifier-free guidance, alone and as one batch, best of ``--repeats`` runs each, and
prints both times, their ratio (measured in this one run) and the largest difference between the results.

    python scripts/bench_conditioning.py --model random:audioldm2 --requests 8 --threads 2
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

PROMPTS = ["rain", "a dog barking in the distance", "techno beat with a deep bass line and bright hi-hats",
           "wind", "waves breaking on a pebble beach at dawn", "piano", "birds singing in a forest after rain",
           "a crowd cheering in a stadium"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="random:audioldm2")
    parser.add_argument("--requests", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    from litefocus_export.backends.onnxruntime import OrtStage
    from litefocus_export.core.contract import MAX_NEW_TOKENS_KEY, TEXT_STAGES
    from litefocus_export.export.stages import export_stages
    from litefocus_export.models import load_pipeline, pipeline_kind
    from litefocus_export.runtime.conditioning import TextConditioner

    pipe = load_pipeline(args.model)
    kind = pipeline_kind(pipe)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        stages = export_stages(pipe, folder, stages=list(TEXT_STAGES[kind]))
        del pipe
        sessions = {name: OrtStage(folder / desc["file"], threads=args.threads) for name, desc in stages.items()}
        max_new = stages.get("language_model", {}).get("metadata", {}).get(MAX_NEW_TOKENS_KEY)
        conditioner = TextConditioner(folder, kind, lambda name, feeds: sessions[name](feeds),
                                      max_new_tokens=None if max_new is None else int(max_new))
        requests = [(PROMPTS[i % len(PROMPTS)], None, 3.5) for i in range(args.requests)]
        conditioner.encode_batch(requests)  # warm-up: every session's first run

        def best(fn):  # noqa: ANN001, ANN202
            times, result = [], None
            for _ in range(args.repeats):
                start = time.perf_counter()
                result = fn()
                times.append(time.perf_counter() - start)
            return min(times), result

        alone_s, alone = best(lambda: [conditioner.encode(*r) for r in requests])
        batch_s, batched = best(lambda: conditioner.encode_batch(requests))
    diff = max(float(np.abs(a[k] - b[k]).max() / max(np.abs(a[k]).max(), 1e-12))
               for a, b in zip(alone, batched) for k in a)
    print(f"{args.model}, {args.requests} guided requests, {args.threads} threads: one at a time {alone_s:.2f} s, "
          f"one batch {batch_s:.2f} s: {alone_s / batch_s:.2f}x; largest relative difference {diff:.1e}")


if __name__ == "__main__":
    main()
