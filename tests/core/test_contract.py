"""The shared contract (docs/design.md §2 in code): names, example inputs, samples, settings checks."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from litefocus_export.core import contract
from litefocus_export.core.errors import UsageError
from litefocus_export.models import model_facts

LAYERS = [{"name": f"l{i}", "level": 1, "width": 8} for i in range(3)] + [{"name": "m", "level": 2, "width": 4}]


@pytest.mark.parametrize("spec", ["random:audioldm2-tiny", "random:audioldm-tiny", "random:audioldm2"])
def test_unet_inputs_follow_the_model_config(spec):
    facts = model_facts(spec)
    inputs = contract.unet_inputs(facts.kind, facts.unet_config, facts.geometry.latent_freq_bins, LAYERS)
    assert list(inputs)[:2] == ["sample", "timestep"]
    assert inputs["sample"]["shape"] == ["batch", facts.unet_config["in_channels"], "latent_frames", 16]
    assert inputs["litefocus_index_8"] == {"dtype": "int64", "dynamic_axes": {1: "batch", 2: "samples_8"},
                                           "shape": [3, "batch", "samples_8"]}
    assert inputs["litefocus_index_4"]["shape"] == [1, "batch", "samples_4"]
    conditioning = {"audioldm2": ["encoder_hidden_states", "encoder_hidden_states_1", "encoder_attention_mask_1"],
                    "audioldm": ["class_labels"]}[facts.kind]
    assert [n for n in inputs if n not in ("sample", "timestep") and not n.startswith("litefocus_")] == conditioning


def test_example_feeds_are_seeded_and_shaped():
    facts = model_facts("random:audioldm2-tiny")
    inputs = contract.unet_inputs(facts.kind, facts.unet_config, 16, LAYERS)
    feeds = contract.example_unet_feeds(inputs, 21, seed=3, layers=LAYERS, sparse_ratio=0.1, batch=1)
    again = contract.example_unet_feeds(inputs, 21, seed=3, layers=LAYERS, sparse_ratio=0.1, batch=1)
    assert all(np.array_equal(feeds[k], again[k]) for k in feeds)
    assert feeds["sample"].shape == (1, facts.unet_config["in_channels"], 21, 16)
    assert feeds["encoder_hidden_states_1"].shape[1] == contract.EXAMPLE_TOKENS["text_tokens"]
    assert feeds["encoder_attention_mask_1"].dtype == np.int64 and feeds["encoder_attention_mask_1"].all()
    # level 1 of 21 frames: 11 frames x 8 bins = 88 tokens, 8 samples each, distinct and in range
    index = feeds["litefocus_index_8"]
    assert index.shape == (3, 1, 8) and all(len(set(row)) == 8 for row in index[:, 0]) and index.max() < 88
    two = contract.example_unet_feeds(inputs, 21, seed=3, layers=LAYERS, sparse_ratio=0.1, batch=2)
    assert two["litefocus_index_8"].shape == (3, 2, 8) and two["litefocus_index_4"].shape == (1, 2, 2)
    assert not np.array_equal(two["litefocus_index_8"][:, 0], two["litefocus_index_8"][:, 1])  # rows differ
    without = contract.example_unet_feeds(inputs, 21, seed=3, batch=1)
    assert not any(k.startswith("litefocus_") for k in without)
    assert np.array_equal(without["sample"], feeds["sample"])


def test_samples_drawn_in_layer_order_with_a_minimum():
    rng = np.random.default_rng(0)
    samples = contract.draw_unet_samples(rng, LAYERS, 5, 0.0, minimum=2)
    assert samples["litefocus_index_8"].shape == (3, 1, 2) and samples["litefocus_index_4"].shape == (1, 1, 2)
    empty = contract.draw_unet_samples(np.random.default_rng(0), LAYERS, 5, 0.0, rows=[0, 0])
    assert empty["litefocus_index_8"].shape == (3, 2, 0)
    assert contract.draw_unet_samples(rng, [], 5, 0.1) == {}


def test_one_request_draws_as_before():
    """A request's draw is layer by layer in execution order from its own generator (what PyTorch draws)."""
    from litefocus_export.core.seeds import draw_sample_index

    rng = np.random.default_rng(7)
    expected = [draw_sample_index(rng, 3 * 8, 0.5) for _ in range(3)] + [draw_sample_index(rng, 2 * 4, 0.5)]
    drawn = contract.draw_request_samples(np.random.default_rng(7), LAYERS, 5, 0.5)
    assert np.array_equal(drawn["litefocus_index_8"], np.stack(expected[:3]))
    assert np.array_equal(drawn["litefocus_index_4"], expected[3][None])
    guided = contract.draw_unet_samples(np.random.default_rng(7), LAYERS, 5, 0.5, rows=[0, 0])
    assert all(np.array_equal(guided[k][:, b], drawn[k]) for k in drawn for b in (0, 1))


