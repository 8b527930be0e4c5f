"""Waveform output (torch-free): mono WAV files in 16-bit, 24-bit or float PCM, written safely (``outputs``).

16-bit PCM is the default: every player and Python's own ``wave`` module read it. 32-bit float keeps the
model's output exactly (values past +-1 too), but ``wave`` and many tools cannot read it. PCM formats clip to
[-1, 1], as a DAC would.
"""

from __future__ import annotations

import io
import os

import numpy as np

from ..core.errors import UsageError
from .outputs import OutputFile, check_output_file, write_output

# --format value -> libsndfile subtype
WAV_FORMATS = {"pcm16": "PCM_16", "pcm24": "PCM_24", "float32": "FLOAT"}
DEFAULT_FORMAT = "pcm16"


def encode_wav(waveform: np.ndarray, sample_rate: int, fmt: str = DEFAULT_FORMAT) -> bytes:
    """A mono WAV file's bytes for ``waveform`` (float, any shape: flattened)."""
    import soundfile

    if fmt not in WAV_FORMATS:
        raise UsageError(f"unknown WAV format {fmt!r}; choices: {', '.join(WAV_FORMATS)}")
    audio = np.asarray(waveform, dtype=np.float32).reshape(-1)
    if fmt != "float32":
        audio = np.clip(audio, -1.0, 1.0)
    buffer = io.BytesIO()
    soundfile.write(buffer, audio, int(sample_rate), subtype=WAV_FORMATS[fmt], format="WAV")
    return buffer.getvalue()


def write_wav(path: str | os.PathLike | OutputFile, waveform: np.ndarray, sample_rate: int,
              fmt: str = DEFAULT_FORMAT) -> OutputFile:
    """Write a mono WAV to ``path`` (``-``: standard output): never half-written, never replacing a device,
    a FIFO or what a symbolic link points to (``outputs.check_output_file``)."""
    output = path if isinstance(path, OutputFile) else check_output_file(path)
    write_output(output, encode_wav(waveform, sample_rate, fmt))
    return output
