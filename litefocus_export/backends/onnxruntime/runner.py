"""Run one ONNX Runtime engine stage: numpy in, numpy out (torch-free)."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from ...core.errors import EngineError, first_line
from ...core.heap import return_large_buffers_to_os
from ...core.lifecycle import Closing

CPU_PROVIDERS = ("CPUExecutionProvider",)
ARENA_DEFAULT = os.environ.get("LITEFOCUS_ORT_ARENA", "0") == "1"  # measurements of the arena setting only
# The saved graph is already EXTENDED (builder.SAVED_LEVEL); ALL adds ORT's NCHWc layout transforms at load. They
# pay only in the VAE decoder. random:audioldm2, 2 threads, one run each:
# - UNet step at 160 s: ALL 60.5 s / 6133 MB, EXTENDED 60.9 s / 5361 MB; at 80 s 23.3 s and 23.5-24.4 s;
# - VAE decoder at 40 s: ALL 17.6 s, EXTENDED 19.0 s; at 160 s 3251 MB and 3195 MB;
# - vocoder chunk of 1046 mel frames: ALL 6.65 s, EXTENDED 6.21 s.
LOAD_LEVEL = "ORT_ENABLE_EXTENDED"
LOAD_LEVELS = {"vae_decoder": "ORT_ENABLE_ALL"}


def load_level(stage: str | None) -> str:
    """The graph optimisation level a stage's session loads with (``LOAD_LEVELS``, else ``LOAD_LEVEL``)."""
    return LOAD_LEVELS.get(stage or "", LOAD_LEVEL)


def ort_log_severity() -> int:
    """ONNX Runtime's own log: its warnings (e.g. ~150 "Removing initializer" lines per UNet) only with --debug."""
    return 0 if logging.getLogger("litefocus_export").isEnabledFor(logging.DEBUG) else 3


def session_options(threads: int = 0, arena: bool = False, *, optimization_level: str | None = None,
                    optimized_path: Path | None = None) -> Any:
    """ONNX Runtime session settings, for the runner and the builder alike: intra-op threads, a quiet log, the CPU
    arena on or off (``OrtStage``); a build also names its ``GraphOptimizationLevel`` and the file the optimised
    graph is saved to (weights of 1 KB and more in ``<file>.data`` beside it)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = ort_log_severity()
    options.enable_cpu_mem_arena = arena
    if optimization_level is not None:
        options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, optimization_level)
    if optimized_path is not None:
        options.optimized_model_filepath = str(optimized_path)
        options.add_session_config_entry("session.optimized_model_external_initializers_file_name",
                                         optimized_path.name + ".data")
        options.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes",
                                         "1024")
    return options


class OrtStage(Closing):
    """One ONNX Runtime session: ``stage(feeds) -> {output name: array}``.

    Args:
        path: the stage's ``.onnx`` file.
        providers: ONNX Runtime execution providers, in order of preference.
        threads: intra-op threads (0: ONNX Runtime's default).
        arena: keep ONNX Runtime's CPU memory arena (default False, ``ARENA_DEFAULT``).
        optimization_level: the ``GraphOptimizationLevel`` applied at load (default ``LOAD_LEVEL``;
            ``load_level(stage)`` per stage).

    Memory: by default no stage keeps a CPU arena. With the arena, every session keeps its peak-sized
    chunks after a run (measured at 80 s on random:audioldm2: VAE decoder 2.3 GB, vocoder 1.8 GB, and
    the UNet's on top: 12.4 GB for a whole generation); without it activations are malloc'd and freed
    per run and large blocks go back to the OS, so resident memory falls back between stages and between
    requests. ``memory.enable_memory_arena_shrinkage`` per run is the alternative kept for ``arena=True``
    (it frees the arena's unused chunks after each run). Numbers: README "Memory".

    Feeds may hold extra arrays (ignored). Raises ``EngineError`` (one line) when the file does not load
    or a run fails.
    """

    def __init__(self, path: Path, providers: list[str] | tuple[str, ...] = CPU_PROVIDERS, threads: int = 0,
                 arena: bool | None = None, optimization_level: str = LOAD_LEVEL):
        import onnxruntime as ort

        self.arena = ARENA_DEFAULT if arena is None else arena
        return_large_buffers_to_os()  # before the first run allocates (core/heap.py)
        options = session_options(threads, self.arena, optimization_level=optimization_level)
        self.name = Path(path).name
        try:
            self.session = ort.InferenceSession(str(path), options, providers=list(providers))
        except Exception as exc:  # noqa: BLE001 - ORT's own exception types
            raise EngineError(f"cannot load {self.name}: {first_line(exc)}") from None
        self.inputs = {i.name for i in self.session.get_inputs()}
        self.outputs = [o.name for o in self.session.get_outputs()]
        self.run_options = None
        if self.arena:  # give the arena's free chunks back after every run
            self.run_options = ort.RunOptions()
            shrink = "cpu:0" if "CPUExecutionProvider" == list(providers)[0] else "cpu:0;gpu:0"
            self.run_options.add_run_config_entry("memory.enable_memory_arena_shrinkage", shrink)

    def __call__(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.session is None:
            raise EngineError(f"{self.name} was closed")
        try:
            results = self.session.run(None, {k: v for k, v in feeds.items() if k in self.inputs},
                                       self.run_options)
        except Exception as exc:  # noqa: BLE001 - ORT's own exception types (shapes, memory)
            raise EngineError(f"running {self.name} failed: {first_line(exc)}") from None
        return dict(zip(self.outputs, results))

    def close(self) -> None:
        """Free the session (its weights and arena); calling the stage afterwards is an error."""
        self.session = None
