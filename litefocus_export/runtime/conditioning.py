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

Several requests encode as one batch (``encode_batch``), each equal to its encoding alone: rows of equal
shapes run as one call; T5 rows are right-padded to the longest (masked, then cut back to their own length);
the language model's rows are left-padded to the longest prompt and given their own position ids, the ones
``arange`` gives each alone (engine folders whose language model takes no ``position_ids`` run it per row).

Tokenizers are the saved ``tokenizer.json`` files run by the ``tokenizers`` library with the settings
transformers' tokenizer call would give it (``transformers`` itself would import torch).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ..core.contract import MAX_NEW_TOKENS_KEY, check_kind
from ..core.errors import EngineError, UsageError

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
        lm_position_ids: whether the language_model stage takes ``position_ids`` (exports since format 5);
            without them its rows run one at a time.

    Raises:
        UsageError: unknown kind. EngineError: a tokenizer is missing, or AudioLDM2 without max_new_tokens.
    """

    def __init__(self, folder: str | Path, kind: str, run: StageRunner, *, max_new_tokens: int | None = None,
                 lm_position_ids: bool = True) -> None:
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
        self.lm_position_ids = lm_position_ids

    @classmethod
    def from_engines(cls, engines: Any) -> TextConditioner:
        """The conditioner of an ``EngineFolder``: its tokenizers, its stages, its manifest's LM step count."""
        max_new, positions = None, False
        if engines.kind == "audioldm2":
            stage = engines.stage("language_model")
            max_new = stage.get("metadata", {}).get(MAX_NEW_TOKENS_KEY)
            if max_new is None:
                raise EngineError(f"{engines.folder}: the language_model stage has no {MAX_NEW_TOKENS_KEY} metadata; "
                                  f"rebuild the engines")
            positions = "position_ids" in stage.get("inputs", {})
        return cls(engines.folder, engines.kind, engines.run, max_new_tokens=None if max_new is None else int(max_new),
                   lm_position_ids=positions)

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
        return self.encode_batch([(prompt, negative_prompt, guidance)])[0]

    __call__ = encode

    def encode_batch(
        self, requests: Sequence[tuple[str, str | None, float | None]]
    ) -> list[dict[str, np.ndarray]]:
        """``encode`` of several ``(prompt, negative_prompt, guidance)`` at once, the text stages batched across
        requests; each result is what ``encode`` gives that request alone."""
        if not requests:
            return []
        prompts, negatives = [], []
        for prompt, negative_prompt, guidance in requests:
            _check_text(prompt, negative_prompt)
            guidance = DEFAULT_GUIDANCE[self.kind] if guidance is None else float(guidance)
            prompts.append(prompt)
            negatives.append((negative_prompt or "") if guidance > 1.0 else None)
        if self.kind == "audioldm2":
            return self._encode_audioldm2(prompts, negatives)
        return self._encode_clap(prompts, negatives)

    def _run_rows(self, stage: str, rows: Sequence[Mapping[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
        """``stage``'s outputs for each one-row feed, one call per distinct set of input shapes (rows of equal
        shapes stack exactly)."""
        groups: dict[tuple[Any, ...], list[int]] = {}
        for i, feeds in enumerate(rows):
            groups.setdefault(tuple((name, a.shape) for name, a in feeds.items()), []).append(i)
        results: list[dict[str, np.ndarray]] = [{} for _ in rows]
        for members in groups.values():
            stacked = {name: np.concatenate([rows[i][name] for i in members]) for name in rows[members[0]]}
            for name, out in self.run(stage, stacked).items():
                for j, i in enumerate(members):
                    results[i][name] = out[j:j + 1]
        return results

    # --- AudioLDM / MusicLDM: the normalised CLAP text embedding as class labels ---
    def _clap_embeds(self, texts: Sequence[str], max_length: int) -> list[np.ndarray]:
        rows = []
        for text in texts:
            ids, mask = self.tokenizer(text, max_length=max_length, padding="max_length")
            rows.append({"input_ids": ids, "attention_mask": mask})
        return [out["text_embeds"] for out in self._run_rows("text_encoder", rows)]

    def _encode_clap(self, prompts: list[str], negatives: list[str | None]) -> list[dict[str, np.ndarray]]:
        embeds = self._clap_embeds(prompts, self.tokenizer.model_max_length)
        guided = [i for i, negative in enumerate(negatives) if negative is not None]
        # The pipelines pad the negative prompt to prompt_embeds.shape[1], the embedding width.
        negative_embeds = self._clap_embeds([negatives[i] or "" for i in guided], embeds[0].shape[1])
        for i, negative in zip(guided, negative_embeds):
            embeds[i] = np.concatenate([negative, embeds[i]])
        return [{"class_labels": e.astype(np.float32, copy=False)} for e in embeds]

    # --- AudioLDM2: CLAP + T5 -> projection -> GPT2 generation ---
    def _encode_audioldm2(self, prompts: list[str], negatives: list[str | None]) -> list[dict[str, np.ndarray]]:
        """Every prompt and negative prompt is one row of ``encode_prompt``'s branch; a negative prompt's
        tokens are padded (or truncated) to its prompt's T5 length, as the pipeline does."""
        texts, lengths = list(prompts), [None] * len(prompts)
        t5_tokens = [self._tokenize(self.tokenizer_2, text, None) for text in prompts]
        negative_row = {}
        for i, negative in enumerate(negatives):
            if negative is not None:
                negative_row[i] = len(texts)
                texts.append(negative)
                lengths.append(t5_tokens[i][0].shape[1])
                t5_tokens.append(self._tokenize(self.tokenizer_2, negative, lengths[-1]))
        clap_rows = []
        for text, length in zip(texts, lengths):
            ids, mask = self._tokenize(self.tokenizer, text, length)
            clap_rows.append({"input_ids": ids, "attention_mask": mask})
        clap = [out["text_embeds"] for out in self._run_rows("text_encoder", clap_rows)]
        t5 = self._t5_states(t5_tokens)
        projected = self._run_rows("projection_model", [
            # one CLAP state per prompt, always attended (``attention_mask.new_ones((batch_size, 1))``)
            {"hidden_states": c, "hidden_states_1": h, "attention_mask": np.ones((1, 1), dtype=np.int64),
             "attention_mask_1": mask} for c, h, (_, mask) in zip(clap, t5, t5_tokens)])
        generated = self.generate_rows([(p["projected_hidden_states"], p["projected_attention_mask"])
                                        for p in projected])
        results = []
        for i in range(len(prompts)):
            rows = [i] if negatives[i] is None else [negative_row[i], i]
            results.append({
                "encoder_hidden_states": np.concatenate([generated[r] for r in rows]).astype(np.float32, copy=False),
                "encoder_hidden_states_1": np.concatenate([t5[r] for r in rows]).astype(np.float32, copy=False),
                "encoder_attention_mask_1": np.concatenate([t5_tokens[r][1] for r in rows]).astype(np.int64,
                                                                                                    copy=False),
            })
        return results

    def _t5_states(self, tokens: Sequence[tuple[np.ndarray, np.ndarray]]) -> list[np.ndarray]:
        """T5 hidden states per row: one call with the rows right-padded to the longest (pad id, masked out:
        T5's relative positions of a row's own tokens do not change), each cut back to its own length."""
        if self.tokenizer_2 is None:
            raise EngineError("the AudioLDM2 conditioner needs tokenizer_2")
        width = max(ids.shape[1] for ids, _ in tokens)
        ids = np.concatenate([np.pad(i, ((0, 0), (0, width - i.shape[1])), constant_values=self.tokenizer_2.pad_id)
                              for i, _ in tokens])
        mask = np.concatenate([np.pad(m, ((0, 0), (0, width - m.shape[1]))) for _, m in tokens])
        states = self.run("text_encoder_2", {"input_ids": ids, "attention_mask": mask})["last_hidden_state"]
        return [states[r:r + 1, :i.shape[1]] for r, (i, _) in enumerate(tokens)]

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

    def generate_rows(self, rows: Sequence[tuple[np.ndarray, np.ndarray]]) -> list[np.ndarray]:
        """``generate_language_model`` (append ``max_new_tokens`` hidden states, return the new ones) for one-row
        ``(inputs_embeds, attention_mask)`` pairs of any lengths, as one batch.

        The rows are left-padded to the longest (masked, so the last position, whose state the step returns, is
        every row's own last token) and every token keeps the position ``arange`` gives it in the row alone, so
        each row equals its run alone. Without ``position_ids`` in the stage, each row runs alone.
        """
        if not self.lm_position_ids and len(rows) > 1:
            return [out for row in rows for out in self.generate_rows([row])]
        steps = int(self.max_new_tokens or 0)
        width = max(e.shape[1] for e, _ in rows)
        embeds = np.concatenate([np.pad(e, ((0, 0), (width - e.shape[1], 0), (0, 0))) for e, _ in rows])
        mask = np.concatenate([np.pad(m, ((0, 0), (width - m.shape[1], 0))) for _, m in rows])
        positions = np.concatenate([np.pad(np.arange(e.shape[1], dtype=np.int64), (width - e.shape[1], 0))[None]
                                    for e, _ in rows])
        embeds, mask = embeds.astype(np.float32, copy=False), mask.astype(np.int64, copy=False)
        for _ in range(steps):
            feeds = {"inputs_embeds": embeds, "attention_mask": mask}
            if self.lm_position_ids:
                feeds["position_ids"] = positions
            step = self.run("language_model", feeds)
            embeds = np.concatenate([embeds, step["next_hidden_state"]], axis=1)
            mask = np.concatenate([mask, np.ones((len(rows), 1), dtype=mask.dtype)], axis=1)
            positions = np.concatenate([positions, positions[:, -1:] + 1], axis=1)
        return [embeds[r:r + 1, embeds.shape[1] - steps:] for r in range(len(rows))]
