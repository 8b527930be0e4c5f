"""report.md, rendered from the report.json data only (the numbers are the same, printed with ``fmt_*``)."""

from __future__ import annotations

from typing import Any

from .settings import GROWTH_KEYS

NA = "-"


def fmt_seconds(value: float | None) -> str:
    return NA if value is None else f"{value:.4g}"


def fmt_speedup(value: float | None) -> str:
    return NA if value is None else f"{value:.2f}x"


def fmt_mb(value: float | None) -> str:
    return NA if value is None else f"{value:.0f}"


def fmt_error(value: float | None) -> str:
    return NA if value is None else f"{value:.3e}"


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def _key(row: dict[str, Any]) -> list[str]:
    return [f"{row['seconds']:g}", row["backend"], row["attention"]]


def _pair(value: dict[str, Any] | None, key: str, fmt: Any) -> str:
    return fmt(value.get(key)) if value else NA


def header_section(data: dict[str, Any]) -> list[str]:
    s = data["settings"]
    if s["stages"] == "all":
        what = f"whole generations ({s['steps']} steps, prompt \"{s['prompt']}\")"
        warmup = f"{s['warmup']} warm-up run(s) (1-step generations)"
    else:
        what, warmup = "one UNet evaluation at batch 2 (classifier-free guidance)", f"{s['warmup']} warm-up run(s)"
    progress = f"{data['measured_configurations']} of {data['planned_configurations']} configurations"
    state = ("complete" if data["complete"] else f"**interrupted after {progress}**" if data["interrupted"]
             else f"in progress: {progress}")
    return ["# LiteFocus latency report", "",
            f"Model `{s['model']}`, `--stages {s['stages']}`: {what}. Medians of {s['repeats']} timed repeats after "
            f"{warmup} per configuration, seed {s['seed']}, threads {s['threads'] or 'library default'}, LiteFocus "
            f"sparse ratio {s['sparse_ratio']:g} at latent widths {', '.join(map(str, s['levels']))}. Created "
            f"{data['created']}; {state}.", ""]


def latency_section(data: dict[str, Any]) -> list[str]:
    header = ["audio (s)", "backend", "attention", "UNet step (s)", "end to end (s)", "LiteFocus vs full (step)",
              "LiteFocus vs full (end to end)", "vs PyTorch (step)", "vs PyTorch (end to end)", "peak RSS (MB)",
              "attention GFLOP/step", "status"]
    rows = [_key(r) + [fmt_seconds(r["unet_step_s"]), fmt_seconds(r["end_to_end_s"]),
                       _pair(r["speedup_litefocus_vs_full"], "unet_step", fmt_speedup),
                       _pair(r["speedup_litefocus_vs_full"], "end_to_end", fmt_speedup),
                       _pair(r["speedup_vs_torch"], "unet_step", fmt_speedup),
                       _pair(r["speedup_vs_torch"], "end_to_end", fmt_speedup),
                       fmt_mb(r["peak_rss_mb"]), f"{r['attention_gflop']:.4g}", r["status"]] for r in data["rows"]]
    notes = data["notes"]
    return ["## Latency", "", *table(header, rows), "",
            f"UNet step: {notes['unet_step']}. Speedups are ratios of medians: LiteFocus vs full = full-attention "
            "time / LiteFocus time (same backend and duration); vs PyTorch = PyTorch time / engine time (same "
            f"attention and duration). Peak RSS: {notes['peak_rss']}.", ""]


def stages_section(data: dict[str, Any]) -> list[str]:
    if data["settings"]["stages"] != "all":
        return ["## Per-stage breakdown", "", "Not measured with `--stages unet` (run `--stages all`).", ""]
    header = ["audio (s)", "backend", "attention", "text conditioning (s)",
              f"UNet steps, all {data['settings']['steps']} (s)", "VAE decode (s)", "vocoder (s)", "end to end (s)"]
    keys = ("conditioning_s", "unet_steps_s", "vae_decode_s", "vocoder_s")
    rows = [_key(r) + [_pair(r["stages"], k, fmt_seconds) for k in keys] + [fmt_seconds(r["end_to_end_s"])]
            for r in data["rows"]]
    notes = data["notes"]
    return ["## Per-stage breakdown (medians)", "", *table(header, rows), "",
            f"{notes['torch_stages']}. {notes['engine_stages']}.", "", *stage_memory_section(data),
            *decode_flops_section(data)]


