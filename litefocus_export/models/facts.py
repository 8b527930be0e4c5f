"""What the toolchain needs to know about a model, read from its configs alone (torch-free, nothing built).

``model_facts(spec)`` serves the report and benchmarks (pipeline kind, UNet class and config, audio
geometry) without building a pipeline; ``pipeline_geometry(pipe)`` reads the same geometry off a built one.
Both derive it with ``AudioGeometry.from_configs``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ..core.contract import CONTEXT_FREE_KINDS
from ..core.geometry import AudioGeometry
from .specs import PIPELINE_CLASSES, RANDOM_PREFIX, PipelineKind, folder_kind, local_folder, random_spec


@dataclass(frozen=True)
class ModelFacts:
    """A model spec's pipeline kind, UNet class and config, and audio geometry."""

    spec: str
    kind: PipelineKind
    unet_class: str
    unet_config: dict[str, Any]
    geometry: AudioGeometry

    @property
    def context_free(self) -> bool:
        """Whether the UNet runs without text context (every ``attn2`` is self-attention)."""
        return self.kind in CONTEXT_FREE_KINDS

    @property
    def pipeline_class(self) -> str:
        return next(name for name, kind in PIPELINE_CLASSES.items() if kind == self.kind)


def model_facts(spec: str) -> ModelFacts:
    """Facts of a built-in spec, a snapshot folder or a hub id, from its config files.

    Raises:
        UsageError: unknown spec or a folder without model_index.json.
    """
    if str(spec).startswith(RANDOM_PREFIX):
        rspec = random_spec(str(spec))
        kind, config = rspec.kind, lambda name: rspec.config(name)["config"]
        unet_class = rspec.config("unet")["class"]
    else:
        path = local_folder(spec)
        kind = folder_kind(path)
        config = lambda name: json.loads((path / name / "config.json").read_text())  # noqa: E731
        unet_class = json.loads((path / "model_index.json").read_text())["unet"][1]
    geometry = AudioGeometry.from_configs(config("vocoder"), config("vae"))
    unet_config = {k: v for k, v in config("unet").items() if not k.startswith("_")}
    return ModelFacts(str(spec), kind, unet_class, unet_config, geometry)


def pipeline_geometry(pipe: Any) -> AudioGeometry:
    """The audio geometry of a built pipeline (its vocoder and VAE configs)."""
    return AudioGeometry.from_configs(pipe.vocoder.config, pipe.vae.config)
