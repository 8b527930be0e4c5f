"""Engine folders are read only inside themselves, and a bad manifest or request is one line, never a traceback.

Property-based (hypothesis): random mutations of a real engine manifest through ``inspect`` and the runtime's
readers, and random request values through the Python API and the CLI. Every case either works or ends in
one line with exit 1 or 2, and nothing outside the test's folder changes.
"""

from __future__ import annotations

import copy
import json
import math
import shutil

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from litefocus_export.artifacts.manifest import read_manifest, sha256_file
from litefocus_export.artifacts.manifest_schema import check_manifest
from litefocus_export.cli import main
from litefocus_export.core.errors import EngineError, UsageError
from litefocus_export.core.request import GenerationRequest
from litefocus_export.runtime import EngineFolder

PATH_TRICKS = ["../secret.txt", "/etc/passwd", "a/../../secret.txt", "./unet.onnx", "unet.onnx/", "", "a\\b",
               "nul\0byte", "..", "tokenizer//tokenizer.json"]
ODD_VALUES = [None, True, False, 0, -5, 1, 2, 10**30, -1e308, math.nan, math.inf, "", "x", [], {}, [[[[]]]],
              {"a": {"b": {"c": {}}}}, *PATH_TRICKS]


def deep(levels: int) -> dict:
    value: dict = {}
    for _ in range(levels):
        value = {"x": value}
    return value


@pytest.fixture(scope="module")
def small_engine(tmp_path_factory, tiny_build):
    """A real engine manifest over small stand-in files (hashes right), plus a secret file beside the folder."""
    engines, _, _ = tiny_build
    root = tmp_path_factory.mktemp("small")
    folder = root / "engine"
    folder.mkdir()
    manifest = json.loads((engines / "manifest.json").read_text())
    for rel in manifest["files"]:
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(rel.encode())
        manifest["files"][rel] = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
    (root / "secret.txt").write_text("outside")
    return folder, manifest


def write(folder, manifest) -> None:
    (folder / "manifest.json").write_text(json.dumps(manifest, allow_nan=True))