def test_batch_rows_get_their_requests_samples():
    """Guided batch of 3 requests: rows [uncond 0, 1, 2, cond 0, 1, 2]; row b belongs to request b % 3."""
    seeds = (11, 12, 13)
    rows = [0, 1, 2] * 2
    batch = contract.draw_unet_samples([np.random.default_rng(s) for s in seeds], LAYERS, 5, 0.5, rows)
    alone = [contract.draw_request_samples(np.random.default_rng(s), LAYERS, 5, 0.5) for s in seeds]
    assert batch["litefocus_index_8"].shape == (3, 6, 12) and batch["litefocus_index_4"].shape == (1, 6, 4)
    assert batch["litefocus_index_8"].flags.c_contiguous
    for b, request in enumerate(rows):
        assert b % 3 == request
        assert all(np.array_equal(batch[k][:, b], alone[request][k]) for k in alone[request])
    assert not np.array_equal(batch["litefocus_index_8"][:, 0], batch["litefocus_index_8"][:, 1])
    placed = contract.place_samples(alone, [2, 0])
    assert np.array_equal(placed["litefocus_index_8"][:, 0], alone[2]["litefocus_index_8"])
    with pytest.raises(UsageError, match="batch rows"):
        contract.place_samples(alone, [0, 3])


def test_unet_call_arguments_apply_the_class_labels_rule():
    sample, timestep, kwargs = contract.unet_call_arguments(
        {"sample": 1, "timestep": 2, "class_labels": 3, "litefocus_index_8": 4})
    assert (sample, timestep) == (1, 2) and kwargs == {"class_labels": 3, "encoder_hidden_states": None}
    _, _, kwargs = contract.unet_call_arguments({"sample": 1, "timestep": 2, "encoder_hidden_states": 5})
    assert kwargs == {"encoder_hidden_states": 5}


def test_names():
    assert contract.index_input_name(8) == "litefocus_index_8"
    assert contract.samples_dim_width(contract.samples_dim(8)) == 8
    assert contract.samples_dim_width("samples_") is None and contract.samples_dim_width("batch") is None
    assert contract.pipeline_stages("audioldm") == ("unet", "text_encoder", "vae_decoder", "vocoder")
    with pytest.raises(UsageError, match="unknown pipeline kind"):
        contract.pipeline_stages("sd")


@pytest.mark.parametrize("ratio", [-0.1, 1.5, float("nan"), "x", None, True])
def test_bad_sparse_ratio(ratio):
    with pytest.raises(UsageError, match="sparse_ratio"):
        contract.check_sparse_ratio(ratio)


@pytest.mark.parametrize("levels", [(), (0,), (-8,), ("8",), (8.5,), 8, None])
def test_bad_levels(levels):
    with pytest.raises(UsageError, match="levels"):
        contract.check_levels(levels)


def test_settings_objects_check_their_values():
    from litefocus_export.backends.build import BuildSettings
    from litefocus_export.export import ExportSettings
    from litefocus_export.report import ReportSettings

    assert BuildSettings().export == ExportSettings()
    for make, message in [(lambda: BuildSettings(backend="x"), "backend"),
                          (lambda: BuildSettings(device="tpu"), "device"),
                          (lambda: BuildSettings(model="random:nope"), "unknown model spec"),
                          (lambda: BuildSettings(export=None), "ExportSettings"),
                          (lambda: ExportSettings(sparse_ratio=2), "sparse_ratio"),
                          (lambda: ExportSettings(levels=()), "levels"), (lambda: ExportSettings(opset=17), "opset"),
                          (lambda: ExportSettings(stages=()), "at least one stage"),
                          (lambda: ReportSettings(out="x", levels=(0,)), "levels"),
                          (lambda: ReportSettings(out="x", repeats=0), "repeats")]:
        with pytest.raises(UsageError, match=message):
            make()


@pytest.mark.parametrize("args", [
    ["build", "--sparse-ratio", "1.5", "--seconds", "5"],
    ["build", "--levels", "0", "--seconds", "5"],
    ["build", "--model", "random:nope"],
    ["export", "--sparse-ratio", "-1", "--out", "{tmp}/e"],
    ["generate", "--prompt", "x", "--sparse-ratio", "2", "--out", "{tmp}/a.wav"],
    ["generate", "--prompt", "x", "--out", "{tmp}/missing/a.wav"],
    ["report", "--levels", "x", "--out", "{tmp}/r"],
])
def test_bad_cli_values_cost_nothing_but_one_line(tmp_path, monkeypatch, args):
    """Checked before any model load, export or progress output: one line, exit 2, nothing written."""
    from litefocus_export import cli

    monkeypatch.setenv("LITEFOCUS_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli.main, [a.replace("{tmp}", str(tmp_path)) for a in args])
    assert result.exit_code == 2, result.output
    assert len(result.output.strip().splitlines()) == 1 and result.output.startswith("error:"), result.output
    assert list(tmp_path.iterdir()) == []
