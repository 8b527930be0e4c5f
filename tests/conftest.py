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


@pytest.fixture(autouse=True, scope="session")
def litefocus_cache(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """One export/engine cache for the whole session: every test that builds shares its exports (CI runs at
    most 4 UNet exports: the tiny AudioLDM2 with LiteFocus and with full attention, AudioLDM, MusicLDM)."""
    cache = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("LITEFOCUS_CACHE", str(cache))
        yield cache


@pytest.fixture(scope="session")
def tiny_build(tmp_path_factory: pytest.TempPathFactory, litefocus_cache: Any) -> Any:
    """The default model exported (with --verify) and built for ONNX Runtime CPU at a 1-80 s profile, once.

    Returns ``(engine folder, export folder, settings)``; the export lives in the session cache.
    """
    from litefocus_export.backends.build import BuildSettings, build_engines, cached_export
    from litefocus_export.export import ExportSettings
    from litefocus_export.profiles import DurationProfile

    settings = BuildSettings(profile=DurationProfile.for_seconds(80), export=ExportSettings(verify=True))
    engines = build_engines(settings, tmp_path_factory.mktemp("build") / "engines")
    return engines, cached_export(settings), settings


@pytest.fixture(scope="session")
def tiny_full_export(litefocus_cache: Any) -> Any:
    """The default model exported with full attention (every stage, verified), in the session cache."""
    from litefocus_export.backends.build import BuildSettings, cached_export
    from litefocus_export.export import ExportSettings

    return cached_export(BuildSettings(export=ExportSettings(attention="full", verify=True)))