def stage_memory_section(data: dict[str, Any]) -> list[str]:
    """Peak resident memory per stage (``stages=all``), and resident memory between requests."""
    rows = [r for r in data["rows"] if r.get("stage_peak_mb")]
    if not rows:
        return []
    keys = ("conditioning_peak_mb", "unet_steps_peak_mb", "vae_decode_peak_mb", "vocoder_peak_mb")
    header = ["audio (s)", "backend", "attention", "conditioning peak (MB)", "UNet steps peak (MB)",
              "VAE decode peak (MB)", "vocoder peak (MB)", "run peak (MB)", "RSS between requests (MB)"]
    body = [_key(r) + [fmt_mb(r["stage_peak_mb"].get(k)) for k in keys]
            + [fmt_mb(r["peak_rss_mb"]), fmt_mb(r.get("between_requests_rss_mb"))] for r in rows]
    return ["## Peak memory per stage (medians)", "", *table(header, body), "", data["notes"]["stage_peak"] + ".", ""]


def decode_flops_section(data: dict[str, Any]) -> list[str]:
    """GFLOP of the VAE decoder and vocoder (``stages=all``) and the measured time per TFLOP."""
    entry = data.get("decode_flops") or {}
    if not entry.get("per_duration"):
        return []
    header = ["audio (s)", "stage", "conv GFLOP", "attention GFLOP", "total GFLOP"]
    body = [[f"{f['seconds']:g}", name, f"{f[name].get('conv_gflop', 0):.4g}",
             f"{f[name].get('attention_gflop', 0):.4g}", f"{f[name]['total_gflop']:.4g}"]
            for f in entry["per_duration"] for name in ("vae_decoder", "vocoder")]
    return ["## Decode FLOPs (counted on the meta device)", "", *table(header, body), "",
            f"Counted: {entry['formula']}", ""]


def flops_section(data: dict[str, Any]) -> list[str]:
    backends = data["settings"]["backends"]
    header = ["audio (s)", "latent frames", "tokens at patched level", "patched layers", "full GFLOP",
              "LiteFocus GFLOP", "FLOP ratio"] + [f"measured speedup, {b} (step)" for b in backends]
    rows = [[f"{f['seconds']:g}", str(f["latent_frames"]), str(f["patched_tokens"]), str(f["patched_layers"]),
             f"{f['full_gflop']:.4g}", f"{f['litefocus_gflop']:.4g}", fmt_speedup(f["ratio"])]
            + [fmt_speedup(f["measured_unet_step_speedup"].get(b)) for b in backends]
            for f in data["flops"]["per_duration"]]
    return ["## Attention FLOPs per UNet step (analytic)", "", *table(header, rows), "",
            f"Formula: {data['flops']['formula']}. Only the attention matmuls are counted (no projections, "
            "feed-forwards or convolutions), so the whole-UNet FLOP ratio, and the best possible speedup, is smaller.",
            ""]


def accuracy_section(data: dict[str, Any]) -> list[str]:
    if not data["settings"]["accuracy"]:
        return []
    header = ["audio (s)", "backend", "attention", "vs PyTorch max abs", "vs PyTorch max rel",
              "LiteFocus vs full max abs (difference, not a quality score)", "LiteFocus vs full max rel"]
    rows = []
    for r in data["rows"]:
        acc = r["accuracy"] or {}
        rows.append(_key(r) + [_pair(acc.get("vs_torch"), "max_abs", fmt_error),
                               _pair(acc.get("vs_torch"), "max_rel", fmt_error),
                               _pair(acc.get("litefocus_vs_full"), "max_abs", fmt_error),
                               _pair(acc.get("litefocus_vs_full"), "max_rel", fmt_error)])
    what = "waveforms" if data["settings"]["stages"] == "all" else "UNet outputs (noise predictions)"
    return ["## Accuracy", "", *table(header, rows), "", f"Compared: {what}. {data['notes']['accuracy']}.", ""]


def fmt_score(value: float | None) -> str:
    return NA if value is None else f"{value:.4f}"


def fmt_db(value: float | None) -> str:
    return NA if value is None else f"{value:.3f}"


