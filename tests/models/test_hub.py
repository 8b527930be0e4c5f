"""Models by Hugging Face id, from a cache fabricated in huggingface_hub's own layout, offline.

The cache holds the tiny random AudioLDM2 saved with ``save_pretrained`` under
``models--acme--tiny-audioldm2/{refs/main, refs/v1, snapshots/<commit>/...}`` (the layout
``huggingface_hub.snapshot_download`` reads), so no test touches the network.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile
from click.testing import CliRunner

from litefocus_export.cli import main
from litefocus_export.core.errors import UsageError
from litefocus_export.models import hub
from litefocus_export.models.specs import check_spec, model_record, spec_fingerprint

REPO = "acme/tiny-audioldm2"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
OTHER_COMMIT = "fedcba9876543210fedcba9876543210fedcba98"


def add_snapshot(cache: Path, repo_id: str, commit: str, source: Path, refs: tuple[str, ...] = ("main",)) -> Path:
    """Put ``source`` in ``cache`` as ``repo_id`` at ``commit``, with each ref in ``refs`` pointing at it."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit
    shutil.copytree(source, snapshot)
    for ref in refs:
        (repo / "refs" / ref).parent.mkdir(parents=True, exist_ok=True)
        (repo / "refs" / ref).write_text(commit)
    return snapshot


