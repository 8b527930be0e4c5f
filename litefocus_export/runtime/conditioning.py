"""Prompt -> UNet conditioning with the exported text stages (torch-free: numpy, onnxruntime, tokenizers).

Reproduces the pipelines' ``encode_prompt`` (AudioLDM2) and ``_encode_prompt`` (AudioLDM, MusicLDM) for one
prompt and one waveform per prompt, including their tokenizer settings:

- CLAP (RoBERTa) tokenizer: ``padding="max_length"`` to ``model_max_length``, truncated. AudioLDM and
  MusicLDM pad the *negative* prompt to the embedding width instead (``max_length = prompt_embeds.shape[1]``
  there: a quirk of the pipelines, kept so outputs match).
- AudioLDM2's T5 tokenizer: the prompt is padded to its own length (``padding=True``), the negative prompt
  is padded or truncated to that length, so both stack.
- AudioLDM2's language model runs ``max_new_tokens`` steps with no KV cache, re-feeding the sequence and
  extending the mask with ones, as ``generate_language_model`` does.

Tokenizers are the saved ``tokenizer.json`` files run by the ``tokenizers`` library with the settings
transformers' tokenizer call would give it (``transformers`` itself would import torch).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ..contract import MAX_NEW_TOKENS_KEY, check_kind
from ..errors import EngineError, UsageError

# ``guidance_scale`` defaults of the pipelines' ``__call__``.
DEFAULT_GUIDANCE = {"audioldm2": 3.5, "audioldm": 2.5, "musicldm": 2.0}
# Tokenizer classes the AudioLDM2 pipeline pads to ``max_length`` (the others: to the longest sequence).
_MAX_LENGTH_TOKENIZERS = ("RobertaTokenizer", "RobertaTokenizerFast", "VitsTokenizer")

# ``(stage name, feeds) -> {output name: array}``: ``EngineFolder.run``, or any runner with its signature
StageRunner = Callable[[str, Mapping[str, np.ndarray]], dict[str, np.ndarray]]


@dataclass
class TextTokenizer:
    """One saved tokenizer, called as ``tokenizer(text, max_length=..., truncation=True, padding=...)``."""

    backend: Any  # tokenizers.Tokenizer
    model_max_length: int
    pad_id: int
    pad_token: str
    tokenizer_class: str = ""
    padding_side: str = "right"
    truncation_side: str = "right"

    @classmethod
    def from_folder(cls, folder: str | Path) -> TextTokenizer:
        """Load ``tokenizer.json`` + ``tokenizer_config.json`` as written by ``save_pretrained``."""
        from tokenizers import Tokenizer

        folder = Path(folder)
        if not (folder / "tokenizer.json").is_file():
            raise EngineError(f"tokenizer folder {str(folder)!r} has no tokenizer.json")
        config = json.loads((folder / "tokenizer_config.json").read_text())
        backend = Tokenizer.from_file(str(folder / "tokenizer.json"))
        pad = config.get("pad_token")
        pad_token = pad.get("content") if isinstance(pad, dict) else pad
        pad_id = backend.token_to_id(pad_token) if pad_token is not None else None
        if pad_id is None:
            raise EngineError(f"tokenizer in {str(folder)!r} has no pad token")
        return cls(
            backend,
            int(config["model_max_length"]),
            pad_id,
            pad_token,
            config.get("tokenizer_class", ""),
            config.get("padding_side", "right"),
            config.get("truncation_side", "right"),
        )

    @property
    def pads_to_max_length(self) -> bool:
        """Whether AudioLDM2's ``encode_prompt`` pads this tokenizer's prompt to ``model_max_length``."""
        return self.tokenizer_class in _MAX_LENGTH_TOKENIZERS

    def __call__(
        self, text: str, *, max_length: int, padding: Literal["max_length", "longest"]
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(input_ids, attention_mask)``, int64 ``(1, length)``, truncated to ``max_length``."""
        tok = self.backend
        tok.enable_truncation(
            max_length=max_length, stride=0, strategy="longest_first", direction=self.truncation_side
        )
        tok.enable_padding(
            length=max_length if padding == "max_length" else None,
            direction=self.padding_side,
            pad_id=self.pad_id,
            pad_token=self.pad_token,
            pad_type_id=0,
        )
        encoding = tok.encode(text, add_special_tokens=True)
        ids = np.asarray([encoding.ids], dtype=np.int64)
        return ids, np.asarray([encoding.attention_mask], dtype=np.int64)


