"""PNG plots (matplotlib, Agg): latency vs duration per configuration, speedup vs duration."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

LATENCY_PNG = "latency.png"
SPEEDUP_PNG = "speedup.png"
QUALITY_PNG = "quality.png"
MEMORY_PNG = "memory.png"


def _series(rows: list[dict[str, Any]], key: Any) -> dict[str, tuple[list[float], list[float]]]:
    """``{label: (seconds, values)}`` over the ok rows where ``key(row)`` gives a value."""
    series: dict[str, tuple[list[float], list[float]]] = {}
    for row in rows:
        label_value = key(row) if row["status"] == "ok" else None
        if label_value and label_value[1] is not None:
            xs, ys = series.setdefault(label_value[0], ([], []))
            xs.append(row["seconds"])
            ys.append(label_value[1])
    return series


def _axes(ax: Any, seconds: list[float], ylabel: str, title: str, log_y: bool) -> None:
    from matplotlib.ticker import NullLocator

    ax.set_xscale("log")
    if log_y:
        ax.set_yscale("log")
    ax.set_xticks(seconds, [f"{s:g}" for s in seconds])
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlabel("audio duration (s)")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="small")


def _plot(ax: Any, series: dict[str, tuple[list[float], list[float]]], **style: Any) -> None:
    for label, (xs, ys) in sorted(series.items()):
        ax.plot(xs, ys, marker="o", label=label, **style)


def _save(fig: Any, path: Path) -> None:
    """Save via a temp file and rename, so an interrupted run never leaves half an image."""
    import matplotlib.pyplot as plt

    tmp = path.with_name(f".{path.name}.tmp")
    fig.tight_layout()
    fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    os.replace(tmp, path)


def latency_plot(data: dict[str, Any], path: Path) -> None:
    import matplotlib.pyplot as plt

    rows, seconds = data["rows"], data["settings"]["seconds"]
    label = lambda r: f"{r['backend']} {r['attention']}"  # noqa: E731
    panels = [("unet_step_s", "UNet step (s)")]
    if data["settings"]["stages"] == "all":
        panels.append(("end_to_end_s", "end to end (s)"))
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.5), squeeze=False)
    for ax, (key, name) in zip(axes[0], panels):
        _plot(ax, _series(rows, lambda r, k=key: (label(r), r[k])))
        _axes(ax, seconds, f"median {name}, log scale", f"{name} vs duration", log_y=True)
    fig.suptitle(f"{data['settings']['model']}: latency per configuration")
    _save(fig, path)


def speedup_plot(data: dict[str, Any], path: Path) -> None:
    import matplotlib.pyplot as plt

    rows, seconds = data["rows"], data["settings"]["seconds"]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    lite = _series(rows, lambda r: (f"LiteFocus vs full, {r['backend']}",
                                    (r["speedup_litefocus_vs_full"] or {}).get("unet_step")))
    engine = _series(rows, lambda r: (f"{r['backend']} vs PyTorch, {r['attention']}",
                                      (r["speedup_vs_torch"] or {}).get("unet_step")))
    _plot(ax, lite)
    _plot(ax, engine, linestyle="--")
    flops = [f for f in data["flops"]["per_duration"] if f["ratio"]]
    ax.plot([f["seconds"] for f in flops], [f["ratio"] for f in flops], color="gray", linestyle=":",
            label="attention FLOP ratio full / LiteFocus")
    ax.axhline(1.0, color="black", linewidth=0.8)
    _axes(ax, seconds, "speedup (x), UNet step", "speedup vs duration", log_y=False)
    _save(fig, path)


def memory_plot(data: dict[str, Any], path: Path) -> None:
    """Peak resident memory of each configuration's measuring process against the audio duration."""
    import matplotlib.pyplot as plt

    rows, seconds = data["rows"], data["settings"]["seconds"]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    _plot(ax, _series(rows, lambda r: (f"{r['backend']} {r['attention']}", r.get("peak_rss_mb"))))
    _axes(ax, seconds, "peak RSS (MB), log scale", "peak memory vs duration", log_y=True)
    _save(fig, path)


def quality_plot(data: dict[str, Any], path: Path) -> None:
    """``--quality``: CLAP score per configuration and log-mel distance of LiteFocus to full, vs duration."""
    import matplotlib.pyplot as plt

    rows, seconds = data["rows"], data["settings"]["seconds"]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    score = _series(rows, lambda r: (f"{r['backend']} {r['attention']}", (r.get("quality") or {}).get("clap_score")))
    distance = _series(rows, lambda r: (f"LiteFocus vs full, {r['backend']}",
                                        (r.get("quality") or {}).get("mel_distance_db")))
    _plot(axes[0], score)
    _axes(axes[0], seconds, "CLAP score (cosine)", "CLAP audio-text score vs duration", log_y=False)
    _plot(axes[1], distance)
    _axes(axes[1], seconds, "log-mel distance (dB)", "LiteFocus vs full attention", log_y=False)
    title = f"{data['settings']['model']}: quality"
    fig.suptitle(title + (" (random weights: values mean nothing)" if data["quality"]["random_weights"] else ""))
    _save(fig, path)


def write_plots(data: dict[str, Any], out: Path) -> list[str]:
    """Write the PNGs into ``out`` once some configuration has been measured; returns their file names."""
    if not any(r["status"] == "ok" for r in data["rows"]):
        return []
    import matplotlib

    matplotlib.use("Agg")
    latency_plot(data, out / LATENCY_PNG)
    speedup_plot(data, out / SPEEDUP_PNG)
    memory_plot(data, out / MEMORY_PNG)
    if not data.get("quality"):
        return [LATENCY_PNG, SPEEDUP_PNG, MEMORY_PNG]
    quality_plot(data, out / QUALITY_PNG)
    return [LATENCY_PNG, SPEEDUP_PNG, MEMORY_PNG, QUALITY_PNG]