def quality_section(data: dict[str, Any]) -> list[str]:
    """``--quality``: CLAP score and log-mel distance to full attention per waveform (``quality.py``)."""
    q = data.get("quality")
    if not q:
        return []
    header = ["audio (s)", "backend", "attention", "CLAP score", "log-mel distance to full (dB)"]
    rows = [_key(r) + [_pair(r.get("quality"), "clap_score", fmt_score),
                       _pair(r.get("quality"), "mel_distance_db", fmt_db)] for r in data["rows"]]
    notes = [f"{q['note']}."]
    if q["random_weights"]:
        notes.insert(0, f"**Random weights**: {q['random_note']}.")
    if q["clap_unavailable"]:
        notes.append(f"No CLAP score: {q['clap_unavailable']}.")
    elif q["clap_error"]:
        notes.append(f"CLAP scoring failed: {q['clap_error']}.")
    elif not q["scored"]:
        notes.append("CLAP scores are computed after the last configuration.")
    return ["## Quality", "", *table(header, rows), "", *notes, ""]


def growth_section(data: dict[str, Any]) -> list[str]:
    """The fitted exponent k of time ~ seconds^k per stage (and of peak memory), where two or more durations ran."""
    fits = [f for f in data.get("growth") or [] if len(set(f["seconds"])) >= 2]
    if not fits:
        return []
    labels = {"unet_step_s": "UNet step", "conditioning_s": "conditioning", "vae_decode_s": "VAE decode",
              "vocoder_s": "vocoder", "end_to_end_s": "end to end", "peak_rss_mb": "peak RSS"}
    header = ["backend", "attention", "durations (s)"] + [f"k, {labels[key]}" for key in GROWTH_KEYS]
    rows = [[f["backend"], f["attention"], ", ".join(f"{s:g}" for s in sorted(set(f["seconds"])))]
            + [f"{f['exponents'][key]:.2f}" if f["exponents"][key] is not None else "-" for key in GROWTH_KEYS]
            for f in fits]
    note = ("k is the least-squares slope of log(value) against log(seconds): 1 grows linearly with the audio, 2 "
            "quadratically (full attention over all tokens); a stage that did not run (UNet-only reports) is -.")
    return ["## Growth with duration", "", *table(header, rows), "", note, ""]


def precision_section(data: dict[str, Any]) -> list[str]:
    """Which precision each engine computes in, and its stages' errors against fp32 (a precision whose error is
    not shown is not offered)."""
    entries = data.get("engine_precisions") or {}
    if not entries:
        return []
    header = ["engines", "precision", "activations", "built on", "stage errors vs fp32 (rms / max, relative)"]
    rows = []
    for name, e in entries.items():
        errors = ", ".join(f"{stage} {err['rms_rel']:.1e} / {err['max_rel']:.1e}"
                           for stage, err in e["error_vs_fp32"].items()) or "-"
        built_on = f"{e['cpu']} ({', '.join(e['cpu_features'] or []) or 'no bf16/int8 units'})" if e["cpu"] else "-"
        rows.append([name, e["precision"], e["activations"] or e["precision"], built_on, errors])
    return ["## Precision", "", *table(header, rows), ""]


def skipped_section(data: dict[str, Any]) -> list[str]:
    lines = ["## Skipped and failed", ""]
    lines += [f"- skipped: {s['backend']} ({s['attention']} attention): {s['reason']}" for s in data["skipped"]]
    lines += [f"- failed: {f['seconds']:g} s {f['backend']} {f['attention']}: {f['error']}" for f in data["failed"]]
    return lines + (["- nothing"] if len(lines) == 2 else []) + [""]


def machine_section(data: dict[str, Any]) -> list[str]:
    m = data["machine"]
    versions = ", ".join(f"{k} {v}" for k, v in m["versions"].items())
    load = ", ".join(map(str, m["load_average_at_start"] or [])) or "unknown"
    return ["## Machine", "", f"- CPU: {m['cpu']}; {m['logical_cores']} logical cores ({m['physical_cores']} physical, "
            f"{m['usable_cores']} usable by this process); {m['memory_gb']} GB memory",
            f"- OS: {m['os']}; load average at start: {load}", f"- versions: {versions}", ""]


def plots_section(data: dict[str, Any]) -> list[str]:
    if not data["plots"]:
        return []
    return ["## Plots", "", *[f"![{p.removesuffix('.png')}]({p})" for p in data["plots"]], ""]


def render_markdown(data: dict[str, Any]) -> str:
    sections = (header_section, latency_section, stages_section, flops_section, accuracy_section, quality_section,
                growth_section, precision_section, skipped_section, machine_section, plots_section)
    return "\n".join(line for section in sections for line in section(data))
