"""The PyTorch backend: a diffusers pipeline, patched or not, driven like the engine runtime.

It is the reference the engines are compared with. Initial noise and LiteFocus samples come from the
same numpy streams the runtime uses (``core.seeds.seeded_streams``), so one seed gives the same audio
on every backend.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Literal

import numpy as np

from .core.choices import SchedulerName
from .core.contract import UNET_OUTPUT, unet_call_arguments
from .core.lifecycle import Closing
from .core.request import GenerationRequest
from .core.seeds import initial_noise, seeded_streams

log = logging.getLogger(__name__)

Attention = Literal["litefocus", "full"]


def use_scheduler(pipe: Any, name: SchedulerName) -> None:
    """Swap the pipeline's scheduler for DDIM or DPM-Solver++ (2M), keeping its noise schedule."""
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler

    cls = DDIMScheduler if name == "ddim" else DPMSolverMultistepScheduler
    if not isinstance(pipe.scheduler, cls):
        pipe.scheduler = cls.from_config(pipe.scheduler.config)


def check_steps(pipe: Any, request: GenerationRequest) -> None:
    """Refuse, before any work, more steps than the requested scheduler supports with the pipeline's config.

    The runtime's numpy scheduler resolves the config as diffusers' ``from_config`` does, so its limit is the
    one diffusers would hit (after minutes of work, with an IndexError or NaN audio).
    """
    from .runtime.schedulers import scheduler_from_config

    config = {**pipe.scheduler.config, "_class_name": type(pipe.scheduler).__name__}
    scheduler_from_config(config, kind=request.scheduler).set_timesteps(request.steps)


def generate_torch(
    pipe: Any, request: GenerationRequest, attention: Attention = "litefocus", config: Any = None,
    vocoder_chunk_frames: int | None = None,
) -> np.ndarray:
    """Run ``pipe`` for ``request``; returns the float32 waveform ``(num_samples,)``.

    With ``attention="litefocus"`` the pipeline is patched for the call (``config`` or the defaults)
    and unpatched afterwards; samples come from the request's seed. The vocoder decodes in exact chunks of
    ``vocoder_chunk_frames`` mel frames (default ``runtime.decode.DEFAULT_CHUNK_FRAMES``; 0: one shot, the stock
    pipeline), so its memory does not grow with the clip; the waveform is the same to float rounding.
    """
    import contextlib

    import torch

    from .attention import LiteFocusConfig, RandomSamples, patched
    from .models import pipeline_geometry
    from .runtime.decode import DEFAULT_CHUNK_FRAMES, chunked_torch_vocoder

    check_steps(pipe, request)
    geometry = pipeline_geometry(pipe)
    noise_rng, samples_rng = seeded_streams(request.seed)
    shape = (1, pipe.unet.config.in_channels, geometry.latent_frames(request.seconds), geometry.latent_freq_bins)
    device = pipe.unet.device
    latents = torch.from_numpy(initial_noise(noise_rng, shape)).to(device=device, dtype=pipe.unet.dtype)
    use_scheduler(pipe, request.scheduler)
    kwargs: dict[str, Any] = dict(
        audio_length_in_s=request.seconds, num_inference_steps=request.steps, latents=latents,
        negative_prompt=request.negative_prompt, output_type="np",
    )
    if request.guidance is not None:
        kwargs["guidance_scale"] = request.guidance

    chunk = DEFAULT_CHUNK_FRAMES if vocoder_chunk_frames is None else int(vocoder_chunk_frames)
    start = time.perf_counter()
    with torch.inference_mode(), (chunked_torch_vocoder(pipe.vocoder, chunk) if chunk else contextlib.nullcontext()):
        if attention == "full":
            audio = pipe(request.prompt, **kwargs).audios
        else:
            config = config or LiteFocusConfig()
            with patched(pipe, config, RandomSamples(config.sparse_ratio, generator=samples_rng)):
                audio = pipe(request.prompt, **kwargs).audios
    log.info("generated %.2f s of audio in %.1f s (torch, %s)", request.seconds, time.perf_counter() - start, attention)
    return np.asarray(audio[0], dtype=np.float32)


class TorchUNetStage(Closing):
    """A diffusers UNet (stock or patched) as a stage runner (``backends.Runner``): ``stage(feeds) ->
    {"noise_pred": array}`` from graph-named numpy feeds, the torch peer of an engine folder's unet stage.

    Float feeds are cast to the UNet's dtype (a bf16 UNet takes bf16 inputs); index inputs are ignored, since
    a patched UNet draws its samples from its own sample source. ``close()`` drops the UNet.
    """

    def __init__(self, unet: Any):
        self.unet = unet

    def __call__(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        from .core.errors import EngineError

        if self.unet is None:
            raise EngineError("the torch UNet stage was closed")
        dtype = self.unet.dtype
        inputs = {k: torch.from_numpy(v) for k, v in feeds.items()}
        inputs = {k: v.to(dtype) if v.is_floating_point() else v for k, v in inputs.items()}
        sample, timestep, kwargs = unet_call_arguments(inputs)
        with torch.inference_mode():
            return {UNET_OUTPUT: self.unet(sample, timestep, **kwargs, return_dict=False)[0].float().numpy()}

    def close(self) -> None:
        self.unet = None
