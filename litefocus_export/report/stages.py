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
from typing import Any

import numpy as np

from ..runtime import EngineFolder


class TimedEngineFolder(EngineFolder):
    """An engine folder that adds up the seconds spent in each stage it runs."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.stage_seconds: dict[str, float] = defaultdict(float)

    def run(self, name: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        start = time.perf_counter()
        try:
            return super().run(name, feeds)
        finally:
            self.stage_seconds[name] += time.perf_counter() - start


@contextlib.contextmanager
def timed_calls(targets: dict[str, tuple[Any, str]]) -> Iterator[dict[str, list[tuple[float, float]]]]:
    """Record ``(start, end)`` of every call of ``obj.method`` for each ``label: (obj, method)``."""
    spans: dict[str, list[tuple[float, float]]] = {label: [] for label in targets}

    def wrap(label: str, method: Any) -> Any:
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
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


def _request(job: dict[str, Any], steps: int) -> Any:
    from ..request import GenerationRequest

    return GenerationRequest(prompt=job["prompt"], seconds=job["seconds"], steps=steps, seed=job["seed"])


class TorchGeneration:
    """Full pipeline generations with PyTorch, timed per stage."""

    def __init__(self, job: dict[str, Any]):
        from ..attention import LiteFocusConfig
        from ..models import load_pipeline

        self.job = job
        self.pipe = load_pipeline(job["model"])
        self.pipe.set_progress_bar_config(disable=True)
        self.config = LiteFocusConfig(sparse_ratio=job["sparse_ratio"], levels=tuple(job["levels"]), seed=job["seed"])

    def __call__(self, steps: int) -> tuple[np.ndarray, dict[str, float]]:
        from ..pytorch import generate_torch

        pipe = self.pipe
        targets = {"unet": (pipe.unet, "forward"), "vae": (pipe.vae, "decode"), "vocoder": (pipe.vocoder, "forward")}
        with timed_calls(targets) as spans:
            start = time.perf_counter()
            waveform = generate_torch(pipe, _request(self.job, steps), attention=self.job["attention"],
                                      config=self.config)
            total = time.perf_counter() - start
        first_unet, decode_start = spans["unet"][0][0], spans["vae"][0][0]
        stages = {"conditioning_s": first_unet - start, "unet_steps_s": decode_start - first_unet,
                  "vae_decode_s": sum(b - a for a, b in spans["vae"]),
                  "vocoder_s": sum(b - a for a, b in spans["vocoder"]), "end_to_end_s": total}
        return waveform, stages


class EngineGeneration:
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


def time_generations(job: dict[str, Any]) -> tuple[dict[str, Any], np.ndarray]:
    """Warm-up (1-step generations of the same length), then ``repeats`` timed generations.

    Returns ``(times, waveform of the first timed run)``; times hold one list per stage plus
    ``unet_step_s`` (UNet steps over the number of steps).
    """
    generate = TorchGeneration(job) if job["backend"] == "torch" else EngineGeneration(job)
    for _ in range(job["warmup"]):
        generate(1)
    times: dict[str, list[float]] = defaultdict(list)
    first = None
    for _ in range(job["repeats"]):
        waveform, stages = generate(job["steps"])
        first = waveform if first is None else first
        for key, value in stages.items():
            times[key].append(value)
        times["unet_step_s"].append(stages["unet_steps_s"] / job["steps"])
    return dict(times), first
