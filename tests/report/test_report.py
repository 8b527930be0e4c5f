"""``litefocus-export report``: the matrix on the tiny model, outputs consistent, skips listed, Ctrl-C keeps rows."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from litefocus_export.cli import main

# One intra-op thread in the measuring processes, as conftest's one_torch_thread does in this one (tiny models).
MATRIX = ["--seconds", "1,2", "--backends", "torch,onnxruntime,tensorrt", "--attention", "full,litefocus",
          "--threads", "1"]


def run_cli(args: list[str]) -> Any:
    result = CliRunner().invoke(main, ["-q", *args])
    assert result.exit_code == 0, f"{result.output}\n{result.exception!r}"
    return result


@pytest.fixture(scope="module")
def full_report(tiny_build: Any, tiny_full_export: Any,
                tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any], str]:
    """The matrix on the tiny model; its builds take the session's cached exports (no UNet export of its own)."""
    out = tmp_path_factory.mktemp("report") / "out"
    run_cli(["report", *MATRIX, "--steps", "2", "--repeats", "2", "--stages", "all", "--accuracy",
             "--out", str(out)])
    return out, json.loads((out / "report.json").read_text()), (out / "report.md").read_text()


def md_table(markdown: str, heading: str) -> list[dict[str, str]]:
    """The first table under ``## heading`` as one dict per row."""
    section = markdown.split(f"## {heading}", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    return [dict(zip(header, (c.strip() for c in line.strip("|").split("|")))) for line in lines[2:]]


def cell(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def speed(value: dict[str, Any] | None, key: str) -> str:
    return "-" if value is None or value[key] is None else f"{value[key]:.2f}x"


@pytest.mark.slow  # default run <= 8 min (issue 23): the tiny matrix, both attentions, whole generations: ~60 s
class TestFullReport:
    def test_outputs_exist_and_cover_the_matrix(self, full_report):
        out, data, _ = full_report
        assert data["schema_version"] == 1 and data["complete"] and not data["interrupted"]
        assert {p.name for p in out.iterdir()} == {"report.md", "report.json", "latency.png", "speedup.png",
                                                   "memory.png"}
        keys = {(r["seconds"], r["backend"], r["attention"]) for r in data["rows"]}
        assert keys == {(s, b, a) for s in (1.0, 2.0) for b in ("torch", "onnxruntime") for a in ("full", "litefocus")}
        for row in data["rows"]:
            assert row["status"] == "ok", row["error"]
            assert len(row["repeats"]["unet_step_s"]) == 2 and row["unet_step_s"] > 0
            stages = row["stages"]
            assert set(stages) == {"conditioning_s", "unet_steps_s", "vae_decode_s", "vocoder_s"}
            assert sum(stages.values()) <= row["end_to_end_s"] * 1.05 and row["peak_rss_mb"] > 10
            peaks = row["stage_peak_mb"]  # per-stage peak memory (Linux /proc), never above the run's peak
            assert peaks is None or (all(v and v <= row["peak_rss_mb"] + 1 for v in peaks.values())
                                     and row["between_requests_rss_mb"] <= row["peak_rss_mb"] + 1)
        assert {f["seconds"] for f in data["decode_flops"]["per_duration"]} == {1.0, 2.0}

    def test_markdown_tables_print_the_json_numbers(self, full_report):
        _, data, markdown = full_report
        latency = md_table(markdown, "Latency")
        assert len(latency) == len(data["rows"])
        for printed, row in zip(latency, data["rows"]):
            assert printed["audio (s)"] == f"{row['seconds']:g}" and printed["backend"] == row["backend"]
            assert printed["UNet step (s)"] == cell(row["unet_step_s"], ".4g")
            assert printed["end to end (s)"] == cell(row["end_to_end_s"], ".4g")
            assert printed["LiteFocus vs full (step)"] == speed(row["speedup_litefocus_vs_full"], "unet_step")
            assert printed["vs PyTorch (end to end)"] == speed(row["speedup_vs_torch"], "end_to_end")
            assert printed["peak RSS (MB)"] == cell(row["peak_rss_mb"], ".0f")
        stages = md_table(markdown, "Per-stage breakdown")
        for printed, row in zip(stages, data["rows"]):
            assert printed["VAE decode (s)"] == cell(row["stages"]["vae_decode_s"], ".4g")
            assert printed["text conditioning (s)"] == cell(row["stages"]["conditioning_s"], ".4g")
        flops = md_table(markdown, "Attention FLOPs")
        for printed, entry in zip(flops, data["flops"]["per_duration"], strict=True):
            assert printed["FLOP ratio"] == f"{entry['ratio']:.2f}x" and entry["ratio"] > 1
            assert printed["LiteFocus GFLOP"] == f"{entry['litefocus_gflop']:.4g}"

    def test_speedups_are_ratios_of_the_medians(self, full_report):
        _, data, _ = full_report
        by = {(r["seconds"], r["backend"], r["attention"]): r for r in data["rows"]}
        lite, full = by[2.0, "onnxruntime", "litefocus"], by[2.0, "onnxruntime", "full"]
        torch = by[2.0, "torch", "litefocus"]
        assert lite["speedup_litefocus_vs_full"]["unet_step"] == pytest.approx(
            full["unet_step_s"] / lite["unet_step_s"])
        assert lite["speedup_vs_torch"]["end_to_end"] == pytest.approx(torch["end_to_end_s"] / lite["end_to_end_s"])
        assert by[1.0, "torch", "full"]["speedup_vs_torch"] is None

    def test_accuracy_engine_matches_torch(self, full_report):
        _, data, markdown = full_report
        for row in data["rows"]:
            acc = row["accuracy"]
            if row["backend"] == "onnxruntime":
                assert acc["vs_torch"]["max_rel"] < 1e-3, row
            if row["attention"] == "litefocus":
                assert acc["litefocus_vs_full"]["max_abs"] > 0
        assert "difference, not a quality score" in markdown

    def test_tensorrt_is_listed_as_skipped_with_its_reason(self, full_report):
        _, data, markdown = full_report
        assert {(s["backend"], s["attention"]) for s in data["skipped"]} == {("tensorrt", "full"),
                                                                             ("tensorrt", "litefocus")}
        assert all("TensorRT is not installed" in s["reason"] for s in data["skipped"])
        assert re.search(r"skipped: tensorrt \(full attention\): TensorRT is not installed", markdown)

    def test_plots_are_valid_pngs(self, full_report):
        import matplotlib.image

        out, data, markdown = full_report
        for name in ("latency.png", "speedup.png", "memory.png"):
            assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
            height, width, _ = matplotlib.image.imread(out / name).shape
            assert height > 200 and width > 300
            assert f"({name})" in markdown
        assert data["plots"] == ["latency.png", "speedup.png", "memory.png"]

    def test_growth_exponents_fit_the_measured_times(self, full_report):
        """One exponent per configuration and stage: the log-log slope through the measured medians."""
        _, data, markdown = full_report
        lines = md_table(markdown, "Growth with duration")
        assert len(lines) == len(data["growth"]) == 4
        for fit, line in zip(data["growth"], lines):
            rows = sorted((r for r in data["rows"] if (r["backend"], r["attention"]) == (fit["backend"],
                                                                                        fit["attention"])),
                          key=lambda r: r["seconds"])
            (a, b) = rows
            expected = math.log(b["unet_step_s"] / a["unet_step_s"]) / math.log(b["seconds"] / a["seconds"])
            assert fit["exponents"]["unet_step_s"] == pytest.approx(expected)
            assert line["k, UNet step"] == f"{expected:.2f}" and line["backend"] == fit["backend"]

    def test_machine_and_versions_are_recorded(self, full_report):
        _, data, markdown = full_report
        machine = data["machine"]
        assert machine["logical_cores"] >= 1 and machine["cpu"]
        assert {"python", "torch", "onnxruntime"} <= set(machine["versions"]) and data["settings"]["threads"] == 1
        assert f"onnxruntime {machine['versions']['onnxruntime']}" in markdown


def test_unet_stage_mode_reuses_the_engines(tiny_build, tmp_path):
    out = tmp_path / "unet"
    run_cli(["report", "--seconds", "1", "--backends", "torch,onnxruntime", "--attention", "litefocus",
             "--stages", "unet", "--repeats", "1", "--warmup", "0", "--accuracy", "--threads", "1", "--out", str(out)])
    data = json.loads((out / "report.json").read_text())
    assert [(r["backend"], r["status"]) for r in data["rows"]] == [("torch", "ok"), ("onnxruntime", "ok")]
    engine = data["rows"][1]
    assert engine["stages"] is None and engine["end_to_end_s"] is None
    assert engine["accuracy"]["vs_torch"]["max_rel"] < 1e-3
    assert "Not measured with `--stages unet`" in (out / "report.md").read_text()


def test_interrupt_keeps_the_rows_measured(tmp_path, monkeypatch):
    from litefocus_export.report import matrix

    def fake_measure(state, seconds, backend, attention, work):  # noqa: ANN001, ANN202
        if len(state.rows) == 1:
            raise KeyboardInterrupt
        raw = {"unet_step_s": [0.5, 0.7, 0.6], "peak_rss_mb": 123.0}
        return {"seconds": seconds, "backend": backend, "attention": attention, "status": "ok", "error": None,
                "raw": raw}

    monkeypatch.setattr(matrix, "measure_one", fake_measure)
    out = tmp_path / "interrupted"
    result = CliRunner().invoke(main, ["report", "--seconds", "1,2", "--backends", "torch", "--stages", "unet",
                                       "--out", str(out)])
    assert result.exit_code == 130
    data = json.loads((out / "report.json").read_text())
    assert data["interrupted"] and not data["complete"] and data["planned_configurations"] == 4
    assert [r["unet_step_s"] for r in data["rows"]] == [0.6]
    assert "interrupted after 1 of 4 configurations" in (out / "report.md").read_text()
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("args, message", [
    (["--backends", "torch,cuda"], "unknown backend 'cuda'; choices: torch, onnxruntime, tensorrt"),
    (["--attention", "sparse"], "unknown attention 'sparse'"),
    (["--seconds", "0"], "seconds must be a positive number"),
    (["--repeats", "0"], "repeats must be a positive integer"),
])
def test_bad_options_are_one_line_usage_errors(tmp_path, args, message):
    result = CliRunner().invoke(main, ["report", *args, "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and message in result.output, result.output
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("k", [0.5, 1.0, 1.7, 2.0])
def test_growth_exponent_recovers_a_power_law(k):
    from litefocus_export.report.output import growth_exponent

    seconds = [10.0, 20.0, 40.0, 80.0, 160.0, 320.0]
    assert growth_exponent(seconds, [3.0 * s**k for s in seconds]) == pytest.approx(k)
    assert growth_exponent([10.0, 10.0], [1.0, 2.0]) is None and growth_exponent([10.0, 20.0], [1.0, None]) is None


def test_a_failed_measuring_process_says_why(tmp_path):
    from litefocus_export.core.errors import LiteFocusError
    from litefocus_export.report.measure import measure_in_process

    job = {"model": "random:no-such-model", "backend": "torch", "attention": "full", "seconds": 1.0, "stages": "unet",
           "repeats": 1, "warmup": 0, "seed": 0, "threads": 1, "sparse_ratio": 0.1, "levels": [8], "output": None}
    with pytest.raises(LiteFocusError, match="no-such-model failed"):
        measure_in_process(job, tmp_path, "no-such-model")
