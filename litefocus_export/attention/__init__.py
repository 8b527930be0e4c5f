"""The LiteFocus op: reference, fast dense form, custom op, ONNX function, diffusers processor."""

from .config import LiteFocusConfig
from .op import dual_sparse_attention
from .patching import litefocus_state, patch, patch_unet, patched, unpatch
from .samples import QueuedSamples, RandomSamples, SampleSource

__all__ = [
    "LiteFocusConfig",
    "QueuedSamples",
    "RandomSamples",
    "SampleSource",
    "dual_sparse_attention",
    "litefocus_state",
    "patch",
    "patch_unet",
    "patched",
    "unpatch",
]
