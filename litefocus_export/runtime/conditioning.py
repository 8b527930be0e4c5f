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

from ..errors import EngineError, UsageError

TEXT_STAGES: dict[str, tuple[str, ...]] = {
    "audioldm2": ("text_encoder", "text_encoder_2", "projection_model", "language_model"),
    "audioldm": ("text_encoder",),
    "musicldm": ("text_encoder",),
}
# ``guidance_scale`` defaults of the pipelines' ``__call__``.
DEFAULT_GUIDANCE = {"audioldm2": 3.5, "audioldm": 2.5, "musicldm": 2.0}
# ONNX metadata key of ``language_model.onnx``: the LM steps (``language_model.config.max_new_tokens``).
MAX_NEW_TOKENS_KEY = "litefocus.max_new_tokens"
# Tokenizer classes the AudioLDM2 pipeline pads to ``max_length`` (the others: to the longest sequence).
_MAX_LENGTH_TOKENIZERS = ("RobertaTokenizer", "RobertaTokenizerFast", "VitsTokenizer")

StageRunner = Callable[[str, Mapping[str, np.ndarray]], dict[str, np.ndarray]]


class OrtStageRunner:
    """Run a stage by name with ONNX Runtime; sessions for ``folder/<stage>.onnx`` open on first use.

    Args:
        folder: the engine folder.
        sessions: ready ``InferenceSession``-like objects by stage name (others open from the folder).
        providers: ONNX Runtime providers for sessions opened here (default CPU).
    """

    def __init__(
        self,
        folder: str | Path,
        sessions: Mapping[str, Any] | None = None,
        providers: tuple[str, ...] = ("CPUExecutionProvider",),
    ) -> None:
        self.folder, self.providers = Path(folder), providers
        self.sessions: dict[str, Any] = dict(sessions or {})

    def session(self, stage: str) -> Any:
        if stage not in self.sessions:
            path = self.folder / f"{stage}.onnx"
            if not path.is_file():
                raise EngineError(f"engine folder {str(self.folder)!r} has no {path.name}")
            import onnxruntime as ort

            self.sessions[stage] = ort.InferenceSession(str(path), providers=list(self.providers))
        return self.sessions[stage]

    def __call__(self, stage: str, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        session = self.session(stage)
        names = [output.name for output in session.get_outputs()]
        return dict(zip(names, session.run(names, dict(feeds))))


def stage_runner(folder: str | Path, sessions: Any = None) -> StageRunner:
    """A ``(stage, feeds) -> {output name: array}`` callable from what the engine layer hands over.

    ``sessions`` is ``None`` (ONNX Runtime CPU sessions opened from ``folder``), a mapping of stage name to
    session, or already such a callable (returned unchanged).
    """
    if sessions is None or isinstance(sessions, Mapping):
        return OrtStageRunner(folder, sessions)
    if callable(sessions):
        return sessions
    raise UsageError(
        f"sessions must be None, a mapping of stage sessions or a callable, got {type(sessions)}"
    )


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
        folder: the engine folder (``<stage>.onnx``, ``tokenizer/``, ``tokenizer_2/`` for AudioLDM2).
        kind: ``"audioldm2"``, ``"audioldm"`` or ``"musicldm"``.
        sessions: how stages run (:func:`stage_runner`): None (CPU sessions from ``folder``), a mapping of
            stage name to session, or a callable ``(stage, feeds) -> {output name: array}``.
        max_new_tokens: AudioLDM2's language-model steps; default: the ``litefocus.max_new_tokens`` metadata
            of ``language_model.onnx``.

    Raises:
        UsageError: unknown kind. EngineError: a tokenizer or stage file is missing.
    """

    def __init__(
        self, folder: str | Path, kind: str, sessions: Any = None, *, max_new_tokens: int | None = None
    ) -> None:
        if kind not in TEXT_STAGES:
            raise UsageError(f"unknown pipeline kind {kind!r}; valid: {', '.join(TEXT_STAGES)}")
        self.folder, self.kind = Path(folder), kind
        self.run: StageRunner = stage_runner(folder, sessions)
        self.tokenizer = TextTokenizer.from_folder(self.folder / "tokenizer")
        self.tokenizer_2 = (
            TextTokenizer.from_folder(self.folder / "tokenizer_2") if kind == "audioldm2" else None
        )
        self._max_new_tokens = max_new_tokens

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

    @property
    def max_new_tokens(self) -> int:
        if self._max_new_tokens is None:
            self._max_new_tokens = _read_max_new_tokens(self.folder / "language_model.onnx")
        return self._max_new_tokens

    def generate(self, inputs_embeds: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        """``generate_language_model``: append ``max_new_tokens`` hidden states; returns the new ones."""
        steps = self.max_new_tokens
        embeds, mask = (
            inputs_embeds.astype(np.float32, copy=False),
            attention_mask.astype(np.int64, copy=False),
        )
        for _ in range(steps):
            step = self.run("language_model", {"inputs_embeds": embeds, "attention_mask": mask})
            embeds = np.concatenate([embeds, step["next_hidden_state"]], axis=1)
            mask = np.concatenate([mask, np.ones((mask.shape[0], 1), dtype=mask.dtype)], axis=1)
        return embeds[:, -steps:, :]


def _read_max_new_tokens(path: Path) -> int:
    """The language-model step count recorded in ``language_model.onnx``'s metadata."""
    if not path.is_file():
        raise EngineError(f"{str(path)!r} is missing; pass max_new_tokens or export the language_model stage")
    import onnx

    # Weights may live in external data; only the metadata is wanted.
    model = onnx.load(str(path), load_external_data=False)
    props = {p.key: p.value for p in model.metadata_props}
    if MAX_NEW_TOKENS_KEY not in props:
        raise EngineError(f"{path.name} has no {MAX_NEW_TOKENS_KEY} metadata; pass max_new_tokens")
    return int(props[MAX_NEW_TOKENS_KEY])
