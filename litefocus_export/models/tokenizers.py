"""Tokenizers built in code, with no download: a byte-level RoBERTa (CLAP) and a small unigram T5.

Both are the pipelines' own transformers classes (``RobertaTokenizer``, ``T5Tokenizer``; in transformers 5
these are the ``tokenizers``-backed classes), so ``save_pretrained`` writes an ordinary ``tokenizer.json``
and ``from_pretrained`` reads it back. The vocabularies are small but keep the real special-token ids
(RoBERTa: ``<s>`` 0, ``<pad>`` 1, ``</s>`` 2; T5: ``<pad>`` 0, ``</s>`` 1, ``<unk>`` 2), so every id lies
inside both the tiny and the real-size embedding tables.
"""

from __future__ import annotations

import string
from typing import Any

# Words that the T5 tokenizer keeps whole, so prompts get roughly real token counts.
_WORDS = (
    "a an the of and with in on at to from by is are while sound sounds music noise voice speech man woman "
    "dog cat bird birds car train rain wind water waves ocean engine bell drum drums piano guitar violin "
    "barking meowing chirping singing talking playing running ringing hitting wooden metal surface loud "
    "soft quiet fast slow low high beat techno jazz rock classical ambient background distance"
).split()


def roberta_tokenizer(model_max_length: int = 512) -> Any:
    """Byte-level BPE over the 256-symbol byte alphabet (no merges): every text encodes, ids < 261."""
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import RobertaTokenizer

    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    for symbol in sorted(ByteLevel.alphabet()):
        vocab[symbol] = len(vocab)
    vocab["<mask>"] = len(vocab)
    return RobertaTokenizer(vocab=vocab, merges=[], model_max_length=model_max_length)


def t5_tokenizer(model_max_length: int = 128) -> Any:
    """Unigram over printable ASCII plus a few whole words; other characters map to ``<unk>``."""
    from transformers import T5Tokenizer

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    pieces += [(ch, -5.0) for ch in string.ascii_letters + string.digits + string.punctuation]
    pieces += [("\u2581" + word, -1.0) for word in _WORDS]
    return T5Tokenizer(vocab=pieces, extra_ids=0, model_max_length=model_max_length)
