"""The non-UNet stages of a pipeline as small export-ready modules, with their example inputs.

Each wrapper computes exactly what the diffusers pipeline computes between two tensors the runtime sees
(``encode_prompt`` / ``_encode_prompt``, ``generate_language_model``, ``decode_latents``,
``mel_spectrogram_to_waveform``), so the ONNX graph plus the numpy glue in ``runtime/`` reproduces the
pipeline. Inputs and outputs are named after what the runtime feeds and reads.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..core.contract import (
    AUDIO_SAMPLES,
    BATCH,
    DECODE_STAGES,
    LATENT_FRAMES,
    LM_TOKENS,
    MEL_FRAMES,
    TEXT_STAGES,
    TEXT_TOKENS,
)
from ..core.errors import UsageError
from ..models import pipeline_geometry

Exporter = Literal["torchscript", "dynamo"]
Axes = dict[int, str]


class ClapTextFeatures(nn.Module):
    """AudioLDM2 / MusicLDM: ``ClapModel.get_text_features`` (pooler_output in transformers 5).

    AudioLDM2 appends a sequence axis of length 1 (``prompt_embeds[:, None, :]`` in ``encode_prompt``).
    """

    def __init__(self, clap: nn.Module, sequence_axis: bool) -> None:
        super().__init__()
        self.clap, self.sequence_axis = clap, sequence_axis

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        out = self.clap.get_text_features(input_ids, attention_mask=attention_mask)
        embeds = getattr(out, "pooler_output", out)
        return embeds[:, None, :] if self.sequence_axis else embeds


class ClapTextNormalized(nn.Module):
    """AudioLDM: ``ClapTextModelWithProjection(...).text_embeds``, then the pipeline's L2 normalisation."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.encoder(input_ids, attention_mask=attention_mask).text_embeds, dim=-1)


