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

from ..geometry import downsampled_length
from ..sampling import draw_sample_index, initial_noise, seeded_streams
from .conditioning import DEFAULT_GUIDANCE, MAX_NEW_TOKENS_KEY
from .decode import trim_waveform
from .engine import EngineFolder

log = logging.getLogger(__name__)


@dataclass
class Timings:
    """Seconds spent per stage of one generation."""

    conditioning: float = 0.0
    unet_steps: list[float] = field(default_factory=list)
    decode: float = 0.0
    total: float = 0.0


def draw_unet_samples(rng: np.random.Generator, layers: list[dict[str, Any]], frames: int,
                      sparse_ratio: float) -> dict[str, np.ndarray]:
    """One UNet evaluation's samples: ``litefocus_index_<width>`` -> int64 ``(L, M)``.

    Drawn layer by layer in execution order, exactly as the PyTorch path draws them at call time.
    """
    rows: dict[int, list[np.ndarray]] = {}
    for layer in layers:
        tokens = downsampled_length(frames, layer["level"]) * layer["width"]
        rows.setdefault(layer["width"], []).append(draw_sample_index(rng, tokens, sparse_ratio))
    return {f"litefocus_index_{width}": np.stack(r) for width, r in rows.items()}


def example_unet_feeds(stage: dict[str, Any], frames: int, seed: int, *, sparse_ratio: float = 0.1, batch: int = 2,
                       timestep: float = 500.0, token_counts: dict[str, int] | None = None) -> dict[str, np.ndarray]:
    """Seeded random inputs for a UNet stage, shaped from its manifest entry, with LiteFocus samples:
    for benchmarks and checks, the same arrays for every backend. Masks are all ones."""
    rng = np.random.default_rng(seed)
    sizes = {"batch": batch, "latent_frames": frames, "lm_tokens": 8, "text_tokens": 64, **(token_counts or {})}
    feeds = {}
    for name, desc in stage["inputs"].items():
        if name.startswith("litefocus_index"):
            continue
        shape = [sizes[d] if isinstance(d, str) else d for d in desc["shape"]]
        feeds[name] = (rng.standard_normal(shape, dtype=np.float32) if desc["dtype"] == "float32"
                       else np.ones(shape, desc["dtype"]))
    feeds["timestep"] = np.full(batch, timestep, stage["inputs"]["timestep"]["dtype"])
    return {**feeds, **draw_unet_samples(rng, stage.get("litefocus_layers", []), frames, sparse_ratio)}


class Sampler:
    """Runs requests on one engine folder; stages open once and are reused across requests."""

    def __init__(self, engines: EngineFolder | str | Path, progress: bool = True):
        from .conditioning import TextConditioner
        from .decode import AudioDecoder

        self.engines = engines if isinstance(engines, EngineFolder) else EngineFolder(engines)
        runner = self.engines.run
        # the LM step count is in the ONNX metadata too, but TensorRT folders hold no .onnx: use the manifest
        lm_meta = self.engines.manifest["stages"].get("language_model", {}).get("metadata", {})
        max_new = lm_meta.get(MAX_NEW_TOKENS_KEY)
        self.conditioner = TextConditioner(self.engines.folder, self.engines.kind, runner,
                                           max_new_tokens=int(max_new) if max_new else None)
        self.decoder = AudioDecoder(self.engines.folder, runner)
        self.progress = progress
        self.timings = Timings()

    def scheduler(self, name: str) -> Any:
        import json

        from .schedulers import scheduler_from_config

        config = json.loads((self.engines.folder / "scheduler_config.json").read_text())
        return scheduler_from_config(config, kind=name)

    def __call__(self, request: Any, latents: np.ndarray | None = None) -> np.ndarray:
        """Generate ``request`` (a ``GenerationRequest``); returns the trimmed float32 waveform."""
        engines = self.engines
        engines.check_covers(request.seconds)
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
        latents = self.denoise(latents, cond, guidance, request, samples_rng)

        t0 = time.perf_counter()
        waveform = self.decoder.decode(latents)[0]
        timings.decode = time.perf_counter() - t0
        timings.total = time.perf_counter() - start
        return trim_waveform(waveform, geometry.num_samples(request.seconds)).astype(np.float32)

    def denoise(self, latents: np.ndarray, cond: dict[str, np.ndarray], guidance: float, request: Any,
                samples_rng: np.random.Generator) -> np.ndarray:
        scheduler = self.scheduler(request.scheduler)
        scheduler.set_timesteps(request.steps)
        latents = latents * np.float32(scheduler.init_noise_sigma)
        unet = self.engines.stage("unet")
        layers = unet.get("litefocus_layers", [])
        ratio = (self.engines.manifest.get("litefocus") or {}).get("sparse_ratio", 0.0)
        guided = guidance > 1.0
        for t in _progress(scheduler.timesteps, self.progress, "denoising"):
            t0 = time.perf_counter()
            model_input = np.concatenate([latents, latents]) if guided else latents
            model_input = scheduler.scale_model_input(model_input, t)
            feeds = {"sample": model_input, "timestep": np.full(len(model_input), t, dtype=np.float32), **cond}
            feeds.update(draw_unet_samples(samples_rng, layers, latents.shape[2], ratio))
            noise_pred = self.engines.run("unet", feeds)["noise_pred"]
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
