"""An engine folder at run time: its checked manifest and one runner per stage (torch-free)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import EngineError, first_line
from ..geometry import AudioGeometry
from ..manifest import read_manifest
from ..profiles import DurationProfile, require_covered

log = logging.getLogger(__name__)


class EngineFolder:
    """``engines/<model>-<profile>-.../``: refuses a missing, newer-format or tampered folder (one line)."""

    def __init__(self, folder: str | Path, threads: int = 0):
        self.folder = Path(folder)
        self.manifest = read_manifest(self.folder)
        if self.manifest.get("kind") != "engine":
            raise EngineError(f"{self.folder} is a {self.manifest.get('kind')!r} folder, not an engine folder "
                              f"(run litefocus-export build)")
        self.threads = threads
        self._runners: dict[str, Any] = {}

    @property
    def kind(self) -> str:
        return self.manifest["model"]["pipeline"]

    @property
    def geometry(self) -> AudioGeometry:
        data = self.manifest["geometry"]
        return AudioGeometry(data["sample_rate"], data["hop_length"], data["vae_scale"], data["mel_bins"])

    @property
    def latent_channels(self) -> int:
        return int(self.manifest["geometry"]["latent_channels"])

    @property
    def profiles(self) -> list[DurationProfile]:
        return [DurationProfile.from_dict(p) for p in self.manifest["profiles"]]

    def check_covers(self, seconds: float) -> DurationProfile:
        return require_covered(self.profiles, seconds)

    def stage(self, name: str) -> dict[str, Any]:
        try:
            return self.manifest["stages"][name]
        except KeyError:
            raise EngineError(f"{self.folder} has no {name} stage (stages: "
                              f"{', '.join(self.manifest['stages'])})") from None

    def runner(self, name: str) -> Any:
        """A callable ``feeds -> {output name: array}`` for stage ``name`` (opened on first use)."""
        if name not in self._runners:
            self._runners[name] = self._open(name)
        return self._runners[name]

    def run(self, name: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.runner(name)(feeds)

    def _open(self, name: str) -> Any:
        backend = self.manifest["backend"]
        path = self.folder / self.stage(name)["engine"]
        if backend["name"] == "tensorrt":
            from .tensorrt_runner import TrtStage

            return TrtStage(path)
        return OrtStage(path, backend.get("providers", ["CPUExecutionProvider"]), self.threads)


class OrtStage:
    """One ONNX Runtime session; returns outputs by name."""

    def __init__(self, path: Path, providers: list[str], threads: int = 0):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        self.name = path.name
        try:
            self.session = ort.InferenceSession(str(path), options, providers=providers)
        except Exception as exc:  # noqa: BLE001 - ORT's own exception types
            raise EngineError(f"cannot load {path.name}: {first_line(exc)}") from None
        self.inputs = {i.name for i in self.session.get_inputs()}
        self.outputs = [o.name for o in self.session.get_outputs()]

    def __call__(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            results = self.session.run(None, {k: v for k, v in feeds.items() if k in self.inputs})
        except Exception as exc:  # noqa: BLE001 - ORT's own exception types (shapes, memory)
            raise EngineError(f"running {self.name} failed: {first_line(exc)}") from None
        return dict(zip(self.outputs, results))