class T5Hidden(nn.Module):
    """AudioLDM2 ``text_encoder_2``: the T5 encoder's last hidden state."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.encoder(input_ids, attention_mask=attention_mask)[0]


class Projection(nn.Module):
    """``AudioLDM2ProjectionModel``: both text encodings + masks -> the language model's prompt and mask."""

    def __init__(self, projection: nn.Module) -> None:
        super().__init__()
        self.projection = projection

    def forward(
        self,
        hidden_states: torch.Tensor,
        hidden_states_1: torch.Tensor,
        attention_mask: torch.Tensor,
        attention_mask_1: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.projection(
            hidden_states=hidden_states,
            hidden_states_1=hidden_states_1,
            attention_mask=attention_mask,
            attention_mask_1=attention_mask_1,
        )
        return out.hidden_states, out.attention_mask


class LanguageModelStep(nn.Module):
    """One step of ``generate_language_model`` without a KV cache: the last position's final hidden state.

    The pipeline takes ``output.hidden_states[-1][:, -1:, :]`` of the LM-head model; that is the base
    transformer's ``last_hidden_state`` (after the final layer norm), so the LM head is left out.
    ``position_ids`` is an input: the pipeline's own call leaves it to the default ``arange``, which a caller
    reproduces for one prompt; several prompts of different lengths padded into one batch pass each row's own
    positions, so every row equals its run alone (``runtime.conditioning``).
    """

    def __init__(self, language_model: nn.Module) -> None:
        super().__init__()
        self.transformer = getattr(language_model, "base_model", language_model)

    def forward(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor,
                position_ids: torch.Tensor) -> torch.Tensor:
        out = self.transformer(inputs_embeds=inputs_embeds, attention_mask=attention_mask,
                               position_ids=position_ids, use_cache=False)
        return out.last_hidden_state[:, -1:, :]


class VaeDecoder(nn.Module):
    """``decode_latents``: ``vae.decode(1 / scaling_factor * latents).sample`` -> mel ``(B, 1, T, F)``."""

    def __init__(self, vae: nn.Module) -> None:
        super().__init__()
        self.vae, self.scaling_factor = vae, float(vae.config.scaling_factor)

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(1 / self.scaling_factor * latents).sample


class Vocoder(nn.Module):
    """``mel_spectrogram_to_waveform``: squeeze the channel axis, run the HiFi-GAN -> ``(B, samples)``."""

    def __init__(self, vocoder: nn.Module) -> None:
        super().__init__()
        self.vocoder = vocoder

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        return self.vocoder(mel.squeeze(1))


def _conv2d(conv: nn.Conv1d) -> nn.Conv2d:
    """The same convolution over a ``(B, C, 1, T)`` tensor: kernel ``(1, k)``, the same weights."""
    new = nn.Conv2d(conv.in_channels, conv.out_channels, (1, conv.kernel_size[0]), stride=(1, conv.stride[0]),
                    padding=(0, conv.padding[0]), dilation=(1, conv.dilation[0]), groups=conv.groups,
                    bias=conv.bias is not None)
    with torch.no_grad():
        new.weight.copy_(conv.weight.detach().unsqueeze(2))
        if conv.bias is not None:
            new.bias.copy_(conv.bias.detach())
    return new


def _conv_transpose2d(conv: nn.ConvTranspose1d) -> nn.ConvTranspose2d:
    new = nn.ConvTranspose2d(conv.in_channels, conv.out_channels, (1, conv.kernel_size[0]),
                             stride=(1, conv.stride[0]), padding=(0, conv.padding[0]),
                             output_padding=(0, conv.output_padding[0]), groups=conv.groups,
                             bias=conv.bias is not None, dilation=(1, conv.dilation[0]))
    with torch.no_grad():
        new.weight.copy_(conv.weight.detach().unsqueeze(2))
        if conv.bias is not None:
            new.bias.copy_(conv.bias.detach())
    return new


class Vocoder2d(nn.Module):
    """``Vocoder`` with every Conv1d / ConvTranspose1d as its ``(1, k)`` 2-D twin, over ``(B, C, 1, T)``.

    The same function (same weights, same arithmetic per output; float summation order may differ), exported
    instead of the 1-D graph because ONNX Runtime's CPU provider runs 2-D convolutions in its blocked NCHWc
    layout with the following LeakyRelu / residual Add fused, and 1-D ones through im2col + GEMM unfused:
    measured per convolution of the 80 s vocoder (2 threads, README "Decode"), the 2-D form is 1.4-2x faster.
    The runtime now loads the vocoder without the NCHWc transforms (``runner.LOAD_LEVELS``): a whole chunk of
    the 2-D graph measured faster so (6.21 s against 6.65 s).
    Mirrors transformers' ``SpeechT5HifiGan.forward`` (batched input).
    """

    def __init__(self, vocoder: nn.Module) -> None:
        super().__init__()
        config = vocoder.config
        self.normalize_before, self.slope = bool(config.normalize_before), float(config.leaky_relu_slope)
        self.num_kernels = len(config.resblock_kernel_sizes)
        self.register_buffer("mean", vocoder.mean.detach().clone())
        self.register_buffer("scale", vocoder.scale.detach().clone())
        self.conv_pre, self.conv_post = _conv2d(vocoder.conv_pre), _conv2d(vocoder.conv_post)
        self.upsampler = nn.ModuleList(_conv_transpose2d(up) for up in vocoder.upsampler)
        self.convs1 = nn.ModuleList(nn.ModuleList(_conv2d(c) for c in block.convs1) for block in vocoder.resblocks)
        self.convs2 = nn.ModuleList(nn.ModuleList(_conv2d(c) for c in block.convs2) for block in vocoder.resblocks)
        self.block_slopes = [float(block.leaky_relu_slope) for block in vocoder.resblocks]

    def _resblock(self, index: int, hidden: torch.Tensor) -> torch.Tensor:
        slope = self.block_slopes[index]
        for conv1, conv2 in zip(self.convs1[index], self.convs2[index]):
            residual = hidden
            hidden = conv2(F.leaky_relu(conv1(F.leaky_relu(hidden, slope)), slope)) + residual
        return hidden

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        spectrogram = mel.squeeze(1)
        if self.normalize_before:
            spectrogram = (spectrogram - self.mean) / self.scale
        hidden = self.conv_pre(spectrogram.transpose(2, 1).unsqueeze(2))
        for i, upsampler in enumerate(self.upsampler):
            hidden = upsampler(F.leaky_relu(hidden, self.slope))
            res = self._resblock(i * self.num_kernels, hidden)
            for j in range(1, self.num_kernels):
                res = res + self._resblock(i * self.num_kernels + j, hidden)
            hidden = res / self.num_kernels
        hidden = torch.tanh(self.conv_post(F.leaky_relu(hidden)))
        return hidden.flatten(1)


# --- example inputs: padding in row 0 (ids = pad id where the mask is 0), as tokenizers produce ---
def _padded_mask(batch: int, length: int, start: int, stop: int) -> torch.Tensor:
    mask = torch.ones(batch, length, dtype=torch.int64)
    mask[0, start:stop] = 0
    return mask


def _token_inputs(config: Any, batch: int, length: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
    mask = _padded_mask(batch, length, length // 2 + 1, length)
    ids = torch.randint(4, min(int(config.vocab_size), 256), (batch, length), generator=gen)
    ids = torch.where(mask.bool(), ids, torch.full_like(ids, int(config.pad_token_id or 0)))
    return {"input_ids": ids, "attention_mask": mask}


def _clap_text_config(pipe: Any) -> Any:
    config = pipe.text_encoder.config
    return getattr(config, "text_config", config)


def _projection_inputs(pipe: Any, batch: int, length: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
    config = pipe.projection_model.config
    return {
        "hidden_states": torch.randn(batch, 1, config.text_encoder_dim, generator=gen),
        "hidden_states_1": torch.randn(batch, length, config.text_encoder_1_dim, generator=gen),
        "attention_mask": torch.ones(batch, 1, dtype=torch.int64),
        "attention_mask_1": _padded_mask(batch, length, length // 2 + 1, length),
    }


def _language_model_inputs(
    pipe: Any, batch: int, length: int, gen: torch.Generator
) -> dict[str, torch.Tensor]:
    # Padding inside the sequence, as in a projected negative prompt (SOS, CLAP, EOS, SOS, T5 + pad, EOS).
    hidden = pipe.language_model.config.hidden_size
    return {
        "inputs_embeds": torch.randn(batch, length, hidden, generator=gen),
        "attention_mask": _padded_mask(batch, length, length // 2, length - 2),
        # rows' own positions (the last row's reversed: a graph that ignored the input would fail verification)
        "position_ids": torch.cat([torch.arange(length).repeat(batch - 1, 1), torch.arange(length).flip(0)[None]]),
    }


def _latent_inputs(pipe: Any, batch: int, length: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
    bins = pipeline_geometry(pipe).latent_freq_bins
    return {"latents": torch.randn(batch, pipe.vae.config.latent_channels, length, bins, generator=gen)}


def _mel_inputs(pipe: Any, batch: int, length: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
    geometry = pipeline_geometry(pipe)
    return {"mel": torch.randn(batch, 1, length * geometry.vae_scale, geometry.mel_bins, generator=gen)}


@dataclass(frozen=True)
class StageSpec:
    """One exportable stage: its wrapper, example inputs, dynamic axes and preferred exporter.

    ``exporter`` is the preferred exporter; the other one is the fallback. Measured on the tiny models
    (2 CPU cores), the TorchScript exporter takes 0.05-2 s per stage and ``dynamo`` 1-7 s, with the same
    accuracy, so every stage prefers TorchScript. Verification runs other shapes than the trace, so a graph
    that baked a shape in fails there.
    """

    name: str
    module: Callable[[Any], nn.Module]
    examples: Callable[[Any, int, int, torch.Generator], dict[str, torch.Tensor]]
    inputs: dict[str, Axes]
    outputs: dict[str, Axes]
    exporter: Exporter = "torchscript"


_TOKENS: dict[str, Axes] = {
    "input_ids": {0: BATCH, 1: TEXT_TOKENS},
    "attention_mask": {0: BATCH, 1: TEXT_TOKENS},
}


def _text_encoder_spec(kind: str) -> StageSpec:
    if kind == "audioldm":
        module: Callable[[Any], nn.Module] = lambda pipe: ClapTextNormalized(pipe.text_encoder)  # noqa: E731
    else:
        module = lambda pipe: ClapTextFeatures(pipe.text_encoder, kind == "audioldm2")  # noqa: E731
    return StageSpec(
        "text_encoder",
        module,
        lambda p, b, n, g: _token_inputs(_clap_text_config(p), b, n, g),
        _TOKENS,
        {"text_embeds": {0: BATCH}},
    )


_COMMON: dict[str, StageSpec] = {
    "text_encoder_2": StageSpec(
        "text_encoder_2",
        lambda pipe: T5Hidden(pipe.text_encoder_2),
        lambda p, b, n, g: _token_inputs(p.text_encoder_2.config, b, n, g),
        _TOKENS,
        {"last_hidden_state": {0: BATCH, 1: TEXT_TOKENS}},
    ),
    "projection_model": StageSpec(
        "projection_model",
        lambda pipe: Projection(pipe.projection_model),
        _projection_inputs,
        {
            "hidden_states": {0: BATCH},
            "hidden_states_1": {0: BATCH, 1: TEXT_TOKENS},
            "attention_mask": {0: BATCH},
            "attention_mask_1": {0: BATCH, 1: TEXT_TOKENS},
        },
        {
            "projected_hidden_states": {0: BATCH, 1: LM_TOKENS},
            "projected_attention_mask": {0: BATCH, 1: LM_TOKENS},
        },
    ),
    "language_model": StageSpec(
        "language_model",
        lambda pipe: LanguageModelStep(pipe.language_model),
        _language_model_inputs,
        {"inputs_embeds": {0: BATCH, 1: LM_TOKENS}, "attention_mask": {0: BATCH, 1: LM_TOKENS},
         "position_ids": {0: BATCH, 1: LM_TOKENS}},
        {"next_hidden_state": {0: BATCH}},
    ),
    "vae_decoder": StageSpec(
        "vae_decoder",
        lambda pipe: VaeDecoder(pipe.vae),
        _latent_inputs,
        {"latents": {0: BATCH, 2: LATENT_FRAMES}},
        {"mel": {0: BATCH, 2: MEL_FRAMES}},
    ),
    "vocoder": StageSpec(
        "vocoder",
        lambda pipe: Vocoder2d(pipe.vocoder),
        _mel_inputs,
        {"mel": {0: BATCH, 2: MEL_FRAMES}},
        {"waveform": {0: BATCH, 1: AUDIO_SAMPLES}},
    ),
}


def stage_names(kind: str) -> tuple[str, ...]:
    """Every non-UNet stage of a pipeline kind, in pipeline order."""
    return (*TEXT_STAGES[kind], *DECODE_STAGES)


def stage_spec(kind: str, name: str) -> StageSpec:
    """The spec of stage ``name`` of a pipeline kind; UsageError for a stage the kind does not have."""
    valid = stage_names(kind)
    if name not in valid:
        raise UsageError(f"unknown stage {name!r} for {kind}; valid stages: {', '.join(valid)}")
    return _text_encoder_spec(kind) if name == "text_encoder" else _COMMON[name]
