"""Shared fixtures: the tiny random pipelines, built once per session."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread() -> Any:
    """Tiny models gain nothing from intra-op threads; on a busy 2-core machine OpenMP spin-waits make
    them 10-20x slower."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_pipeline_factory() -> Callable[..., Any]:
    """``factory(spec="random:audioldm2-tiny")``: a private copy of a tiny pipeline built once per session.

    Each call returns a deep copy, so a test may patch or modify its pipeline freely.
    """
    from litefocus_export.models import load_pipeline

    built: dict[str, Any] = {}

    def factory(spec: str = "random:audioldm2-tiny") -> Any:
        if spec not in built:
            built[spec] = load_pipeline(spec)
            built[spec].set_progress_bar_config(disable=True)
        return copy.deepcopy(built[spec])

    return factory


@pytest.fixture(scope="session")
def tiny_build(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The default model exported (with --verify) and built for ONNX Runtime CPU at a 1-80 s profile, once.

    Returns ``(engine folder, export folder, settings)``; the export cache lives in a session temp folder.
    """
    from litefocus_export.build import BuildSettings, build_engines, cached_export
    from litefocus_export.export import ExportSettings
    from litefocus_export.profiles import DurationProfile

    root = tmp_path_factory.mktemp("build")
    with pytest.MonkeyPatch.context() as env:  # the export cache of this session, restored at its end
        env.setenv("LITEFOCUS_CACHE", str(root / "cache"))
        settings = BuildSettings(profile=DurationProfile.for_seconds(80), export=ExportSettings(verify=True))
        engines = build_engines(settings, root / "engines")
        yield engines, cached_export(settings), settings
