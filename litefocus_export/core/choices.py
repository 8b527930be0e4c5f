"""One definition per choice (torch-free): each is a ``Literal``; the tuples, the CLI's click choices and the
checks of settings and manifests are all derived from it with ``typing.get_args``."""

from __future__ import annotations

from typing import Literal, get_args

Attention = Literal["full", "litefocus"]
# what a user may ask for: an attention, or "auto" (by length: durations.resolve_attention)
AttentionPolicy = Literal["full", "litefocus", "auto"]
EngineBackend = Literal["onnxruntime", "tensorrt", "openvino"]
ExportPrecision = Literal["fp32", "fp16"]
# what an engine computes in: the export's precision (ONNX Runtime, TensorRT), or OpenVINO's on the CPU
EnginePrecision = Literal["fp32", "fp16", "bf16", "int8"]
SchedulerName = Literal["ddim", "dpm"]  # the runtime's numpy DDIM and DPM-Solver++ (runtime/schedulers.py)

ATTENTIONS: tuple[str, ...] = get_args(Attention)
ATTENTION_POLICIES: tuple[str, ...] = get_args(AttentionPolicy)
ENGINE_BACKENDS: tuple[str, ...] = get_args(EngineBackend)
EXPORT_PRECISIONS: tuple[str, ...] = get_args(ExportPrecision)
ENGINE_PRECISIONS: tuple[str, ...] = get_args(EnginePrecision)
SCHEDULERS: tuple[str, ...] = get_args(SchedulerName)

__all__ = ["ATTENTIONS", "ATTENTION_POLICIES", "AttentionPolicy",
           "ENGINE_BACKENDS", "ENGINE_PRECISIONS", "EXPORT_PRECISIONS", "Attention", "EngineBackend",
           "EnginePrecision", "ExportPrecision", "SCHEDULERS", "SchedulerName"]
