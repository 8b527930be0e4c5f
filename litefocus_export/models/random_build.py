"""Build the random-weight pipelines of ``specs.py``: one small constructor per component class.

Every component is initialised under its own seed (derived from the spec's weight seed and the component
name) inside a forked RNG, so a build gives the same weights every time, whatever was built before it,
and leaves the caller's global torch RNG untouched. ``build_component`` builds one component alone, so a
benchmark can take the real-size UNet without the 1B parameters of text models around it.
"""

from __future__ import annotations

import logging
import time
import zlib
from collections.abc import Callable
from typing import Any

from .compat import apply_pipeline_fixes
from .specs import PIPELINE_CLASSES, RandomSpec, random_spec
from .tokenizers import roberta_tokenizer, t5_tokenizer

logger = logging.getLogger(__name__)


def _diffusers_model(cls_name: str) -> Callable[[dict[str, Any]], Any]:
    def build(config: dict[str, Any]) -> Any:
        import diffusers

        return getattr(diffusers, cls_name)(**config)

    return build


def _scheduler(config: dict[str, Any]) -> Any:
    from diffusers import DDIMScheduler

    return DDIMScheduler.from_config(config)


def _vocoder(config: dict[str, Any]) -> Any:
    from transformers import SpeechT5HifiGan, SpeechT5HifiGanConfig

    return SpeechT5HifiGan(SpeechT5HifiGanConfig(**config))


def _clap(config: dict[str, Any]) -> Any:
    from transformers import ClapConfig, ClapModel

    return ClapModel(ClapConfig(**config))


def _clap_text(config: dict[str, Any]) -> Any:
    from transformers import ClapTextConfig, ClapTextModelWithProjection

    return ClapTextModelWithProjection(ClapTextConfig(**config))


def _t5_encoder(config: dict[str, Any]) -> Any:
    from transformers import T5Config, T5EncoderModel

    return T5EncoderModel(T5Config(**config))


def _gpt2(config: dict[str, Any]) -> Any:
    # diffusers >= 0.33 wants GPT2LMHeadModel (the checkpoints hold GPT2Model): the pipeline's
    # generation loop calls GenerationMixin helpers that plain PreTrainedModels lost in transformers 4.50.
    from transformers import GPT2Config, GPT2LMHeadModel

    return GPT2LMHeadModel(GPT2Config(**config))


def _feature_extractor(config: dict[str, Any]) -> Any:
    from transformers import ClapFeatureExtractor

    return ClapFeatureExtractor(**config)


_CONSTRUCTORS: dict[str, Callable[[dict[str, Any]], Any]] = {
    "AutoencoderKL": _diffusers_model("AutoencoderKL"),
    "UNet2DConditionModel": _diffusers_model("UNet2DConditionModel"),
    "AudioLDM2UNet2DConditionModel": _diffusers_model("AudioLDM2UNet2DConditionModel"),
    "AudioLDM2ProjectionModel": _diffusers_model("AudioLDM2ProjectionModel"),
    "DDIMScheduler": _scheduler,
    "SpeechT5HifiGan": _vocoder,
    "ClapModel": _clap,
    "ClapTextModelWithProjection": _clap_text,
    "T5EncoderModel": _t5_encoder,
    "GPT2LMHeadModel": _gpt2,
    "RobertaTokenizer": lambda config: roberta_tokenizer(**config),
    "T5Tokenizer": lambda config: t5_tokenizer(**config),
    "ClapFeatureExtractor": _feature_extractor,
}


def component_seed(spec: RandomSpec, name: str) -> int:
    """The init seed of one component: stable across processes and independent of build order."""
    return zlib.crc32(f"{spec.seed}:{name}".encode())


def build_component(spec: str | RandomSpec, name: str) -> Any:
    """Build one component of a built-in random spec with its deterministic weights (fp32, eval mode).

    Args:
        spec: ``random:<name>`` or a ``RandomSpec``.
        name: component name as in the pipeline (``unet``, ``vae``, ``text_encoder``, ...).

    Raises:
        UsageError: unknown spec or component.
    """
    import torch

    rspec = random_spec(spec) if isinstance(spec, str) else spec
    entry = rspec.config(name)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(component_seed(rspec, name))
        component = _CONSTRUCTORS[entry["class"]](entry["config"])
    if isinstance(component, torch.nn.Module):
        component.eval()
    return component


def build_random_pipeline(spec: str | RandomSpec) -> Any:
    """Build every component of a built-in spec and assemble the diffusers pipeline (CPU, fp32).

    The pipeline comes with ``compat.apply_pipeline_fixes`` applied, as from ``load_pipeline``.
    """
    import diffusers

    rspec = random_spec(spec) if isinstance(spec, str) else spec
    start = time.perf_counter()
    logger.info("building %s", rspec.spec)
    components = {name: build_component(rspec, name) for name in rspec.components}
    pipeline_class = {kind: name for name, kind in PIPELINE_CLASSES.items()}[rspec.kind]
    pipe = apply_pipeline_fixes(getattr(diffusers, pipeline_class)(**components))
    logger.info("built %s in %.1f s", rspec.spec, time.perf_counter() - start)
    return pipe
