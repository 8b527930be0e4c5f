"""One seed, the same audio from ``generate --backend torch`` and ``generate --engines``, for every scheduler
(issue 16: DPM-Solver++ took its timestep spacing from different configs on the two backends), and engine
folders exported before scheduler_config.json kept ``_use_default_values``."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import soundfile
from click.testing import CliRunner

from litefocus_export.artifacts.manifest import sha256_file
from litefocus_export.cli import main

# diffusers' DPM scheduler calls np.array on a torch tensor, which numpy 2 flags; not ours to fix
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")

DEFAULT_MODEL = "random:audioldm2-tiny"  # what tiny_build built and the CLI's --model default


def generate(tmp_path, name: str, *args: str) -> np.ndarray:
    out = tmp_path / f"{name}.wav"
    result = CliRunner().invoke(main, ["generate", "--prompt", "rain on a tin roof", *args, "--out", str(out)])
    assert result.exit_code == 0, result.output
    audio, rate = soundfile.read(out, dtype="float32")
    assert rate == 16000
    return audio


@pytest.fixture
def cached_load_pipeline(tiny_pipeline_factory, monkeypatch):
    """``generate --backend torch`` loads its pipeline through ``models.load_pipeline``: hand it a fresh copy of
    the session's tiny pipeline (the same object ``load_pipeline`` builds, scheduler config included) instead
    of building it anew for every call."""
    import litefocus_export.models

    def load(spec: str):
        assert spec == DEFAULT_MODEL, spec
        return tiny_pipeline_factory(spec)

    monkeypatch.setattr(litefocus_export.models, "load_pipeline", load)


# every scheduler, step count and length in the slow run; the default run (<= 8 min, issue 23) keeps one cell per
# scheduler and per step count, both lengths among them
DEFAULT_CELLS = {("ddim", 4, "5.3"), ("ddim", 25, "2"), ("dpm", 10, "2"), ("dpm", 25, "5.3")}
CELLS = [pytest.param(scheduler, steps, seconds, marks=() if (scheduler, steps, seconds) in DEFAULT_CELLS
                      else pytest.mark.slow) for scheduler in ("ddim", "dpm") for steps in (4, 10, 25)
         for seconds in ("2", "5.3")]


@pytest.mark.parametrize("scheduler, steps, seconds", CELLS)
def test_torch_and_engines_give_the_same_audio(tiny_build, cached_load_pipeline, tmp_path, scheduler, steps, seconds):
    engines, _, _ = tiny_build
    request = ["--seconds", seconds, "--steps", str(steps), "--seed", "3", "--scheduler", scheduler]
    expected = generate(tmp_path, "torch", "--backend", "torch", *request)
    got = generate(tmp_path, "engines", "--engines", str(engines), *request)
    assert got.shape == expected.shape == (round(float(seconds) * 16000),)
    assert np.abs(expected).max() > 0
    assert np.abs(got - expected).max() / np.abs(expected).max() <= 1e-3


def test_engine_folder_keeps_the_pipelines_defaulted_keys(tiny_build, tiny_pipeline_factory):
    engines, export, _ = tiny_build
    used = sorted(tiny_pipeline_factory().scheduler.config["_use_default_values"])
    for folder in (engines, export):
        assert json.loads((folder / "scheduler_config.json").read_text())["_use_default_values"] == used


def as_built_before_the_fix(engines, copy):
    """A copy of ``engines`` as an older export wrote it: no ``_use_default_values``, hashes consistent."""
    shutil.copytree(engines, copy)
    path = copy / "scheduler_config.json"
    config = json.loads(path.read_text())
    del config["_use_default_values"]
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["files"]["scheduler_config.json"] = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
    (copy / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return copy


def test_old_folder_still_runs_its_own_scheduler(tiny_build, tmp_path):
    """Without a conversion every saved value is the pipeline's own: the old folder gives the same audio."""
    engines, _, _ = tiny_build
    old = as_built_before_the_fix(engines, tmp_path / "old")
    request = ["--seconds", "2", "--steps", "4", "--seed", "3", "--scheduler", "ddim"]
    np.testing.assert_array_equal(generate(tmp_path, "old", "--engines", str(old), *request),
                                  generate(tmp_path, "new", "--engines", str(engines), *request))


def test_old_folder_refuses_a_conversion(tiny_build, tmp_path):
    engines, _, _ = tiny_build
    old = as_built_before_the_fix(engines, tmp_path / "old")
    out = tmp_path / "x.wav"
    result = CliRunner().invoke(main, ["generate", "--engines", str(old), "--prompt", "p", "--seconds", "2",
                                       "--steps", "4", "--scheduler", "dpm", "--out", str(out)])
    assert result.exit_code == 1 and not out.exists()
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    assert f"{old} was built before scheduler_config.json kept diffusers' _use_default_values" in lines[0]
    assert lines[0].endswith("rebuild it"), lines[0]


def test_a_rebuild_re_exports(tiny_build, monkeypatch):
    """The export cache key carries the export format, so a build after the fix never reuses an old export."""
    from litefocus_export.backends import build

    _, export, settings = tiny_build
    assert build.EXPORT_FORMAT >= 2 and export == build.export_folder(settings, None)
    monkeypatch.setattr(build, "EXPORT_FORMAT", 1)
    assert build.export_folder(settings, None) != export
