"""Model specs and pipelines: offline random-weight AudioLDM2 / AudioLDM / MusicLDM, local snapshots, hub ids.

Importing this package is torch-free (``BUILTIN_SPECS``, ``spec_fingerprint``); torch, transformers and
diffusers load when a pipeline or component is built.
"""

from .facts import ModelFacts, model_facts, pipeline_geometry
from .loading import load_component, load_pipeline, load_unet, pipeline_kind
from .random_build import build_component, build_random_pipeline
from .specs import BUILTIN_SPECS, DEFAULT_SPEC, PipelineKind, RandomSpec, random_spec, spec_fingerprint

__all__ = [
    "BUILTIN_SPECS",
    "DEFAULT_SPEC",
    "ModelFacts",
    "PipelineKind",
    "RandomSpec",
    "build_component",
    "build_random_pipeline",
    "load_component",
    "load_pipeline",
    "load_unet",
    "model_facts",
    "pipeline_geometry",
    "pipeline_kind",
    "random_spec",
    "spec_fingerprint",
]
