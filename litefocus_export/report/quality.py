"""``report --quality``: how LiteFocus changes the audio, next to how much faster it makes it.

For each duration the report already generates with the same seed under full and LiteFocus attention and saves
the waveform of each configuration (the ``--accuracy`` path). Two numbers per waveform:

- **CLAP score**: cosine similarity of the prompt's and the waveform's embeddings in the pipeline's own CLAP
  model, as diffusers' ``AudioLDM2Pipeline.score_waveforms`` ranks waveforms (its logits are this cosine times
  CLAP's learned logit scale). The waveform is resampled to the CLAP feature extractor's rate and cut into
  consecutive windows of its input length (10 s), each padded as the extractor pads; the score is their mean, so
  a long generation is scored over its whole length, deterministically (no random crop). AudioLDM's pipeline
  carries only CLAP's text branch: no score there.
- **log-mel distance** to the full-attention waveform of the same duration and backend: the RMS difference, in dB,
  of the two 64-bin log-mel spectrograms (16 kHz, 1024-point STFT, hop 160: the AudioLDM family's mel
  features), averaged over frames. Identical waveforms give exactly 0.

The distance is numpy only (computed in the report process); the scores need torch and run in one child process
after the measurements (``python -m litefocus_export.report.quality JOB.json RESULT.json``), which loads only
the CLAP model, its tokenizer and feature extractor.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

MEL_BINS = 64
N_FFT = 1024
HOP = 160
FMIN, FMAX = 0.0, 8000.0
EPS = 1e-10
NOTE = ("CLAP score: cosine similarity of the prompt and the waveform in the pipeline's own CLAP model (mean over "
        "consecutive 10 s windows; higher is closer to the prompt). Log-mel distance: RMS difference in dB of the "
        "64-bin log-mel spectrograms of the LiteFocus and the full-attention waveform (same seed, duration and "
        "backend), averaged over frames; 0 means identical")
RANDOM_NOTE = ("the model has random weights: these values say nothing about LiteFocus's audio quality (they only "
               "show the pipeline runs); use a real checkpoint (e.g. --model cvssp/audioldm2) for meaningful numbers")


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + np.asarray(hz, dtype=np.float64) / 700.0)


@lru_cache(maxsize=8)
def mel_filters(sample_rate: int, n_fft: int = N_FFT, bins: int = MEL_BINS) -> np.ndarray:
    """Triangular mel filterbank ``(bins, n_fft // 2 + 1)`` (HTK mel scale, FMIN..min(FMAX, Nyquist))."""
    fmax = min(FMAX, sample_rate / 2)
    edges = 700.0 * (10 ** (np.linspace(_hz_to_mel(FMIN), _hz_to_mel(fmax), bins + 2) / 2595.0) - 1.0)
    freqs = np.linspace(0.0, sample_rate / 2, n_fft // 2 + 1)
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (freqs[None, :] - lower) / (centre - lower)
    falling = (upper - freqs[None, :]) / (upper - centre)
    return np.maximum(0.0, np.minimum(rising, falling))


def log_mel(waveform: np.ndarray, sample_rate: int) -> np.ndarray:
    """``(frames, MEL_BINS)`` log10 mel power spectrogram (Hann window, centred frames, reflect padding)."""
    x = np.asarray(waveform, dtype=np.float64).reshape(-1)
    pad = N_FFT // 2
    x = np.pad(x, pad, mode="reflect" if x.size > pad else "constant")
    frames = 1 + (x.size - N_FFT) // HOP
    index = np.arange(N_FFT)[None, :] + HOP * np.arange(frames)[:, None]
    spectrum = np.abs(np.fft.rfft(x[index] * np.hanning(N_FFT + 1)[:-1], axis=1)) ** 2
    return np.log10(spectrum @ mel_filters(sample_rate).T + EPS)


def mel_distance_db(x: np.ndarray, reference: np.ndarray, sample_rate: int) -> float:
    """Mean over frames of the RMS (over mel bins) difference of two log-mel spectrograms, in dB (0: identical).

    Waveforms of different lengths are compared over the shorter one.
    """
    n = min(np.asarray(x).size, np.asarray(reference).size)
    if n == 0:
        return 0.0
    a = log_mel(np.asarray(x).reshape(-1)[:n], sample_rate)
    b = log_mel(np.asarray(reference).reshape(-1)[:n], sample_rate)
    return float(np.mean(np.sqrt(np.mean((10.0 * (a - b)) ** 2, axis=1))))


def resample(waveform: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """Band-limited resampling by zero-padding (or truncating) the spectrum (numpy FFT)."""
    x = np.asarray(waveform, dtype=np.float64).reshape(-1)
    if rate_in == rate_out or x.size == 0:
        return x.astype(np.float32)
    n_out = max(1, round(x.size * rate_out / rate_in))
    spectrum = np.fft.rfft(x)
    out = np.zeros(n_out // 2 + 1, dtype=complex)
    keep = min(out.size, spectrum.size)
    out[:keep] = spectrum[:keep]
    return (np.fft.irfft(out, n_out) * (n_out / x.size)).astype(np.float32)


# --- CLAP scores (torch; run in a child process) ---


class ClapScorer:
    """The pipeline's CLAP model, tokenizer and feature extractor (none of the other components are built)."""

    def __init__(self, model: str):
        from ..core.errors import UsageError
        from ..models import load_component

        try:
            self.model = load_component(model, "text_encoder")
            self.tokenizer = load_component(model, "tokenizer")
            self.features = load_component(model, "feature_extractor")
        except UsageError as exc:
            raise UnavailableError(f"the pipeline has no CLAP audio model ({exc})") from None
        if not hasattr(self.model, "get_audio_features"):
            raise UnavailableError(f"the pipeline's CLAP is {type(self.model).__name__}, its text branch only")
        self.model.eval()

    def score(self, prompt: str, waveform: np.ndarray, sample_rate: int) -> float:
        """Mean cosine similarity of ``prompt`` and the consecutive CLAP-length windows of ``waveform``."""
        import torch

        rate = int(self.features.sampling_rate)
        audio = resample(waveform, sample_rate, rate)
        window = int(self.features.nb_max_samples)
        chunks = [audio[i:i + window] for i in range(0, max(audio.size, 1), window)] or [audio]
        with torch.inference_mode():
            text = self.tokenizer([prompt], return_tensors="pt", padding=True)
            text_embeds = self.model.get_text_features(**text)
            text_embeds = getattr(text_embeds, "pooler_output", text_embeds)
            inputs = self.features([c.astype(np.float32) for c in chunks], return_tensors="pt", sampling_rate=rate)
            audio_embeds = self.model.get_audio_features(input_features=inputs.input_features,
                                                         is_longer=inputs.get("is_longer"))
            audio_embeds = getattr(audio_embeds, "pooler_output", audio_embeds)
            text_embeds = torch.nn.functional.normalize(text_embeds.float(), dim=-1)
            audio_embeds = torch.nn.functional.normalize(audio_embeds.float(), dim=-1)
            return float((audio_embeds @ text_embeds.T).mean())


class UnavailableError(Exception):
    """The model cannot be scored (no CLAP audio branch)."""


def score_files(model: str, prompt: str, files: dict[str, str], sample_rate: int) -> dict[str, Any]:
    """``{"scores": {key: score}, "unavailable": reason or None}`` for each saved waveform file."""
    try:
        scorer = ClapScorer(model)
    except UnavailableError as exc:
        return {"scores": {}, "unavailable": str(exc)}
    scores = {key: scorer.score(prompt, np.load(path), sample_rate) for key, path in files.items()
              if Path(path).is_file()}
    return {"scores": scores, "unavailable": None}


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stderr)
    job = json.loads(Path(argv[0]).read_text())
    import torch

    if job.get("threads"):
        torch.set_num_threads(job["threads"])
    torch.manual_seed(job.get("seed", 0))
    result = score_files(job["model"], job["prompt"], job["files"], job["sample_rate"])
    Path(argv[1]).write_text(json.dumps(result))
    return 0


# --- the report side (torch-free) ---


def sample_rate_of(model: str) -> int:
    from ..models.facts import model_facts

    return model_facts(model).geometry.sample_rate


def score_all(state: Any, work: Path) -> dict[str, Any]:
    """CLAP scores of every saved waveform, in one child process; ``{"scores": {stem: s}, "unavailable",
    "error"}`` (a failure is reported, never raised: the latency numbers stand without it)."""
    from .settings import config_stem, output_path

    s = state.settings
    files = {config_stem(r["seconds"], r["backend"], r["attention"]):
             str(output_path(work, r["seconds"], r["backend"], r["attention"]))
             for r in state.rows if r["status"] == "ok"}
    job_file, result_file = work / "quality.job.json", work / "quality.result.json"
    job = {"model": s.model, "prompt": s.prompt, "files": files, "sample_rate": sample_rate_of(s.model),
           "threads": s.threads, "seed": s.seed}
    job_file.write_text(json.dumps(job))
    proc = subprocess.run([sys.executable, "-m", "litefocus_export.report.quality", str(job_file), str(result_file)],
                          capture_output=True, text=True)
    if proc.returncode != 0 or not result_file.is_file():
        from .machine import failure_reason

        reason = failure_reason(proc)
        log.warning("CLAP scoring failed: %s", reason)
        return {"scores": {}, "unavailable": None, "error": reason}
    return {**json.loads(result_file.read_text()), "error": None}


def add_quality(rows: list[dict[str, Any]], work: Path, clap: dict[str, Any] | None, sample_rate: int) -> None:
    """Each ok row's ``quality``: its CLAP score and, for LiteFocus rows, the log-mel distance to full attention."""
    from .settings import config_stem, output_path

    scores = (clap or {}).get("scores", {})
    for row in rows:
        if row["status"] != "ok":
            row["quality"] = None
            continue
        s, b, a = row["seconds"], row["backend"], row["attention"]
        distance = None
        mine, full = output_path(work, s, b, a), output_path(work, s, b, "full")
        if a == "litefocus" and mine.is_file() and full.is_file():
            distance = mel_distance_db(np.load(mine), np.load(full), sample_rate)
        row["quality"] = {"clap_score": scores.get(config_stem(s, b, a)), "mel_distance_db": distance}


def quality_summary(state: Any) -> dict[str, Any] | None:
    """The top-level ``quality`` entry of report.json (None without ``--quality``)."""
    s = state.settings
    if not getattr(s, "quality", False):
        return None
    clap = getattr(state, "clap", None) or {}
    random_weights = str(s.model).startswith("random:")
    return {"random_weights": random_weights, "note": NOTE, "random_note": RANDOM_NOTE if random_weights else None,
            "clap_unavailable": clap.get("unavailable"), "clap_error": clap.get("error"),
            "scored": bool(clap)}


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
