"""The full text-to-audio sampler on engines: numpy + the engine backend, no torch (DESIGN.md §5).

Steps, as in the diffusers pipelines: 1. text conditioning, 2. initial noise, 3. denoising loop with
classifier-free guidance (one batched UNet call per step, [uncond, cond]) and fresh LiteFocus samples
for every patched layer at every UNet evaluation, 4. VAE decode and vocoder, 5. trim.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..sampling import initial_noise, seeded_streams
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
        self.decoder = AudioDecoder(self.engines.run)
        self.progress = progress
        self.timings = Timings()

    def scheduler(self, name: str) -> Any:
        """The numpy scheduler ``name`` (``"ddim"``/``"dpm"``) set up as the PyTorch path sets it up: diffusers'
        ``from_config`` of the pipeline's scheduler config (target defaults for ``_use_default_values``).

        Raises:
            EngineError: the folder's scheduler config predates ``_use_default_values`` and ``name`` converts
                it to another scheduler class, so the settings diffusers would use are unknown.
        """
        import json

        from ..errors import EngineError
        from .schedulers import USE_DEFAULT_VALUES, converts_config, scheduler_from_config

        folder = self.engines.folder
        config = json.loads((folder / "scheduler_config.json").read_text())
        if USE_DEFAULT_VALUES not in config and converts_config(config, name):
            # without the list, an explicit setting and a defaulted one look alike (timestep_spacing "leading"
            # of DDIM's defaults becomes DPM's "linspace" in diffusers); the same class needs no conversion.
            # A rebuild re-exports: the export cache key has the export format (EXPORT_FORMAT 2)
            raise EngineError(f"{folder} was built before scheduler_config.json kept diffusers' {USE_DEFAULT_VALUES}, "
                              f"so --scheduler {name} would not match PyTorch; rebuild it")
        return scheduler_from_config(config, kind=name)

    def __call__(self, request: Any, latents: np.ndarray | None = None) -> np.ndarray:
        """Generate ``request`` (a ``GenerationRequest``); returns the trimmed float32 waveform."""
        engines = self.engines
        engines.check_covers(request.seconds)
        # the scheduler's own step limit is checked before any stage runs
        scheduler = self.scheduler(request.scheduler)
        scheduler.set_timesteps(request.steps)
        geometry = engines.geometry
        frames = geometry.latent_frames(request.seconds)
        noise_rng, samples_rng = seeded_streams(request.seed)
        guidance = DEFAULT_GUIDANCE[engines.kind] if request.guidance is None else request.guidance
        timings = self.timings = Timings()
        start = time.perf_counter()

        cond = self.conditioner.encode(request.prompt, request.negative_prompt, guidance)
        timings.conditioning = time.perf_counter() - start
        shape = (1, engines.latent_channels, frames, geometry.latent_freq_bins)
        latents = initial_noise(noise_rng, shape) if latents is None else latents.astype(np.float32)
        latents = self.denoise(latents, cond, guidance, scheduler, samples_rng)

        t0 = time.perf_counter()
        waveform = self.decoder.decode(latents)[0]
        timings.decode = time.perf_counter() - t0
        timings.total = time.perf_counter() - start
        return trim_waveform(waveform, geometry.num_samples(request.seconds)).astype(np.float32)

    def denoise(self, latents: np.ndarray, cond: dict[str, np.ndarray], guidance: float, scheduler: Any,
                samples_rng: np.random.Generator) -> np.ndarray:
        """The denoising loop from ``latents`` with a scheduler whose timesteps are set."""
        latents = latents * np.float32(scheduler.init_noise_sigma)
        guided = guidance > 1.0
        for t in _progress(scheduler.timesteps, self.progress, "denoising"):
            t0 = time.perf_counter()
            model_input = np.concatenate([latents, latents]) if guided else latents
            model_input = scheduler.scale_model_input(model_input, t)
            feeds = {"sample": model_input, "timestep": np.full(len(model_input), t, dtype=np.float32), **cond}
            noise_pred = self.engines.unet_step(feeds, samples_rng)
            if guided:
                uncond, text = np.split(noise_pred, 2)
                noise_pred = uncond + np.float32(guidance) * (text - uncond)
            latents = scheduler.step(noise_pred, t, latents).prev_sample
            self.timings.unet_steps.append(time.perf_counter() - t0)
        return latents


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
