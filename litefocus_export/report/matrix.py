"""The report matrix: duration x backend x attention, each configuration measured in a child process.

``run_report`` builds the engines it needs (one build per engine backend and attention mode, for the
longest duration, export cached), then measures every configuration (warm-up, repeats, medians) and
rewrites ``report.md``, ``report.json`` and the plots after each one, so an interrupted run keeps what it
measured. Backends that cannot run here are listed as skipped with the reason, never left out silently.
"""

from __future__ import annotations

import importlib.util
import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from ..core.errors import LiteFocusError
from .measure import MeasureFailed, measure_in_process
from .output import write_outputs
from .settings import ENGINE_BACKENDS, ReportSettings, ReportState, config_stem, output_path, split_variant

log = logging.getLogger(__name__)
def run_report(settings: ReportSettings) -> dict[str, Any]:
    """Measure the matrix and write the outputs; returns the report.json data.

    Raises:
        UsageError: bad settings or an unwritable output folder.
        KeyboardInterrupt: after writing the rows measured so far.
    """
    from ..artifacts.outputs import check_writable_folder
    from .flops import flops_table
    from .machine import machine_info

    check_writable_folder(settings.out)
    settings.out.mkdir(parents=True, exist_ok=True)
    state = ReportState(settings, machine_info(),
                        flops_table(settings.model, list(settings.seconds), settings.sparse_ratio, settings.levels))
    work = Path(tempfile.mkdtemp(prefix=".report-work-", dir=settings.out))
    try:
        build_all(state)
        configs = planned_configs(state)
        state.planned = len(configs)
        write_outputs(state, work)
        measure_all(state, configs, work)
        if settings.quality:
            from .quality import score_all

            log.info("scoring %d waveforms with the pipeline's CLAP model ...", len(state.rows))
            state.clap = score_all(state, work)
        return write_outputs(state, work)
    except KeyboardInterrupt:
        state.interrupted = True
        write_outputs(state, work)
        log.warning("interrupted: %d of %d configurations kept in %s", len(state.rows), state.planned, settings.out)
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)


def build_all(state: ReportState) -> None:
    """One engine folder per engine backend and attention, for the longest duration; failures are skipped."""
    for backend in (b for b in state.settings.backends if split_variant(b)[0] in ENGINE_BACKENDS):
        for attention in state.settings.attention:
            try:
                state.engines[backend, attention] = build_one(state.settings, backend, attention)
            except LiteFocusError as exc:
                log.warning("skipping %s (%s attention): %s", backend, attention, exc)
                state.skipped.append({"backend": backend, "attention": attention, "reason": str(exc)})


def build_one(settings: ReportSettings, variant: str, attention: str) -> Path:
    from ..artifacts.cache import cache_root
    from ..backends.build import BuildSettings, build_engines
    from ..core.durations import DurationProfile
    from ..core.errors import BuildError
    from ..export import ExportSettings

    backend, precision = split_variant(variant)
    if backend == "tensorrt" and importlib.util.find_spec("tensorrt") is None:
        raise BuildError("TensorRT is not installed (pip install 'litefocus-export[gpu]' on an NVIDIA GPU machine)")
    export = ExportSettings(attention=attention, sparse_ratio=settings.sparse_ratio, levels=settings.levels,
                            stages=("unet",) if settings.stages == "unet" else None)
    build = BuildSettings(model=settings.model, profile=DurationProfile.for_seconds(max(settings.seconds)),
                          backend=backend, export=export, engine_precision=precision)
    start = time.perf_counter()
    log.info("building %s engines (%s attention) ...", variant, attention)
    folder = build_engines(build, settings.engines_dir or cache_root() / "report-engines")
    log.info("engines ready in %.1f s: %s", time.perf_counter() - start, folder)
    return folder


def planned_configs(state: ReportState) -> list[tuple[float, str, str]]:
    """Every (seconds, backend, attention) that can run, shortest durations first."""
    s = state.settings
    return [(sec, b, a) for sec in s.seconds for b in s.backends for a in s.attention
            if b == "torch" or (b, a) in state.engines]


def measure_all(state: ReportState, configs: list[tuple[float, str, str]], work: Path) -> None:
    """Measure ``configs`` in order under a progress bar, rewriting the outputs after each."""
    import statistics

    from tqdm.auto import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    with logging_redirect_tqdm(), tqdm(configs, desc="report", unit="config") as bar:
        for seconds, backend, attention in bar:
            bar.set_postfix_str(f"{seconds:g} s {backend} {attention}")
            row = measure_one(state, seconds, backend, attention, work)
            state.rows.append(row)
            done = row["status"] == "ok"
            log.info("%g s %s %s: %s", seconds, backend, attention,
                     f"UNet step {statistics.median(row['raw']['unet_step_s']):.4g} s" if done else row["error"])
            write_outputs(state, work)


def job_for(state: ReportState, seconds: float, backend: str, attention: str, work: Path) -> dict[str, Any]:
    s = state.settings
    engines = state.engines.get((backend, attention))
    runs_on, precision = split_variant(backend)
    return {"model": s.model, "backend": runs_on, "dtype": precision or "fp32",
            "engines": str(engines) if engines else None,
            "attention": attention, "seconds": seconds, "stages": s.stages, "steps": s.steps, "repeats": s.repeats,
            "warmup": s.warmup, "seed": s.seed, "prompt": s.prompt, "threads": s.threads,
            "sparse_ratio": s.sparse_ratio, "levels": list(s.levels),
            "output": str(output_path(work, seconds, backend, attention)) if s.accuracy or s.quality else None}


def measure_one(state: ReportState, seconds: float, backend: str, attention: str, work: Path) -> dict[str, Any]:
    """Run one configuration in a child process (``measure.measure_in_process``); a failure becomes a row with its
    reason."""
    row: dict[str, Any] = {"seconds": seconds, "backend": backend, "attention": attention}
    try:
        raw = measure_in_process(job_for(state, seconds, backend, attention, work), work,
                                 config_stem(seconds, backend, attention))
    except MeasureFailed as exc:
        return {**row, "status": "failed", "error": exc.reason}
    return {**row, "status": "ok", "error": None, "raw": raw}
