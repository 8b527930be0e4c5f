"""Waveform output (torch-free): float32 mono WAV files, written atomically."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from .errors import UsageError


def check_output_file(path: str | os.PathLike) -> Path:
    """Fail early, in one line, when a WAV cannot be written to ``path`` (before any generation runs)."""
    path = Path(path)
    if not str(path) or path.is_dir():
        raise UsageError(f"output {str(path)!r} is a folder, not a file name")
    if not path.parent.is_dir():
        raise UsageError(f"output folder does not exist: {path.parent}")
    if not os.access(path.parent, os.W_OK):
        raise UsageError(f"cannot write to {path.parent}: not writable")
    return path


def write_wav(path: str | os.PathLike, waveform: np.ndarray, sample_rate: int) -> Path:
    """Write a mono float32 waveform to ``path`` (a temp file renamed into place: never half-written)."""
    import soundfile

    path = check_output_file(path)
    audio = np.asarray(waveform, dtype=np.float32).reshape(-1)
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
