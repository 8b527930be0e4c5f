"""report.json (schema_version 1): medians, speedups, FLOPs and errors derived from the measured rows.

``report.md`` and the plots are rendered from this same data (``markdown.py``, ``plots.py``), so the
three outputs always agree. Speedups are ratios of medians: "LiteFocus vs full" divides the full-attention
time by the LiteFocus time (same backend and duration); "vs PyTorch" divides the PyTorch time by the engine
time (same attention and duration).
"""

from __future__ import annotations

import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from .settings import GROWTH_KEYS, output_path, settings_dict

SCHEMA_VERSION = 1
STAGE_KEYS = ("conditioning_s", "unet_steps_s", "vae_decode_s", "vocoder_s")
STAGE_PEAK_KEYS = ("conditioning_peak_mb", "unet_steps_peak_mb", "vae_decode_peak_mb", "vocoder_peak_mb")
NOTES = {
    "peak_rss": "peak resident set size (VmHWM) of the child process that measured the configuration: each "
                "configuration runs in its own process, so model or engine loading is included",
    "torch_stages": "PyTorch: conditioning is everything before the first UNet call (text encoders, language "
                    "model, latents); UNet steps run from the first UNet call to the VAE decode (scheduler "
                    "included); VAE decode and vocoder are the time inside vae.decode and vocoder.forward",
    "engine_stages": "engines: the runtime Sampler's timings (conditioning, UNet steps, decode); decode is split "
                     "into VAE decode (the vae_decoder stage) and vocoder (the rest of decode)",
    "stage_peak": "stages=all: peak resident memory of the process while each stage ran (VmHWM reset when the "
                  "stage starts and read when it ends; weights of every loaded stage included; conditioning also "
                  "covers what runs outside the timed stages); between requests: resident memory (VmRSS) after "
                  "a generation returned",
    "unet_step": "stages=unet: one UNet evaluation at batch 2 (classifier-free guidance) with fixed seeded inputs; "
                 "stages=all: the UNet steps of a generation divided by the number of steps",
    "accuracy": "max_abs = max |x - ref|, max_rel = max |x - ref| / max |ref|, on the first output of each "
                "configuration with the same seed (same noise or UNet inputs, same LiteFocus samples); LiteFocus vs "
                "full is a difference, not a quality score",
}


def median(values: list[float] | None) -> float | None:
    return statistics.median(values) if values else None


def ratio(num: float | None, den: float | None) -> float | None:
    return num / den if num is not None and den else None


def compare(path: Path, ref_path: Path) -> dict[str, Any] | None:
    """max abs and max relative (to the reference's peak) difference of two saved outputs."""
    if not (path.is_file() and ref_path.is_file()):
        return None
    x, ref = np.load(path), np.load(ref_path)
    if x.shape != ref.shape:
        return {"max_abs": None, "max_rel": None, "error": f"shapes differ: {x.shape} vs {ref.shape}"}
    diff = float(np.max(np.abs(x.astype(np.float64) - ref))) if x.size else 0.0
    peak = float(np.max(np.abs(ref))) if ref.size else 0.0
    return {"max_abs": diff, "max_rel": diff / peak if peak else None}


def base_row(raw_row: dict[str, Any], flops: dict[str, Any]) -> dict[str, Any]:
    """Medians of one measured configuration (or its failure)."""
    row = {k: raw_row[k] for k in ("seconds", "backend", "attention", "status", "error")}
    row["latent_frames"] = flops["latent_frames"]
    row["attention_gflop"] = flops[f"{raw_row['attention']}_gflop"]
    raw = raw_row.get("raw") or {}
    row["unet_step_s"] = median(raw.get("unet_step_s"))
    row["end_to_end_s"] = median(raw.get("end_to_end_s"))
    row["stages"] = {k: median(raw.get(k)) for k in STAGE_KEYS} if "end_to_end_s" in raw else None
    row["peak_rss_mb"] = raw.get("peak_rss_mb")
    row["stage_peak_mb"] = ({k: median(raw.get(k)) for k in STAGE_PEAK_KEYS}
                            if any(raw.get(k) for k in STAGE_PEAK_KEYS) else None)
    row["between_requests_rss_mb"] = median(raw.get("between_requests_rss_mb"))
    row["repeats"] = {k: v for k, v in raw.items() if isinstance(v, list)}
    return row


