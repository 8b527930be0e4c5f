"""The report's measuring runners: torch and engine UNet steps agree, and close what they opened."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from litefocus_export.core.errors import EngineError


def unet_job(tiny_build: Any, backend: str, attention: str = "litefocus") -> dict[str, Any]:
    engines, _, settings = tiny_build
    return {"model": "random:audioldm2-tiny", "backend": backend, "engines": str(engines), "attention": attention,
            "seconds": 2.0, "stages": "unet", "repeats": 1, "warmup": 0, "seed": 3, "threads": 1,
            "sparse_ratio": settings.export.sparse_ratio, "levels": list(settings.export.levels), "output": None}


def test_torch_and_engine_unet_steps_agree_then_refuse_after_close(tiny_build):
    from litefocus_export.models.facts import model_facts
    from litefocus_export.report.measure import EngineUNet, TorchUNet

    facts = model_facts("random:audioldm2-tiny")
    with TorchUNet(unet_job(tiny_build, "torch"), facts) as torch_step:
        expected = torch_step()
    with EngineUNet(unet_job(tiny_build, "onnxruntime"), facts) as engine_step:
        got = engine_step()
    # the same seeded feeds and the same LiteFocus samples stream on both sides
    assert got.shape == expected.shape and np.abs(got - expected).max() <= 1e-3 * np.abs(expected).max()
    for step in (torch_step, engine_step):
        with pytest.raises(EngineError, match="closed"):
            step()


def test_torch_unet_stage_casts_float_feeds_to_the_unet_dtype(tiny_pipeline_factory):
    import torch

    from litefocus_export.core.contract import UNET_OUTPUT, example_unet_feeds, unet_call_arguments, unet_inputs
    from litefocus_export.models.facts import model_facts
    from litefocus_export.pytorch import TorchUNetStage

    facts = model_facts("random:audioldm2-tiny")
    unet = tiny_pipeline_factory().unet.to(torch.bfloat16)
    feeds = example_unet_feeds(unet_inputs(facts.kind, facts.unet_config, facts.geometry.latent_freq_bins), 8, 0)
    with TorchUNetStage(unet) as stage:
        got = stage(feeds)[UNET_OUTPUT]
    sample, timestep, kwargs = unet_call_arguments(
        {k: torch.from_numpy(v).to(torch.bfloat16) if v.dtype == np.float32 else torch.from_numpy(v)
         for k, v in feeds.items()})
    with torch.inference_mode():
        want = unet(sample, timestep, **kwargs, return_dict=False)[0].float().numpy()
    assert got.dtype == np.float32 and np.array_equal(got, want)
