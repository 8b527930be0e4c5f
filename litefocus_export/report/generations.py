"""Whole generations with a per-stage breakdown: text conditioning, UNet steps, VAE decode, vocoder.

PyTorch: ``pytorch.generate_torch`` with timers wrapped around ``unet.forward``, ``vae.decode`` and
``vocoder.forward`` (instance attributes, removed afterwards). Conditioning is everything before the first
UNet call; UNet steps run from the first UNet call to the VAE decode (scheduler steps included, as in the
runtime). Engines: ``runtime.Sampler`` over an ``EngineFolder`` that times each stage it runs; its own
``timings`` give conditioning, UNet steps and decode, split into VAE decode and vocoder by stage time.
"""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..core.lifecycle import Closing
from ..runtime import EngineFolder
from .machine import process_status_mb


def current_rss_mb() -> float | None:
    """Resident memory now (``VmRSS``), in MiB: what a long-running process holds between requests."""
    return process_status_mb("VmRSS")


class StagePeaks:
    """Peak resident memory per stage: Linux's peak (``VmHWM``) is reset (``clear_refs`` 5) when a stage starts
    and when it ends, and read at both points, so each stage's peak is the process's largest resident size
    while it ran (weights of every open stage included). What runs outside the timed stages (text encoders of
    the PyTorch pipeline, scheduler steps, post-processing) is folded into ``OUTSIDE``. ``overall_mb`` keeps
    the largest of all readings (what ``VmHWM`` would say without the resets). Without ``/proc`` nothing is
    recorded.
    """

    OUTSIDE = "conditioning"

    def __init__(self) -> None:
        self.peaks_mb: dict[str, float] = defaultdict(float)
        self.overall_mb = 0.0

    def _take(self, label: str) -> None:
        peak = process_status_mb("VmHWM")
        if peak is None:
            return
        self.overall_mb = max(self.overall_mb, peak)
        self.peaks_mb[label] = max(self.peaks_mb[label], peak)
        try:
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            pass

    def begin(self) -> None:
        """Start a generation: forget earlier stage peaks, start the outside span afresh."""
        self._take(self.OUTSIDE)
        self.peaks_mb.clear()

    def end(self) -> dict[str, float]:
        self._take(self.OUTSIDE)
        return dict(self.peaks_mb)

    @contextlib.contextmanager
    def stage(self, label: str) -> Iterator[None]:
        self._take(self.OUTSIDE)
        try:
            yield
        finally:
            self._take(label)


PEAKS = StagePeaks()  # the measuring process's: report.measure folds ``overall_mb`` into its peak RSS