def growth_exponent(seconds: list[float], values: list[float]) -> float | None:
    """``k`` of the least-squares fit ``value ~ c * seconds**k`` (log-log); None for fewer than two durations."""
    points = [(s, v) for s, v in zip(seconds, values) if v is not None and v > 0]
    if len({s for s, _ in points}) < 2:
        return None
    x, y = np.log([s for s, _ in points]), np.log([v for _, v in points])
    return float(np.polyfit(x, y, 1)[0])


def growth(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per backend and attention: the fitted exponent ``k`` of each stage's time (and the peak memory) against the
    audio duration, over the measured durations."""
    configs: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        if row["status"] == "ok":
            configs.setdefault((row["backend"], row["attention"]), []).append(row)
    fits = []
    for (backend, attention), measured in configs.items():
        values = {key: [(r.get("stages") or {}).get(key) if key not in ("unet_step_s", "end_to_end_s", "peak_rss_mb")
                        else r.get(key) for r in measured] for key in GROWTH_KEYS}
        seconds = [r["seconds"] for r in measured]
        fits.append({"backend": backend, "attention": attention, "seconds": seconds,
                     "exponents": {key: growth_exponent(seconds, v) for key, v in values.items()}})
    return fits


def speedup(row: dict[str, Any], other: dict[str, Any] | None) -> dict[str, float | None] | None:
    """``other``'s time over ``row``'s (how much faster ``row`` is)."""
    if other is None or other["status"] != "ok" or row["status"] != "ok":
        return None
    return {"unet_step": ratio(other["unet_step_s"], row["unet_step_s"]),
            "end_to_end": ratio(other["end_to_end_s"], row["end_to_end_s"])}


def add_comparisons(rows: list[dict[str, Any]], work: Path, accuracy: bool) -> None:
    """Speedups (LiteFocus vs full, engine vs PyTorch) and, with ``accuracy``, output differences."""
    by_key = {(r["seconds"], r["backend"], r["attention"]): r for r in rows}
    for row in rows:
        s, b, a = row["seconds"], row["backend"], row["attention"]
        full = by_key.get((s, b, "full")) if a == "litefocus" else None
        torch_row = by_key.get((s, "torch", a)) if b != "torch" else None
        row["speedup_litefocus_vs_full"] = speedup(row, full)
        row["speedup_vs_torch"] = speedup(row, torch_row)
        if accuracy and row["status"] == "ok":
            mine = output_path(work, s, b, a)
            row["accuracy"] = {
                "vs_torch": compare(mine, output_path(work, s, "torch", a)) if torch_row else None,
                "litefocus_vs_full": compare(mine, output_path(work, s, b, "full")) if full else None,
            }
        else:
            row["accuracy"] = None


def add_measured_speedups(flops: list[dict[str, Any]], rows: list[dict[str, Any]], backends: tuple[str, ...]) -> None:
    """Next to each FLOP ratio: the measured LiteFocus-vs-full UNet step speedup of every backend."""
    for entry in flops:
        entry["measured_unet_step_speedup"] = {
            b: next((r["speedup_litefocus_vs_full"]["unet_step"] for r in rows
                     if r["seconds"] == entry["seconds"] and r["backend"] == b and r["speedup_litefocus_vs_full"]),
                    None) for b in backends}


def report_data(state: Any, work: Path) -> dict[str, Any]:
    """The report.json document for the rows measured so far."""
    from .flops import CONTEXT_TOKENS, FORMULA

    flops_by_seconds = {f["seconds"]: f for f in state.flops}
    rows = [base_row(r, flops_by_seconds[r["seconds"]]) for r in state.rows]
    add_comparisons(rows, work, state.settings.accuracy)
    if getattr(state.settings, "quality", False):
        from .quality import add_quality, sample_rate_of

        add_quality(rows, work, state.clap, sample_rate_of(state.settings.model))
    flops = [dict(f) for f in state.flops]
    add_measured_speedups(flops, rows, state.settings.backends)
    return {
        "schema_version": SCHEMA_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(state.started)),
        "complete": not state.interrupted and len(rows) == state.planned,
        "interrupted": state.interrupted,
        "planned_configurations": state.planned,
        "measured_configurations": len(rows),
        "settings": settings_dict(state.settings),
        "machine": state.machine,
        "engines": {f"{b}/{a}": str(p) for (b, a), p in state.engines.items()},
        "engine_precisions": engine_precisions(state.engines),
        "skipped": state.skipped,
        "failed": [{k: r[k] for k in ("seconds", "backend", "attention", "error")} for r in rows
                   if r["status"] != "ok"],
        "flops": {"formula": FORMULA, "context_tokens": CONTEXT_TOKENS, "per_duration": flops},
        **_decode_flops_entry(state),
        "rows": rows,
        "growth": growth(rows),
        "plots": [],
        "notes": NOTES,
        **_quality_entry(state),
    }


def engine_precisions(engines: dict[tuple[str, str], Path]) -> dict[str, Any]:
    """Per engine folder: the precision it computes in, and each stage's measured error against fp32 where the
    build measured it (OpenVINO), read from its manifest."""
    from ..artifacts.manifest import read_manifest

    entries = {}
    for (backend, attention), folder in engines.items():
        manifest = read_manifest(folder, verify_hashes=False)
        entries[f"{backend}/{attention}"] = {
            "precision": manifest["precision"], "activations": manifest["backend"].get("activations"),
            "cpu": manifest["backend"].get("cpu_model"), "cpu_features": manifest["backend"].get("cpu_features"),
            "error_vs_fp32": {name: stage["error_vs_fp32"] for name, stage in manifest["stages"].items()
                              if "error_vs_fp32" in stage}}
    return entries


def _decode_flops_entry(state: Any) -> dict[str, Any]:
    """``{"decode_flops": ...}`` with ``--stages all``: GFLOP of the VAE decoder and vocoder per duration."""
    if state.settings.stages != "all":
        return {}
    from .flops import DECODE_FORMULA, decode_flops

    try:
        per = [{"seconds": s, **decode_flops(state.settings.model, s)} for s in state.settings.seconds]
    except Exception as exc:  # noqa: BLE001 - a model whose decode stages cannot be built on meta: no column
        return {"decode_flops": {"error": str(exc).splitlines()[0] if str(exc) else type(exc).__name__}}
    return {"decode_flops": {"formula": DECODE_FORMULA, "per_duration": per}}


def _quality_entry(state: Any) -> dict[str, Any]:
    """``{"quality": ...}`` with ``--quality`` (``quality.quality_summary``), else nothing."""
    if not getattr(state.settings, "quality", False):
        return {}
    from .quality import quality_summary

    return {"quality": quality_summary(state)}


def write_text(path: Path, text: str) -> None:
    """Write via a temp file and rename, so a Ctrl-C never leaves half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_outputs(state: Any, work: Path) -> dict[str, Any]:
    """Rewrite report.json, report.md and the plots in ``state.settings.out``; returns the JSON data."""
    from .markdown import render_markdown
    from .plots import write_plots

    out = state.settings.out
    data = report_data(state, work)
    data["plots"] = write_plots(data, out)
    write_text(out / "report.json", json.dumps(data, indent=2) + "\n")
    write_text(out / "report.md", render_markdown(data))
    return data
