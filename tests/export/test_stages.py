"""Non-UNet stage export: every file passes onnx.checker, ONNX Runtime matches PyTorch, bad requests fail."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from litefocus_export.core.errors import UsageError
from litefocus_export.export import stage_modules
from litefocus_export.export.stages import export_stages, save_model, verify_stages
from litefocus_export.models import pipeline_kind

TINY = ["random:audioldm2-tiny", "random:audioldm-tiny", "random:musicldm-tiny"]
EXPECTED_STAGES = {
    "audioldm2": [
        "text_encoder",
        "text_encoder_2",
        "projection_model",
        "language_model",
        "vae_decoder",
        "vocoder",
    ],
    "audioldm": ["text_encoder", "vae_decoder", "vocoder"],
    "musicldm": ["text_encoder", "vae_decoder", "vocoder"],
}



@pytest.fixture(scope="module", params=TINY, ids=lambda spec: spec.split(":")[1])
def exported(request, tiny_pipeline_factory, tmp_path_factory):
    """``(pipe, folder, descriptions, verification)`` of one tiny pipeline, exported once per module."""
    pipe = tiny_pipeline_factory(request.param)
    folder = tmp_path_factory.mktemp(request.param.split(":")[1])
    descriptions = export_stages(pipe, folder)
    return pipe, folder, descriptions, verify_stages(pipe, folder, descriptions)


class TestExportStages:
    def test_every_stage_is_exported(self, exported):
        pipe, folder, descriptions, _ = exported
        assert list(descriptions) == EXPECTED_STAGES[pipeline_kind(pipe)]
        for name, description in descriptions.items():
            assert description["file"] == f"{name}.onnx"
            assert all((folder / f).is_file() for f in description["files"])

    def test_files_pass_the_full_check(self, exported):
        _, folder, descriptions, _ = exported
        for description in descriptions.values():
            onnx.checker.check_model(str(folder / description["file"]), full_check=True)

    def test_descriptions_match_the_graphs(self, exported):
        _, folder, descriptions, _ = exported
        for description in descriptions.values():
            model = onnx.load(str(folder / description["file"]))
            assert [i.name for i in model.graph.input] == list(description["inputs"])
            assert [o.name for o in model.graph.output] == description["outputs"]
            for value in model.graph.input:
                dims = value.type.tensor_type.shape.dim
                assert dims[0].dim_param == "batch"
                for axis, name in description["inputs"][value.name]["dynamic_axes"].items():
                    assert dims[axis].dim_param == name

    def test_onnx_runtime_matches_pytorch(self, exported):
        _, _, descriptions, verification = exported
        assert set(verification) == set(descriptions)
        for name, (max_abs, max_rel) in verification.items():
            assert max_rel <= 1e-4, (name, max_abs, max_rel)

    def test_side_files(self, exported):
        pipe, folder, descriptions, _ = exported
        assert (folder / "tokenizer" / "tokenizer.json").is_file()
        assert (folder / "tokenizer_2" / "tokenizer.json").is_file() == (pipeline_kind(pipe) == "audioldm2")
        config = json.loads((folder / "scheduler_config.json").read_text())
        assert config["_class_name"] == type(pipe.scheduler).__name__
        assert {k: config[k] for k in ("beta_start", "beta_end", "steps_offset")} == {
            k: pipe.scheduler.config[k] for k in ("beta_start", "beta_end", "steps_offset")
        }
        if "language_model" in descriptions:
            assert descriptions["language_model"]["metadata"]["litefocus.max_new_tokens"] == "8"


class TestStageSelection:
    def test_subset(self, tiny_pipeline_factory, tmp_path):
        pipe = tiny_pipeline_factory("random:audioldm2-tiny")
        descriptions = export_stages(pipe, tmp_path, stages=["projection_model"])
        assert list(descriptions) == ["projection_model"]
        assert not (tmp_path / "vocoder.onnx").exists()

    @pytest.mark.parametrize(
        "spec, stage",
        [
            ("random:audioldm2-tiny", "unet"),
            ("random:audioldm2-tiny", "vae"),
            ("random:audioldm-tiny", "text_encoder_2"),
        ],
    )
    def test_unknown_stage(self, tiny_pipeline_factory, tmp_path, spec, stage):
        with pytest.raises(UsageError, match=rf"unknown stage\(s\) '{stage}' .*valid stages: text_encoder, "):
            export_stages(tiny_pipeline_factory(spec), tmp_path, stages=[stage])

    def test_unknown_precision(self, tiny_pipeline_factory, tmp_path):
        with pytest.raises(UsageError, match="unknown precision 'int8'; valid: fp32, fp16"):
            export_stages(tiny_pipeline_factory("random:audioldm-tiny"), tmp_path, precision="int8")


def test_export_leaves_the_pipeline_unchanged(tiny_pipeline_factory, tmp_path):
    """Exporters switch modules to eval and back: the pipeline keeps its modes, weights and outputs."""
    pipe = tiny_pipeline_factory("random:audioldm2-tiny")
    models = [pipe.text_encoder, pipe.text_encoder_2, pipe.projection_model, pipe.language_model]
    modes = [[m.training for m in model.modules()] for model in models]
    ids = torch.tensor([[5, 6, 7, 1]])
    with torch.no_grad():
        before = pipe.text_encoder_2(ids).last_hidden_state
    export_stages(
        pipe, tmp_path, stages=["text_encoder", "text_encoder_2", "projection_model", "language_model"]
    )
    assert [[m.training for m in model.modules()] for model in models] == modes
    with torch.no_grad():
        torch.testing.assert_close(pipe.text_encoder_2(ids).last_hidden_state, before, rtol=0, atol=0)


def test_dynamo_exporter(tiny_pipeline_factory, tmp_path, monkeypatch):
    """The fallback exporter gives a graph with the same names, axes and accuracy."""
    pipe = tiny_pipeline_factory("random:audioldm2-tiny")
    spec = dataclasses.replace(stage_modules._COMMON["projection_model"], exporter="dynamo")
    monkeypatch.setitem(stage_modules._COMMON, "projection_model", spec)
    descriptions = export_stages(pipe, tmp_path, stages=["projection_model"], precision="fp16")
    description = descriptions["projection_model"]
    assert description["exporter"] == "dynamo" and description["precision"] == "fp32"
    assert description["inputs"]["hidden_states_1"]["shape"] == ["batch", "text_tokens", 48]
    assert description["outputs"] == ["projected_hidden_states", "projected_attention_mask"]
    _, max_rel = verify_stages(pipe, tmp_path, descriptions)["projection_model"]
    assert max_rel <= 1e-4


def test_external_data(exported, tmp_path):
    """Past 2 GB the weights go to ``<stage>.onnx.data``; the checker and ONNX Runtime read both files."""
    _, folder, descriptions, _ = exported
    model = onnx.load(str(folder / descriptions["vocoder"]["file"]))
    files = save_model(model, tmp_path / "vocoder.onnx", external=True)
    assert files == ["vocoder.onnx", "vocoder.onnx.data"]
    mel = np.random.default_rng(0).standard_normal((1, 1, 8, 64)).astype(np.float32)
    runs = [
        ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"mel": mel})[0]
        for path in (folder / "vocoder.onnx", tmp_path / "vocoder.onnx")
    ]
    np.testing.assert_array_equal(*runs)


def test_verify_fails_past_the_tolerance_in_one_line_and_writes_nothing(tmp_path, monkeypatch):
    """``export --verify`` is a check, not a report: an error past the precision's tolerance fails the export."""
    from click.testing import CliRunner

    from litefocus_export.cli import main
    from litefocus_export.export import verify

    out = tmp_path / "export"
    args = ["export", "--stages", "vocoder", "--verify", "--out", str(out)]
    monkeypatch.setitem(verify.STAGE_TOLERANCE, ("vocoder", "fp32"), 0.0)  # any rounding difference fails
    result = CliRunner().invoke(main, args)
    lines = result.output.strip().splitlines()
    assert result.exit_code == 1 and len(lines) == 1, result.output
    assert "vocoder max rel" in lines[0] and "beyond the fp32 tolerance" in lines[0]
    assert not out.exists() and not list(tmp_path.glob(".*partial*"))
    monkeypatch.delitem(verify.STAGE_TOLERANCE, ("vocoder", "fp32"))
    assert CliRunner().invoke(main, args).exit_code == 0 and (out / "manifest.json").is_file()