@pytest.fixture(scope="module")
def saved_tiny(tiny_pipeline_factory: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("saved") / "tiny"
    tiny_pipeline_factory().save_pretrained(folder)
    return folder


@pytest.fixture
def hub_cache(saved_tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An offline hub cache holding acme/tiny-audioldm2 (refs main and v1) and a Stable Diffusion stand-in."""
    cache = tmp_path / "hf" / "hub"
    add_snapshot(cache, REPO, COMMIT, saved_tiny, refs=("main", "v1"))
    other = tmp_path / "sd"
    other.mkdir()
    (other / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    add_snapshot(cache, "acme/stable-diffusion", COMMIT, other)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache


class TestResolve:
    def test_id_revision_and_commit(self, hub_cache):
        for spec, revision in ((REPO, "main"), (f"{REPO}@v1", "v1"), (f"{REPO}@{COMMIT}", COMMIT)):
            snapshot = hub.resolve(spec)
            assert (snapshot.repo_id, snapshot.revision, snapshot.commit) == (REPO, revision, COMMIT)
            assert snapshot.folder == hub_cache / "models--acme--tiny-audioldm2" / "snapshots" / COMMIT
        assert check_spec(REPO) == REPO

    def test_what_is_a_hub_id(self, tmp_path):
        assert hub.looks_like_hub_id("cvssp/audioldm2") and hub.looks_like_hub_id("cvssp/audioldm2@main")
        assert not hub.looks_like_hub_id("random:audioldm2-tiny")
        assert not hub.looks_like_hub_id(str(tmp_path))  # an existing path, and more than one slash
        assert not hub.looks_like_hub_id(tmp_path) and not hub.looks_like_hub_id("./x/y")

    @pytest.mark.parametrize("spec, message", [
        ("acme/absent", "acme/absent@main is not in the Hugging Face cache"),
        (f"{REPO}@v2", "is not in the Hugging Face cache"),
        ("acme/stable-diffusion", "holds a 'StableDiffusionPipeline'; supported pipelines: AudioLDM2Pipeline"),
        ("acme/bad name", "is not a Hugging Face id of the form ORG/NAME[@REVISION]"),
    ])
    def test_one_line_usage_errors(self, hub_cache, spec, message):
        with pytest.raises(UsageError, match=message.replace("[", r"\[").replace("]", r"\]")) as info:
            check_spec(spec)
        assert "\n" not in str(info.value)
        result = CliRunner().invoke(main, ["generate", "--backend", "torch", "--model", spec, "--prompt", "x",
                                           "--out", str(hub_cache.parent / "x.wav")])
        assert result.exit_code == 2 and message.split(";")[0] in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1

    def test_unknown_id_online(self, hub_cache, monkeypatch):
        from unittest.mock import MagicMock

        from diffusers import DiffusionPipeline
        from huggingface_hub.errors import RepositoryNotFoundError

        def missing(*args: Any, **kwargs: Any) -> None:
            response = MagicMock(status_code=404, headers={})
            raise RepositoryNotFoundError("404 Client Error: Repository Not Found", response=response)

        monkeypatch.setenv("HF_HUB_OFFLINE", "0")
        monkeypatch.setattr(DiffusionPipeline, "download", missing)
        assert check_spec("acme/absent") == "acme/absent"  # online: checked when loaded, nothing downloaded yet
        with pytest.raises(UsageError, match="unknown model id 'acme/absent'"):
            spec_fingerprint("acme/absent")

    def test_fingerprint_hashes_configs_and_commit(self, hub_cache, saved_tiny):
        first = spec_fingerprint(REPO)
        assert first == spec_fingerprint(f"{REPO}@v1") == spec_fingerprint(REPO)
        add_snapshot(hub_cache, "acme/copy", OTHER_COMMIT, saved_tiny)
        assert spec_fingerprint("acme/copy") != first  # same configs, other repository and commit
        unet = hub_cache / "models--acme--tiny-audioldm2" / "snapshots" / COMMIT / "unet" / "config.json"
        config = json.loads(unet.read_text())
        unet.write_text(json.dumps({**config, "norm_eps": 1e-6}))
        assert spec_fingerprint(REPO) != first
        record = model_record(f"{REPO}@v1")
        assert record["repo_id"] == REPO and record["revision"] == "v1" and record["commit"] == COMMIT
        assert record["architecture"] is None  # not one of the published checkpoints


def test_export_build_and_generate_from_an_id_offline(hub_cache, tmp_path):
    """export and build the vocoder stage, and generate with torch, from the id alone (no UNet export)."""
    from litefocus_export.artifacts.manifest import read_manifest
    from litefocus_export.backends.build import BuildSettings, build_engines
    from litefocus_export.export import ExportSettings

    out = tmp_path / "export"
    result = CliRunner().invoke(main, ["-q", "export", "--model", f"{REPO}@v1", "--stages", "vocoder",
                                       "--out", str(out)])
    assert result.exit_code == 0, result.output
    model = read_manifest(out)["model"]
    assert (model["repo_id"], model["revision"], model["commit"]) == (REPO, "v1", COMMIT)
    assert model["fingerprint"] == spec_fingerprint(REPO) and model["pipeline"] == "audioldm2"

    settings = BuildSettings(model=REPO, export=ExportSettings(stages=("vocoder",)))
    engines = build_engines(settings, tmp_path / "engines")
    manifest = read_manifest(engines)
    assert manifest["model"]["commit"] == COMMIT and list(manifest["stages"]) == ["vocoder"]
    from litefocus_export.backends.build import engine_key

    other = {**manifest, "model": {**manifest["model"], "fingerprint": "another commit"}}
    assert engine_key(settings, other, manifest["backend"]) != manifest["engine_key"]
    assert engines.name.startswith(f"tiny-audioldm2-{spec_fingerprint(REPO)[:8]}-")

    wavs = {}
    for spec in (REPO, "random:audioldm2-tiny"):
        wav = tmp_path / f"{spec.replace('/', '_').replace(':', '_')}.wav"
        result = CliRunner().invoke(main, ["-q", "generate", "--backend", "torch", "--model", spec, "--prompt",
                                           "rain", "--seconds", "1", "--steps", "2", "--format", "float32",
                                           "--out", str(wav)])
        assert result.exit_code == 0, result.output
        wavs[spec], rate = soundfile.read(wav, dtype="float32")
        assert rate == 16000 and wavs[spec].shape == (16000,) and wavs[spec].std() > 0
    # the cached snapshot is the tiny random pipeline saved: the same weights, so the same audio (as closely as a
    # saved and reloaded pipeline generates, tests/models/test_models.py::test_save_and_reload)
    np.testing.assert_allclose(wavs[REPO], wavs["random:audioldm2-tiny"], rtol=1e-4, atol=1e-5)