def paths_of(value, prefix=()):
    """Every (path of keys/indices) in a JSON value, the root included."""
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from paths_of(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from paths_of(item, (*prefix, index))


@st.composite
def mutated(draw, manifest):
    data = copy.deepcopy(manifest)
    for _ in range(draw(st.integers(1, 3))):
        paths = [p for p in paths_of(data) if p]
        path = draw(st.sampled_from(paths))
        parent = data
        for key in path[:-1]:
            parent = parent[key]
        action = draw(st.sampled_from(["delete", "replace", "rename"]))
        if action == "delete":
            del parent[path[-1]]
        elif action == "rename" and isinstance(parent, dict):
            parent[draw(st.sampled_from(PATH_TRICKS))] = parent.pop(path[-1])
        else:
            parent[path[-1]] = draw(st.sampled_from(ODD_VALUES) | st.builds(deep, st.integers(10, 400)))
    return data


def assert_one_line(result) -> None:
    assert result.exit_code in (0, 1, 2), (result.exit_code, result.output)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    if result.exit_code:
        assert len(result.output.strip().splitlines()) == 1 and result.output.startswith("error:"), result.output


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(data=st.data())
def test_mutated_manifests_are_one_line_or_fine(small_engine, data):
    folder, manifest = small_engine
    broken = data.draw(mutated(manifest))
    write(folder, broken)
    before = {p: p.read_bytes() for p in folder.parent.rglob("*") if p.is_file() and p.name != "manifest.json"}
    result = CliRunner().invoke(main, ["inspect", str(folder)])
    assert_one_line(result)
    try:
        check_manifest(broken)
    except EngineError:
        pass
    assert before == {p: p.read_bytes() for p in folder.parent.rglob("*") if p.is_file() and p.name != "manifest.json"}


def test_the_unchanged_manifest_passes(small_engine):
    folder, manifest = small_engine
    write(folder, manifest)
    assert read_manifest(folder)["kind"] == "engine"


@pytest.mark.parametrize("version", [0, -5, True, "1", 1.0, None])
def test_bad_format_versions(small_engine, version):
    folder, manifest = small_engine
    write(folder, {**manifest, "format_version": version})
    with pytest.raises(EngineError, match="format_version must be an integer"):
        read_manifest(folder)


def test_older_format_says_rebuild(small_engine):
    """Format 1 engines take (L, M) samples, not the (L, batch, M) per-row ones: refused in one line."""
    folder, manifest = small_engine
    write(folder, {**manifest, "format_version": 1})
    with pytest.raises(EngineError, match="format version 1: the folder was built by an older version") as info:
        read_manifest(folder)
    assert "rebuild it" in str(info.value) and "\n" not in str(info.value)


def test_newer_format_says_upgrade(small_engine):
    folder, manifest = small_engine
    write(folder, {**manifest, "format_version": 99})
    with pytest.raises(EngineError, match="upgrade"):
        read_manifest(folder)


@pytest.mark.parametrize("key", ["stages", "geometry", "profiles", "model", "backend", "files", "kind"])
def test_missing_keys(small_engine, key):
    folder, manifest = small_engine
    write(folder, {k: v for k, v in manifest.items() if k != key})
    with pytest.raises(EngineError, match=f"missing '{key}'"):
        read_manifest(folder)


@pytest.mark.parametrize("field, value", [("sample_rate", 0), ("hop_length", math.nan), ("vae_scale", -4),
                                          ("mel_bins", True)])
def test_geometry_numbers(small_engine, field, value):
    folder, manifest = small_engine
    write(folder, {**manifest, "geometry": {**manifest["geometry"], field: value}})
    with pytest.raises(EngineError, match=f"geometry.{field} must be an integer"):
        read_manifest(folder)


def test_nan_ratio_and_deep_nesting(small_engine):
    folder, manifest = small_engine
    write(folder, {**manifest, "litefocus": {**manifest["litefocus"], "sparse_ratio": math.nan}})
    with pytest.raises(EngineError, match="sparse_ratio"):
        read_manifest(folder)
    text = json.dumps(manifest)
    for levels, message in ((40, "nested more than"), (100_000, "not valid JSON")):  # json.loads recurses out
        nested = '{"x":' * levels + "{}" + "}" * levels
        (folder / "manifest.json").write_text(text[:-1] + f', "extra": {nested}}}')
        with pytest.raises(EngineError, match=message):
            read_manifest(folder)


@pytest.mark.parametrize("rel", ["../secret.txt", "../nosuch.txt", "/etc/passwd", "a/../../secret.txt"])
def test_listed_paths_outside_the_folder_are_refused_unread(small_engine, rel):
    """Refused by their form, so the message is the same whether the outside file exists or not."""
    folder, manifest = small_engine
    write(folder, {**manifest, "files": {**manifest["files"], rel: {"sha256": "0" * 64, "bytes": 7}}})
    with pytest.raises(EngineError, match="not a normalised path inside the folder|not a relative file path"):
        read_manifest(folder)


def test_a_stage_engine_must_be_listed(small_engine):
    folder, manifest = small_engine
    stages = copy.deepcopy(manifest["stages"])
    stages["vocoder"]["engine"] = "other.onnx"
    write(folder, {**manifest, "stages": stages})
    with pytest.raises(EngineError, match="'other.onnx' is not listed"):
        read_manifest(folder)


def test_a_symlink_out_of_the_folder_is_refused(small_engine, tmp_path):
    folder, manifest = small_engine
    copy_folder = tmp_path / "engine"
    shutil.copytree(folder, copy_folder)
    (copy_folder / "vocoder.onnx").unlink()
    (copy_folder / "vocoder.onnx").symlink_to(folder.parent / "secret.txt")
    secret = folder.parent / "secret.txt"
    entry = {"sha256": sha256_file(secret), "bytes": secret.stat().st_size}
    write(copy_folder, {**manifest, "files": {**manifest["files"], "vocoder.onnx": entry}})
    with pytest.raises(EngineError, match="leads outside the folder"):
        read_manifest(copy_folder)


def test_stages_are_opened_at_load(tiny_build, tmp_path):
    """A folder changed after loading is never read again: every stage is open once EngineFolder exists."""
    engines, _, _ = tiny_build
    copy_folder = tmp_path / "engine"
    shutil.copytree(engines, copy_folder)
    folder = EngineFolder(copy_folder)
    for name in folder.manifest["stages"]:
        folder.runner(name)  # raises for a stage that was not opened
    (copy_folder / "vocoder.onnx").write_bytes(b"swapped")
    waveform = folder.run("vocoder", {"mel": np.zeros((1, 1, 8, 64), np.float32)})["waveform"]
    assert np.isfinite(waveform).all()


# --- requests ---------------------------------------------------------------------------------------------
TEXT = st.text(max_size=40) | st.just("\udcff bad bytes") | st.just("x" * 10_001)
NUMBER = st.floats(allow_nan=True, allow_infinity=True) | st.integers(-10, 2000) | st.none() | st.booleans() \
    | st.text(max_size=5)


@settings(max_examples=250, deadline=None, derandomize=True)
@given(prompt=TEXT, seconds=NUMBER, steps=NUMBER, seed=NUMBER | st.integers(-2**70, 2**70), guidance=NUMBER,
       negative=st.none() | TEXT, scheduler=st.sampled_from(["ddim", "dpm", "euler", ""]))
def test_request_values_are_checked(prompt, seconds, steps, seed, guidance, negative, scheduler):
    try:
        request = GenerationRequest(prompt=prompt, seconds=seconds, steps=steps, seed=seed, guidance=guidance,
                                    negative_prompt=negative, scheduler=scheduler)
    except UsageError:
        return
    assert 0 < request.seconds <= 600 and 1 <= request.steps <= 1000 and 0 <= request.seed < 2**63
    assert request.guidance is None or 1 <= request.guidance <= 20
    request.prompt.encode("utf-8")


CLI_NUMBER = st.sampled_from(["0", "-1", "nan", "inf", "-inf", "1e6", "abc", "", "1.5", "2", "1000", "1001"])


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(option=st.sampled_from(["--seconds", "--steps", "--seed", "--guidance"]), value=CLI_NUMBER,
       prompt=st.sampled_from(["rain", "", "\udcff"]), scheduler=st.sampled_from(["ddim", "dpm"]))
def test_cli_request_values_are_one_line_or_fine(tiny_build, tmp_path_factory, option, value, prompt, scheduler):
    engines, _, _ = tiny_build
    out = tmp_path_factory.mktemp("cli") / "a.wav"
    base = {"--seconds": "1", "--steps": "1", "--seed": "0", "--guidance": "2"}
    args = [x for k, v in {**base, option: value}.items() for x in (k, v)]
    result = CliRunner().invoke(main, ["-q", "generate", "--engines", str(engines), "--prompt", prompt,
                                       "--scheduler", scheduler, *args, "--out", str(out)])
    assert_one_line(result)
    assert out.exists() == (result.exit_code == 0)


def test_too_many_steps_fail_before_any_work(tiny_build, tmp_path, monkeypatch):
    from litefocus_export.runtime.conditioning import TextConditioner

    engines, _, _ = tiny_build

    def no_work(*args, **kwargs):
        raise AssertionError("conditioning ran")

    monkeypatch.setattr(TextConditioner, "encode", no_work)
    for scheduler in ("ddim", "dpm"):
        result = CliRunner().invoke(main, ["generate", "--engines", str(engines), "--prompt", "p", "--seconds", "1",
                                           "--steps", "1000", "--scheduler", scheduler, "--out", str(tmp_path / "a")])
        assert result.exit_code == 2 and "use at most 999" in result.output, result.output
