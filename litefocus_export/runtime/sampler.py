"""The full text-to-audio sampler on engines: numpy + the engine backend, no torch (docs/design.md §5).

Steps, as in the diffusers pipelines: 1. text conditioning, 2. initial noise, 3. denoising loop with
classifier-free guidance (one batched UNet call per step, [uncond, cond]) and fresh LiteFocus samples
for every patched layer at every UNet evaluation, 4. VAE decode and vocoder, 5. trim. Several requests
that share latent length, steps, scheduler and guidance mode run as one batch (``generate_batch``).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import UsageError
from ..core.request import GenerationRequest
from ..core.seeds import initial_noise, seeded_streams
from .conditioning import DEFAULT_GUIDANCE, TextConditioner
from .decode import AudioDecoder, trim_waveform
from .engine import EngineFolder

log = logging.getLogger(__name__)


@dataclass
class Timings:
    """Seconds spent per stage of one generation."""

    conditioning: float = 0.0
    unet_steps: list[float] = field(default_factory=list)
    decode: float = 0.0
    total: float = 0.0


class Sampler:
    """Runs requests on one engine folder; stages open once and are reused across requests."""

    def __init__(self, engines: EngineFolder | str | Path, progress: bool = True):
        self.engines = engines if isinstance(engines, EngineFolder) else EngineFolder(engines)
        self.conditioner = TextConditioner.from_engines(self.engines)
        self.decoder = AudioDecoder.for_engines(self.engines)
        # read once, right after the folder's hashes were checked: never again from a folder that may change
        self.scheduler_config = json.loads((self.engines.folder / "scheduler_config.json").read_text())
        self.progress = progress
        self.timings = Timings()

    def scheduler(self, name: str) -> Any:
        """The numpy scheduler ``name`` (``"ddim"``/``"dpm"``) set up as the PyTorch path sets it up: diffusers'
        ``from_config`` of the pipeline's scheduler config (target defaults for ``_use_default_values``).

        Raises:
            EngineError: the folder's scheduler config predates ``_use_default_values`` and ``name`` converts
                it to another scheduler class, so the settings diffusers would use are unknown.
        """
        from ..core.errors import EngineError
        from .schedulers import USE_DEFAULT_VALUES, converts_config, scheduler_from_config

        folder, config = self.engines.folder, self.scheduler_config
        if USE_DEFAULT_VALUES not in config and converts_config(config, name):
            # without the list, an explicit setting and a defaulted one look alike (timestep_spacing "leading"
            # of DDIM's defaults becomes DPM's "linspace" in diffusers); the same class needs no conversion.
            # A rebuild re-exports: the export cache key has the export format (EXPORT_FORMAT 2)
            raise EngineError(f"{folder} was built before scheduler_config.json kept diffusers' {USE_DEFAULT_VALUES}, "
                              f"so --scheduler {name} would not match PyTorch; rebuild it")
        return scheduler_from_config(config, kind=name)

    def __call__(self, request: GenerationRequest, latents: np.ndarray | None = None) -> np.ndarray:
        """Generate ``request``; returns the trimmed float32 waveform (``latents``: start from these, not noise)."""
        return self.generate_batch([request], latents)[0]

    def batch_key(self, request: GenerationRequest) -> tuple[Any, ...]:
        """Requests with equal keys run as one batch: latent length, steps, scheduler, guidance on or off."""
        frames = self.engines.geometry.latent_frames(request.seconds)
        return frames, request.steps, request.scheduler, self.guidance(request) > 1.0

    def max_requests(self, guided: bool) -> int | None:
        """How many requests one batch may hold: every stage's batch limit (``EngineFolder.max_batch``) over the
        rows a request takes (two with guidance: text stages and UNet); None: no limit."""
        rows = self.engines.max_batch
        return None if rows is None else max(rows // (2 if guided else 1), 1)

    def guidance(self, request: GenerationRequest) -> float:
        """The request's guidance scale, or the pipeline's default."""
        return DEFAULT_GUIDANCE[self.engines.kind] if request.guidance is None else request.guidance

    def generate_batch(self, requests: Sequence[GenerationRequest],
                       latents: np.ndarray | None = None) -> list[np.ndarray]:
        """Generate several requests with one UNet call per step; returns their trimmed waveforms, in order.

        Each request keeps its own prompt, negative prompt, guidance scale and seed (its own noise and its own
        LiteFocus samples, docs/design.md §1), so its waveform is the same alone or batched with any others. The
        requests must share ``batch_key`` (latent length, steps, scheduler, guidance mode); more requests than
        the engines' batch limit (``max_requests``: TensorRT profiles) run as consecutive sub-batches. The text
        stages (``TextConditioner.encode_batch``: each row as it is alone, the language model with each row's own
        positions) and the UNet run batched; the VAE decoder and the vocoder as ``AudioDecoder.rows_per_run``
        says (one row per run on ONNX Runtime's CPU provider, where that is faster).

        Raises:
            UsageError: requests that cannot share a batch, or more steps than the scheduler supports.
            EngineError: a duration outside the folder's profiles (all checked before any stage runs).
        """
        engines, geometry = self.engines, self.engines.geometry
        if not requests:
            return []
        if len({self.batch_key(r) for r in requests}) != 1:
            raise UsageError("requests of one batch need the same latent length, steps, scheduler and guidance mode")
        for request in requests:
            engines.check_covers(request.seconds)
        scheduler = self.scheduler(requests[0].scheduler)
        scheduler.set_timesteps(requests[0].steps)  # the scheduler's own step limit, before any stage runs
        guidance = [self.guidance(r) for r in requests]
        limit = self.max_requests(guidance[0] > 1.0)
        if limit is not None and len(requests) > limit:  # engines built for fewer rows: consecutive sub-batches
            return [waveform for i in range(0, len(requests), limit) for waveform in self.generate_batch(
                requests[i:i + limit], None if latents is None else latents[i:i + limit])]
        frames = geometry.latent_frames(requests[0].seconds)
        streams = [seeded_streams(r.seed) for r in requests]
        timings = self.timings = Timings()
        start = time.perf_counter()

        cond = batch_conditioning(self.conditioner.encode_batch([(r.prompt, r.negative_prompt, g)
                                                                 for r, g in zip(requests, guidance)]),
                                  guided=guidance[0] > 1.0)
        timings.conditioning = time.perf_counter() - start
        shape = (1, engines.latent_channels, frames, geometry.latent_freq_bins)
        if latents is None:
            latents = np.concatenate([initial_noise(noise_rng, shape) for noise_rng, _ in streams])
        latents = self.denoise(latents.astype(np.float32), cond, guidance, scheduler, [s for _, s in streams])

        t0 = time.perf_counter()
        waveforms = self.decoder.decode(latents)
        timings.decode = time.perf_counter() - t0
        timings.total = time.perf_counter() - start
        return [trim_waveform(w, geometry.num_samples(r.seconds)).astype(np.float32)
                for w, r in zip(waveforms, requests)]

    def denoise(self, latents: np.ndarray, cond: dict[str, np.ndarray], guidance: Sequence[float], scheduler: Any,
                samples_rngs: Sequence[np.random.Generator]) -> np.ndarray:
        """The denoising loop from ``latents`` (one row per request) with a scheduler whose timesteps are set.

        With guidance the UNet batch is ``[uncond rows..., cond rows...]``; both rows of a request get its one
        draw of LiteFocus samples (diffusers semantics), every request its own.
        """
        latents = latents * np.float32(scheduler.init_noise_sigma)
        guided = guidance[0] > 1.0
        rows = list(range(len(latents))) * (2 if guided else 1)
        scale = np.asarray(guidance, dtype=np.float32).reshape(-1, *([1] * (latents.ndim - 1)))
        for t in _progress(scheduler.timesteps, self.progress, "denoising"):
            t0 = time.perf_counter()
            model_input = np.concatenate([latents, latents]) if guided else latents
            model_input = scheduler.scale_model_input(model_input, t)
            feeds = {"sample": model_input, "timestep": np.full(len(model_input), t, dtype=np.float32), **cond}
            noise_pred = self.engines.unet_step(feeds, samples_rngs, rows)
            if guided:
                uncond, text = np.split(noise_pred, 2)
                noise_pred = uncond + scale * (text - uncond)
            latents = scheduler.step(noise_pred, t, latents).prev_sample
            self.timings.unet_steps.append(time.perf_counter() - t0)
        return latents


def batch_conditioning(conds: Sequence[dict[str, np.ndarray]], *, guided: bool) -> dict[str, np.ndarray]:
    """One UNet batch ``[uncond rows..., cond rows...]`` from each request's conditioning (``[neg, prompt]`` rows
    when guided, else ``[prompt]``). Token axes of different lengths (AudioLDM2's T5 states and mask) are padded
    with zeros: masked out, so a request's UNet output does not depend on the others'."""
    merged = {}
    for name in conds[0]:
        arrays = [c[name] for c in conds]
        if arrays[0].ndim >= 2:
            length = max(a.shape[1] for a in arrays)
            arrays = [np.pad(a, [(0, 0), (0, length - a.shape[1])] + [(0, 0)] * (a.ndim - 2)) for a in arrays]
        parts = [a[:1] for a in arrays] + [a[1:] for a in arrays] if guided else arrays
        merged[name] = np.concatenate(parts)
    return merged


def _progress(items: Any, enabled: bool, label: str) -> Any:
    if not enabled:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc=label, unit="step", leave=False)


def generate_from_engines(folder: str | Path, request: Any) -> tuple[np.ndarray, int]:
    """One request on one engine folder: (waveform, sample rate)."""
    sampler = Sampler(folder)
    waveform = sampler(request)
    t = sampler.timings
    log.info("generated %.2f s of audio in %.2f s (conditioning %.2f s, %d UNet steps %.2f s, decode %.2f s)",
             request.seconds, t.total, t.conditioning, len(t.unet_steps), sum(t.unet_steps), t.decode)
    return waveform, sampler.engines.geometry.sample_rate