def _check_text(prompt: Any, negative_prompt: Any) -> None:
    if not isinstance(prompt, str):
        raise UsageError(f"prompt must be a string, got {type(prompt).__name__}")
    if negative_prompt is not None and not isinstance(negative_prompt, str):
        raise UsageError(f"negative_prompt must be a string or None, got {type(negative_prompt).__name__}")


class TextConditioner:
    """``encode(prompt, negative_prompt, guidance)`` -> the UNet's conditioning inputs, as in the pipeline.

    Args:
        folder: the folder holding ``tokenizer/`` (and ``tokenizer_2/`` for AudioLDM2): an engine folder.
        kind: ``"audioldm2"``, ``"audioldm"`` or ``"musicldm"``.
        run: runs a stage by name (``EngineFolder.run``).
        max_new_tokens: AudioLDM2's language-model steps (the ``litefocus.max_new_tokens`` metadata of the
            language_model stage); required for AudioLDM2.

    Raises:
        UsageError: unknown kind. EngineError: a tokenizer is missing, or AudioLDM2 without max_new_tokens.
    """

    def __init__(self, folder: str | Path, kind: str, run: StageRunner, *, max_new_tokens: int | None = None) -> None:
        self.folder, self.kind = Path(folder), check_kind(kind)
        self.run = run
        self.tokenizer = TextTokenizer.from_folder(self.folder / "tokenizer")
        self.tokenizer_2 = (
            TextTokenizer.from_folder(self.folder / "tokenizer_2") if kind == "audioldm2" else None
        )
        if kind == "audioldm2" and max_new_tokens is None:
            raise EngineError(f"the AudioLDM2 conditioner needs max_new_tokens (the language_model stage's "
                              f"{MAX_NEW_TOKENS_KEY} metadata)")
        self.max_new_tokens = max_new_tokens

    @classmethod
    def from_engines(cls, engines: Any) -> TextConditioner:
        """The conditioner of an ``EngineFolder``: its tokenizers, its stages, its manifest's LM step count."""
        max_new = None
        if engines.kind == "audioldm2":
            max_new = engines.stage("language_model").get("metadata", {}).get(MAX_NEW_TOKENS_KEY)
            if max_new is None:
                raise EngineError(f"{engines.folder}: the language_model stage has no {MAX_NEW_TOKENS_KEY} metadata; "
                                  f"rebuild the engines")
        return cls(engines.folder, engines.kind, engines.run, max_new_tokens=None if max_new is None else int(max_new))

    def encode(
        self, prompt: str, negative_prompt: str | None = None, guidance: float | None = None
    ) -> dict[str, np.ndarray]:
        """UNet conditioning inputs named after the UNet's forward arguments.

        With ``guidance > 1`` (default: the pipeline's ``guidance_scale``) the batch is ``[negative, prompt]``
        (an empty negative prompt when None), else the prompt alone.
        AudioLDM2: ``encoder_hidden_states`` float32 ``(B, max_new_tokens, lm_dim)``,
        ``encoder_hidden_states_1`` float32 ``(B, text_tokens, t5_dim)``, ``encoder_attention_mask_1`` int64
        ``(B, text_tokens)``. AudioLDM / MusicLDM: ``class_labels`` float32 ``(B, clap_dim)``.
        """
        _check_text(prompt, negative_prompt)
        guidance = DEFAULT_GUIDANCE[self.kind] if guidance is None else float(guidance)
        negative = (negative_prompt or "") if guidance > 1.0 else None
        if self.kind == "audioldm2":
            return self._encode_audioldm2(prompt, negative)
        return self._encode_clap(prompt, negative)

    __call__ = encode

    # --- AudioLDM / MusicLDM: the normalised CLAP text embedding as class labels ---
    def _clap_embeds(self, text: str, max_length: int) -> np.ndarray:
        ids, mask = self.tokenizer(text, max_length=max_length, padding="max_length")
        return self.run("text_encoder", {"input_ids": ids, "attention_mask": mask})["text_embeds"]

    def _encode_clap(self, prompt: str, negative: str | None) -> dict[str, np.ndarray]:
        embeds = self._clap_embeds(prompt, self.tokenizer.model_max_length)
        if negative is not None:
            # The pipelines pad the negative prompt to prompt_embeds.shape[1], the embedding width.
            embeds = np.concatenate([self._clap_embeds(negative, embeds.shape[1]), embeds])
        return {"class_labels": embeds.astype(np.float32, copy=False)}

    # --- AudioLDM2: CLAP + T5 -> projection -> GPT2 generation ---
    def _encode_audioldm2(self, prompt: str, negative: str | None) -> dict[str, np.ndarray]:
        generated, t5_embeds, t5_mask = self._audioldm2_branch(prompt, None)
        if negative is not None:
            neg_generated, neg_embeds, neg_mask = self._audioldm2_branch(negative, t5_embeds.shape[1])
            generated = np.concatenate([neg_generated, generated])
            t5_embeds, t5_mask = np.concatenate([neg_embeds, t5_embeds]), np.concatenate([neg_mask, t5_mask])
        return {
            "encoder_hidden_states": generated.astype(np.float32, copy=False),
            "encoder_hidden_states_1": t5_embeds.astype(np.float32, copy=False),
            "encoder_attention_mask_1": t5_mask.astype(np.int64, copy=False),
        }

    def _audioldm2_branch(
        self, text: str, t5_length: int | None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One prompt: ``(generated embeds, T5 hidden states, T5 mask)``.

        ``t5_length`` None: the positive prompt (T5 padded to its own length); else the negative prompt,
        padded (or truncated) to the positive prompt's T5 length.
        """
        ids, mask = self._tokenize(self.tokenizer, text, t5_length)
        clap = self.run("text_encoder", {"input_ids": ids, "attention_mask": mask})["text_embeds"]
        ids_2, mask_2 = self._tokenize(self.tokenizer_2, text, t5_length)
        t5 = self.run("text_encoder_2", {"input_ids": ids_2, "attention_mask": mask_2})["last_hidden_state"]
        projected = self.run(
            "projection_model",
            {
                "hidden_states": clap,
                "hidden_states_1": t5,
                # One CLAP state per prompt, always attended (``attention_mask.new_ones((batch_size, 1))``).
                "attention_mask": np.ones((clap.shape[0], 1), dtype=np.int64),
                "attention_mask_1": mask_2,
            },
        )
        generated = self.generate(projected["projected_hidden_states"], projected["projected_attention_mask"])
        return generated, t5, mask_2

    @staticmethod
    def _tokenize(
        tok: TextTokenizer | None, text: str, negative_length: int | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """``encode_prompt``'s tokenizer call: the prompt (``negative_length`` None) or the negative one."""
        if tok is None:
            raise EngineError("the AudioLDM2 conditioner needs tokenizer_2")
        if negative_length is None:
            padding: Literal["max_length", "longest"] = "max_length" if tok.pads_to_max_length else "longest"
            return tok(text, max_length=tok.model_max_length, padding=padding)
        length = tok.model_max_length if tok.pads_to_max_length else negative_length
        return tok(text, max_length=length, padding="max_length")

    def generate(self, inputs_embeds: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        """``generate_language_model``: append ``max_new_tokens`` hidden states; returns the new ones."""
        steps = int(self.max_new_tokens or 0)
        embeds, mask = (
            inputs_embeds.astype(np.float32, copy=False),
            attention_mask.astype(np.int64, copy=False),
        )
        for _ in range(steps):
            step = self.run("language_model", {"inputs_embeds": embeds, "attention_mask": mask})
            embeds = np.concatenate([embeds, step["next_hidden_state"]], axis=1)
            mask = np.concatenate([mask, np.ones((mask.shape[0], 1), dtype=mask.dtype)], axis=1)
        return embeds[:, -steps:, :]

