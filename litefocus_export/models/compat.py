"""Smallest fixes that let the stock diffusers audio pipelines run with transformers 5.

1. MusicLDM: ``MusicLDMPipeline._encode_prompt`` uses ``ClapModel.get_text_features(...)`` as a tensor. In
   transformers 5 it returns a ``BaseModelOutputWithPooling`` (the normalised projection in
   ``pooler_output``), so the pipeline fails with "'BaseModelOutputWithPooling' object has no attribute
   'to'". AudioLDM2's pipeline already unwraps it; MusicLDM (deprecated, frozen) does not. We give the
   pipeline's text encoder an instance-level ``get_text_features`` that returns ``pooler_output``: nothing is
   written to disk, so ``save_pretrained`` output stays a plain ClapModel, and loading re-applies it.
2. AudioLDM2 snapshots name ``GPT2Model`` as the language model (the public checkpoints do). diffusers >= 0.33
   calls ``GenerationMixin`` helpers (``_update_model_kwargs_for_generation``) that only the LM-head class has
   in transformers >= 4.50, so we load that folder as ``GPT2LMHeadModel``: same weights, the LM head is tied
   to the token embedding and its logits are unused.

Known, harmless with transformers 5.24: the pipeline's generation loop passes ``past_key_values=None``
(a FutureWarning: removed in transformers 5.40, renamed ``cache``). GPT2 now returns its KV cache as
``cache`` and ``_update_model_kwargs_for_generation`` stores it under that key, which the diffusers loop
never feeds back, so each of the 8 steps recomputes the whole (short) prefix with the grown attention
mask: the same hidden states as a cached loop, slightly slower.
"""

from __future__ import annotations

import types
from typing import Any

_PATCHED = "_litefocus_pooled_text_features"
# model_index.json entries loaded as another class (see 2. above).
CLASS_SUBSTITUTES = {("transformers", "GPT2Model"): ("transformers", "GPT2LMHeadModel")}


def get_text_features(self: Any, *args: Any, **kwargs: Any) -> Any:
    """``ClapModel.get_text_features`` returning the tensor (``pooler_output``), as in transformers 4."""
    out = type(self).get_text_features(self, *args, **kwargs)
    return getattr(out, "pooler_output", out)


def apply_pipeline_fixes(pipe: Any) -> Any:
    """Apply the in-memory fixes a loaded or built pipeline needs; idempotent. Returns ``pipe``."""
    if type(pipe).__name__ == "MusicLDMPipeline":
        encoder = pipe.text_encoder
        if hasattr(type(encoder), "get_text_features") and not getattr(encoder, _PATCHED, False):
            # A bound method in the instance __dict__ shadows the class method; deepcopy rebinds it.
            encoder.get_text_features = types.MethodType(get_text_features, encoder)
            setattr(encoder, _PATCHED, True)
    return pipe
