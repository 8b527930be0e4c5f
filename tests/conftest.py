"""Shared fixtures: the tiny random pipelines, built once per session."""

from __future__ import annotations

import copy
import sys
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


def tiny_build_settings() -> Any:
    """The default model, LiteFocus, exported with --verify, for ONNX Runtime CPU at a 1-80 s profile."""
    from litefocus_export.backends.build import BuildSettings
    from litefocus_export.core.durations import DurationProfile
    from litefocus_export.export import ExportSettings

    return BuildSettings(profile=DurationProfile.for_seconds(80), export=ExportSettings(verify=True))


# Default run <= 8 min (issue 23): the tiny UNet export (~85 s of torch.export, one thread) is the run's largest
# cost. The modules that need it run last, and a process on the second core exports it meanwhile into a cache of
# its own, which tiny_build then moves into the session cache (so no test ever waits on its lock or its log).
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    late = {getattr(item, "module", None) for item in items if "tiny_build" in getattr(item, "fixturenames", ())}
    items.sort(key=lambda item: getattr(item, "module", None) in late)  # stable: each module stays in one piece


@pytest.fixture(autouse=True, scope="session")
def tiny_export_prefetch(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """``(process, cache)`` of the background tiny export, or None when no test (or every test) needs it."""
    import os
    import subprocess
    import sys

    users = ["tiny_build" in getattr(item, "fixturenames", ()) for item in request.session.items]
    if not any(users) or all(users) or os.environ.get("LITEFOCUS_TEST_PREFETCH", "1") == "0":
        yield None
        return
    cache = tmp_path_factory.mktemp("prefetch-cache")
    log = open(cache / "prefetch.log", "w")  # noqa: SIM115 - open for the process's lifetime
    process = subprocess.Popen([sys.executable, __file__, "prefetch"], stdout=log, stderr=subprocess.STDOUT,
                               env={**os.environ, "LITEFOCUS_CACHE": str(cache)})
    yield process, cache
    if process.poll() is None:
        process.kill()
    process.wait()
    log.close()


@pytest.fixture(scope="session")
def tiny_build(tmp_path_factory: pytest.TempPathFactory, litefocus_cache: Any, tiny_export_prefetch: Any) -> Any:
    """The default model exported (with --verify) and built for ONNX Runtime CPU at a 1-80 s profile, once.

    Returns ``(engine folder, export folder, settings)``; the export lives in the session cache.
    """
    from litefocus_export.backends.build import build_engines, cached_export, export_folder

    settings = tiny_build_settings()
    if tiny_export_prefetch is not None:
        process, cache = tiny_export_prefetch
        target = export_folder(settings, settings.export.stages)
        with pytest.MonkeyPatch.context() as env:
            env.setenv("LITEFOCUS_CACHE", str(cache))
            prefetched = export_folder(settings, settings.export.stages)
        # a failed prefetch is exported again below, in this process, where its error is reported
        if process.wait(timeout=900) == 0 and prefetched.is_dir() and not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            prefetched.rename(target)
    engines = build_engines(settings, tmp_path_factory.mktemp("build") / "engines")
    return engines, cached_export(settings), settings


@pytest.fixture(scope="session")
def tiny_short_build(tiny_build: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The tiny build's export built again at a 1-3 s profile (serving's second profile; a key that differs)."""
    from dataclasses import replace

    from litefocus_export.backends.build import build_engines
    from litefocus_export.core.durations import DurationProfile

    _, _, settings = tiny_build
    return build_engines(replace(settings, profile=DurationProfile.for_seconds(3)), tmp_path_factory.mktemp("short"))


@pytest.fixture(scope="session")
def tiny_full_export(litefocus_cache: Any) -> Any:
    """The default model exported with full attention (every stage, verified), in the session cache."""
    from litefocus_export.backends.build import BuildSettings, cached_export
    from litefocus_export.export import ExportSettings

    return cached_export(BuildSettings(export=ExportSettings(attention="full", verify=True)))



@pytest.fixture(scope="session")
def openvino_engines(tiny_build: Any, tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Any]:
    """``openvino_engines(precision, seconds=10)``: the tiny build's export as OpenVINO engines (profile 1-seconds),
    built once per session for each argument pair (the backend and serving tests share them)."""
    pytest.importorskip("openvino")
    from dataclasses import replace

    from litefocus_export.backends.build import build_engines
    from litefocus_export.core.durations import DurationProfile

    _, _, settings = tiny_build
    out = tmp_path_factory.mktemp("openvino")
    built: dict[tuple[str, float], Any] = {}

    def engines(precision: str, seconds: float = 10) -> Any:
        if (precision, seconds) not in built:
            built[precision, seconds] = build_engines(replace(settings, backend="openvino", engine_precision=precision,
                                                              profile=DurationProfile.for_seconds(seconds)), out)
        return built[precision, seconds]

    return engines


@pytest.fixture(scope="session")
def openvino_fp32_engines(openvino_engines: Callable[..., Any]) -> Any:
    """The tiny model's OpenVINO fp32 engines, 1-10 s."""
    return openvino_engines("fp32")


if __name__ == "__main__" and sys.argv[1:] == ["prefetch"]:  # tiny_export_prefetch's process
    import torch

    from litefocus_export.backends.build import cached_export

    torch.set_num_threads(1)
    cached_export(tiny_build_settings())
