"""One report configuration, measured in its own process so its peak RSS is its own.

``python -m litefocus_export.report.measure JOB.json RESULT.json``: the job names the model, backend
(``torch``, or an engine folder for ``onnxruntime`` / ``tensorrt``), attention, duration and mode
(``unet``: one UNet evaluation at batch 2; ``all``: whole generations). It runs the warm-up, then the
timed repeats, and writes the raw times, peak RSS and (optionally) the first output to ``.npy`` for the
accuracy columns. Engine jobs import no torch.
"""

from __future__ import annotations

import json
import logging
import resource
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..core.contract import UNET, UNET_OUTPUT, example_unet_feeds, unet_inputs
from ..core.errors import LiteFocusError
from ..core.lifecycle import Closing
from ..core.seeds import seeded_streams
from ..models.facts import ModelFacts, model_facts
from .machine import failure_reason, process_status_mb

log = logging.getLogger(__name__)


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB.

    Linux: ``VmHWM`` of /proc/self/status, which starts afresh at exec; ``ru_maxrss`` would still hold the
    peak of the forked parent image. Elsewhere ``ru_maxrss`` (bytes on macOS, KiB otherwise).
    """
    peak = process_status_mb("VmHWM")
    if peak is not None:
        return peak
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def unet_feeds(facts: ModelFacts, frames: int, seed: int) -> dict[str, np.ndarray]:
    """Seeded UNet inputs at batch 2 without samples (``contract.example_unet_feeds``): the same for every backend."""
    return example_unet_feeds(unet_inputs(facts.kind, facts.unet_config, facts.geometry.latent_freq_bins), frames, seed)


class TorchUNet(Closing):
    """The diffusers UNet alone (no text encoders built), stock or patched with LiteFocus, run through
    ``pytorch.TorchUNetStage``; ``job["dtype"]`` ``"bf16"`` casts it with ``.to(torch.bfloat16)`` (what a user
    with a bf16 CPU would do)."""

    def __init__(self, job: dict[str, Any], facts: ModelFacts):
        from ..attention import LiteFocusConfig, RandomSamples, patch_unet
        from ..models import load_unet
        from ..pytorch import TorchUNetStage
        from .generations import cast_as_asked

        unet = load_unet(job["model"])
        if job["attention"] == "litefocus":
            config = LiteFocusConfig(sparse_ratio=job["sparse_ratio"], levels=tuple(job["levels"]))
            patch_unet(unet, config, RandomSamples(config.sparse_ratio, generator=seeded_streams(job["seed"])[1]),
                       freq_bins=facts.geometry.latent_freq_bins, context_free=facts.context_free)
        cast_as_asked(unet, job)
        self.stage = TorchUNetStage(unet)
        self.feeds = unet_feeds(facts, facts.geometry.latent_frames(job["seconds"]), job["seed"])

    def __call__(self) -> np.ndarray:
        return self.stage(self.feeds)[UNET_OUTPUT]

    def close(self) -> None:
        self.stage.close()


class EngineUNet(Closing):
    """The engine folder's unet stage, fed like the sampler feeds it (fresh LiteFocus samples per call)."""

    def __init__(self, job: dict[str, Any], facts: ModelFacts):
        from ..runtime import EngineFolder

        self.engines = EngineFolder(job["engines"], threads=job["threads"], stages=(UNET,))
        self.feeds = unet_feeds(facts, facts.geometry.latent_frames(job["seconds"]), job["seed"])
        self.samples_rng = seeded_streams(job["seed"])[1]

    def __call__(self) -> np.ndarray:
        return self.engines.unet_step(self.feeds, self.samples_rng)

    def close(self) -> None:
        self.engines.close()


def time_unet(step: Any, repeats: int, warmup: int) -> tuple[dict[str, Any], np.ndarray]:
    """Warm-up calls, then ``repeats`` timed calls; the output of the first call is returned for accuracy."""
    first = None
    for _ in range(warmup):
        out = step()
        first = out if first is None else first
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = step()
        times.append(time.perf_counter() - start)
        first = out if first is None else first
    return {"unet_step_s": times}, first


def run_job(job: dict[str, Any]) -> tuple[dict[str, Any], np.ndarray]:
    """Measure one configuration: ``({times..., rss}, first output)``."""
    from .generations import time_generations

    facts = model_facts(job["model"])
    if job["backend"] == "torch" and job["threads"]:
        import torch

        torch.set_num_threads(job["threads"])
    if job["stages"] == "unet":
        with TorchUNet(job, facts) if job["backend"] == "torch" else EngineUNet(job, facts) as step:
            times, output = time_unet(step, job["repeats"], job["warmup"])
    else:
        times, output = time_generations(job)
    from .generations import PEAKS

    # per-stage peaks reset VmHWM (report.generations.StagePeaks); its overall reading keeps the run's peak
    return {**times, "peak_rss_mb": max(peak_rss_mb(), PEAKS.overall_mb)}, output


class MeasureFailed(LiteFocusError):
    """A measuring process failed; ``reason`` is one line (its last stderr line, or the signal that killed it)."""

    def __init__(self, stem: str, reason: str):
        super().__init__(f"{stem} failed: {reason}")
        self.reason = reason


def measure_in_process(job: dict[str, Any], work: Path, stem: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run ``job`` in its own process (this module as a script) with its files in ``work``; returns its result.

    Raises:
        MeasureFailed: the process failed or wrote no result (``report.machine.failure_reason``).
    """
    import subprocess

    job_file, result_file = work / f"{stem}.job.json", work / f"{stem}.result.json"
    job_file.write_text(json.dumps(job))
    proc = subprocess.run([sys.executable, "-m", "litefocus_export.report.measure", str(job_file), str(result_file)],
                          capture_output=True, text=True, env=env)
    if proc.returncode != 0 or not result_file.is_file():
        raise MeasureFailed(stem, failure_reason(proc))
    return json.loads(result_file.read_text())


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stderr)
    job = json.loads(Path(argv[0]).read_text())
    result, output = run_job(job)
    if job.get("output"):
        np.save(job["output"], np.asarray(output, dtype=np.float32))
    Path(argv[1]).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
