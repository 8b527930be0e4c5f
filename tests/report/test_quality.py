"""``report --quality``: CLAP scores and log-mel distances next to the latency matrix, on the tiny model."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from litefocus_export.cli import main
from litefocus_export.report.quality import ClapScorer, mel_distance_db, resample, score_files

SR = 16000
PROMPT = "rain on a tin roof"


def md_table(markdown: str, heading: str) -> list[dict[str, str]]:
    section = markdown.split(f"## {heading}", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    return [dict(zip(header, (c.strip() for c in line.strip("|").split("|")))) for line in lines[2:]]


@pytest.fixture(scope="module")
def quality_report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any], str]:
    out = tmp_path_factory.mktemp("quality") / "out"
    result = CliRunner().invoke(main, ["-q", "report", "--quality", "--seconds", "1", "--backends", "torch",
                                       "--attention", "full,litefocus", "--stages", "all", "--steps", "2",
                                       "--repeats", "1", "--warmup", "0", "--threads", "1", "--prompt", PROMPT,
                                       "--out", str(out)])
    assert result.exit_code == 0, f"{result.output}\n{result.exception!r}"
    return out, json.loads((out / "report.json").read_text()), (out / "report.md").read_text()


class TestMelDistance:
    def test_identical_waveforms_are_zero_apart(self):
        x = np.random.default_rng(0).standard_normal(SR).astype(np.float32) * 0.1
        assert mel_distance_db(x, x.copy(), SR) == 0.0
        assert mel_distance_db(np.zeros(SR), np.zeros(SR), SR) == 0.0

    def test_different_waveforms_are_not(self):
        rng = np.random.default_rng(1)
        x = rng.standard_normal(SR).astype(np.float32) * 0.1
        near, far = x + 0.001 * rng.standard_normal(SR), rng.standard_normal(SR) * 0.1
        d_near, d_far = mel_distance_db(near, x, SR), mel_distance_db(far, x, SR)
        assert 0 < d_near < d_far and math.isfinite(d_far)
        assert mel_distance_db(x[:8000], x, SR) == 0.0  # compared over the shorter one

    def test_resample_keeps_the_tone(self):
        t = np.arange(SR) / SR
        y = resample(np.sin(2 * np.pi * 1000 * t), SR, 48000)
        assert y.size == 48000
        assert np.argmax(np.abs(np.fft.rfft(y))) == 1000  # 1 Hz bins over one second


@pytest.fixture(scope="module")
def scorer() -> ClapScorer:
    return ClapScorer("random:audioldm2-tiny")


class TestClapScore:
    def test_finite_and_deterministic(self, scorer):
        x = np.random.default_rng(2).standard_normal(int(2.5 * SR)).astype(np.float32) * 0.05
        first = scorer.score(PROMPT, x, SR)
        assert math.isfinite(first) and -1 <= first <= 1
        assert scorer.score(PROMPT, x.copy(), SR) == first
        assert scorer.score("a dog barking", x, SR) != first

    def test_audioldm_has_no_clap_audio_model(self, tmp_path):
        path = tmp_path / "x.npy"
        np.save(path, np.zeros(SR, np.float32))
        result = score_files("random:audioldm-tiny", PROMPT, {"x": str(path)}, SR)
        assert result["scores"] == {} and "no CLAP audio model" in result["unavailable"]


@pytest.mark.slow  # default run <= 8 min (issue 23): both attentions, whole generations, CLAP scoring: ~25 s
class TestReport:
    def test_rows_carry_scores_and_distances(self, quality_report):
        out, data, markdown = quality_report
        assert data["settings"]["quality"] and data["complete"]
        rows = {r["attention"]: r for r in data["rows"]}
        assert set(rows) == {"full", "litefocus"} and all(r["status"] == "ok" for r in rows.values())
        for row in rows.values():
            assert math.isfinite(row["quality"]["clap_score"])
        assert rows["full"]["quality"]["mel_distance_db"] is None  # the reference
        assert 0 < rows["litefocus"]["quality"]["mel_distance_db"] < 200
        q = data["quality"]
        assert q["random_weights"] and q["scored"] and q["clap_unavailable"] is None and q["clap_error"] is None
        assert "**Random weights**" in markdown and "say nothing about LiteFocus's audio quality" in markdown

    def test_the_json_equals_the_table(self, quality_report):
        _, data, markdown = quality_report
        table = md_table(markdown, "Quality")
        assert len(table) == len(data["rows"])
        for line, row in zip(table, data["rows"]):
            q = row["quality"]
            assert (line["audio (s)"], line["backend"], line["attention"]) == \
                (f"{row['seconds']:g}", row["backend"], row["attention"])
            assert line["CLAP score"] == f"{q['clap_score']:.4f}"
            expected = "-" if q["mel_distance_db"] is None else f"{q['mel_distance_db']:.3f}"
            assert line["log-mel distance to full (dB)"] == expected

    def test_quality_plot_beside_the_speedup_plot(self, quality_report):
        out, data, markdown = quality_report
        assert data["plots"] == ["latency.png", "speedup.png", "memory.png", "quality.png"]
        assert (out / "quality.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert "![quality](quality.png)" in markdown

    def test_scores_are_deterministic_for_the_seed(self, quality_report, tiny_pipeline_factory, scorer):
        """The same seed in this process gives the same waveform, hence the same score, as the report's child."""
        from litefocus_export.core.request import GenerationRequest
        from litefocus_export.pytorch import generate_torch

        _, data, _ = quality_report
        pipe = tiny_pipeline_factory()
        request = GenerationRequest(prompt=PROMPT, seconds=1, steps=2, seed=0)
        for row in data["rows"]:
            waveform = generate_torch(pipe, request, attention=row["attention"])
            assert scorer.score(PROMPT, waveform, SR) == pytest.approx(row["quality"]["clap_score"], abs=1e-5)


def test_quality_needs_whole_generations(tmp_path):
    result = CliRunner().invoke(main, ["report", "--quality", "--stages", "unet", "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and "needs stages all" in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "out").exists()