class TimedEngineFolder(EngineFolder):
    """An engine folder that adds up the seconds spent in each stage it runs, and each stage's peak memory."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.stage_seconds: dict[str, float] = defaultdict(float)

    def run(self, name: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        start = time.perf_counter()
        try:
            with PEAKS.stage(ENGINE_STAGE_LABELS.get(name, "conditioning")):
                return super().run(name, feeds)
        finally:
            self.stage_seconds[name] += time.perf_counter() - start


# report stage (the ``<label>_peak_mb`` keys) of each engine stage; the text stages are "conditioning"
ENGINE_STAGE_LABELS = {"unet": "unet_steps", "vae_decoder": "vae_decode", "vocoder": "vocoder"}


@contextlib.contextmanager
def timed_calls(targets: dict[str, tuple[Any, str]]) -> Iterator[dict[str, list[tuple[float, float]]]]:
    """Record ``(start, end)`` of every call of ``obj.method`` for each ``label: (obj, method)``."""
    spans: dict[str, list[tuple[float, float]]] = {label: [] for label in targets}

    def wrap(label: str, method: Any) -> Any:
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                with PEAKS.stage(TORCH_STAGE_LABELS.get(label, label)):
                    return method(*args, **kwargs)
            finally:
                spans[label].append((start, time.perf_counter()))
        return timed

    saved = {label: vars(obj).get(name) for label, (obj, name) in targets.items()}
    for label, (obj, name) in targets.items():
        setattr(obj, name, wrap(label, getattr(obj, name)))
    try:
        yield spans
    finally:
        for label, (obj, name) in targets.items():
            if saved[label] is None:
                delattr(obj, name)  # our instance attribute shadowed the class method: drop it
            else:
                setattr(obj, name, saved[label])


TORCH_STAGE_LABELS = {"unet": "unet_steps", "vae": "vae_decode", "vocoder": "vocoder"}


def _request(job: dict[str, Any], steps: int) -> Any:
    from ..core.request import GenerationRequest

    return GenerationRequest(prompt=job["prompt"], seconds=job["seconds"], steps=steps, seed=job["seed"])


def cast_as_asked(model: Any, job: dict[str, Any]) -> Any:
    """``job["dtype"] == "bf16"``: the torch dtype a module or pipeline was cast to with ``.to(torch.bfloat16)``,
    what a user with a bf16 CPU would do (the report's ``torch-bf16``); None (left in fp32) otherwise."""
    if job.get("dtype", "fp32") != "bf16":
        return None
    import torch

    model.to(torch.bfloat16)
    return torch.bfloat16


class TorchGeneration(Closing):
    """Full pipeline generations with PyTorch, timed per stage."""

    def __init__(self, job: dict[str, Any]):
        from ..attention import LiteFocusConfig
        from ..models import load_pipeline

        self.job = job
        self.pipe = load_pipeline(job["model"])
        cast_as_asked(self.pipe, job)
        self.pipe.set_progress_bar_config(disable=True)
        self.config = LiteFocusConfig(sparse_ratio=job["sparse_ratio"], levels=tuple(job["levels"]), seed=job["seed"])

    def __call__(self, steps: int) -> tuple[np.ndarray, dict[str, float]]:
        from ..pytorch import generate_torch

        pipe = self.pipe
        targets = {"unet": (pipe.unet, "forward"), "vae": (pipe.vae, "decode"), "vocoder": (pipe.vocoder, "forward")}
        with timed_calls(targets) as spans:
            start = time.perf_counter()
            # full attention is the stock pipeline: its vocoder in one shot; the LiteFocus path chunks it
            waveform = generate_torch(pipe, _request(self.job, steps), attention=self.job["attention"],
                                      config=self.config,
                                      vocoder_chunk_frames=0 if self.job["attention"] == "full" else None)
            total = time.perf_counter() - start
        first_unet, decode_start = spans["unet"][0][0], spans["vae"][0][0]
        stages = {"conditioning_s": first_unet - start, "unet_steps_s": decode_start - first_unet,
                  "vae_decode_s": sum(b - a for a, b in spans["vae"]),
                  "vocoder_s": sum(b - a for a, b in spans["vocoder"]), "end_to_end_s": total}
        return waveform, stages

    def close(self) -> None:
        self.pipe = None


class EngineGeneration(Closing):
    """Full generations with the torch-free runtime sampler, timed per stage."""

    def __init__(self, job: dict[str, Any]):
        from ..runtime import Sampler

        self.job = job
        self.engines = TimedEngineFolder(job["engines"], threads=job["threads"])
        self.sampler = Sampler(self.engines, progress=False)

    def __call__(self, steps: int) -> tuple[np.ndarray, dict[str, float]]:
        self.engines.stage_seconds.clear()
        waveform = self.sampler(_request(self.job, steps))
        t = self.sampler.timings
        vae = self.engines.stage_seconds.get("vae_decoder", 0.0)
        stages = {"conditioning_s": t.conditioning, "unet_steps_s": sum(t.unet_steps), "vae_decode_s": vae,
                  "vocoder_s": t.decode - vae, "end_to_end_s": t.total}
        return waveform, stages

    def close(self) -> None:
        self.engines.close()


def time_generations(job: dict[str, Any]) -> tuple[dict[str, Any], np.ndarray]:
    """Warm-up (1-step generations of the same length), then ``repeats`` timed generations.

    Returns ``(times, waveform of the first timed run)``; times hold one list per stage plus
    ``unet_step_s`` (UNet steps over the number of steps).
    """
    times: dict[str, list[float]] = defaultdict(list)
    first = None
    with TorchGeneration(job) if job["backend"] == "torch" else EngineGeneration(job) as generate:
        for _ in range(job["warmup"]):
            generate(1)
        for _ in range(job["repeats"]):
            PEAKS.begin()
            waveform, stages = generate(job["steps"])
            peaks = PEAKS.end()
            for label in ("conditioning", "unet_steps", "vae_decode", "vocoder"):
                if label in peaks:
                    times[f"{label}_peak_mb"].append(peaks[label])
            times["between_requests_rss_mb"].append(current_rss_mb())
            first = waveform if first is None else first
            for key, value in stages.items():
                times[key].append(value)
            times["unet_step_s"].append(stages["unet_steps_s"] / job["steps"])
    return dict(times), first
