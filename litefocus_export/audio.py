"""Waveform output (torch-free): float32 mono WAV files, written atomically."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from .errors import UsageError


def write_wav(path: str | os.PathLike, waveform: np.ndarray, sample_rate: int) -> Path:
    """Write a mono float32 waveform to ``path`` (a temp file renamed into place: never half-written)."""
    import soundfile

    path = Path(path)
    audio = np.asarray(waveform, dtype=np.float32).reshape(-1)
    if not path.parent.exists():
        raise UsageError(f"output folder does not exist: {path.parent}")
    try:
        fd, tmp = tempfile.mkstemp(suffix=".wav", dir=path.parent)
    except OSError as exc:
        raise UsageError(f"cannot write to {path.parent}: {exc.strerror}") from None
    os.close(fd)
    try:
        soundfile.write(tmp, audio, sample_rate, subtype="FLOAT", format="WAV")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path
