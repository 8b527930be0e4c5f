"""Built-in model specs: every component config of the random pipelines, as plain dicts (torch-free).

Why one module over ~400 lines: most of it is data (the config table of each published architecture, with its
sources), which reads best in one place next to the spec parser.

Real sizes follow the public checkpoints (cvssp/audioldm2, cvssp/audioldm-s-full-v2, ucsd-reach/musicldm)
as diffusers' conversion scripts build them (``scripts/convert_original_<model>_to_diffusers.py``:
``model_channels`` 128, ``channel_mult`` (1, 2, 3, 5), attention at downsampling factors 2, 4, 8, VAE
``ch`` 128 with ``ch_mult`` (1, 2, 4) and 8 latent channels, HiFi-GAN (5, 4, 2, 2, 2) at 16 kHz, DDIM with
betas 0.0015..0.0195) plus the text models they name (laion/clap-htsat-unfused, google/flan-t5-large, gpt2).
Tiny sizes keep that structure and the audio geometry (16 kHz, hop 160, 64 mel bins, VAE factor 4, 4 UNet
levels with attention at F = 8, 2 layers per block, AudioLDM2's three transformers per layer) with narrow
channels, so they build and run in seconds.

A component is ``{"class": <class name>, "config": {...}}``; ``random_build`` maps the class name to a
constructor. Tokenizers are built in code (``tokenizers.py``) and only need ids inside the embedding tables.
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

from ..core.errors import UsageError
from . import hub

PipelineKind = Literal["audioldm2", "audioldm", "musicldm"]
RANDOM_PREFIX = "random:"
WEIGHT_SEED = 0
# Bump when the build code changes the weights a spec produces (invalidates fingerprints).
BUILDER_VERSION = 1

PIPELINE_CLASSES: dict[str, PipelineKind] = {
    "AudioLDM2Pipeline": "audioldm2",
    "AudioLDMPipeline": "audioldm",
    "MusicLDMPipeline": "musicldm",
}

# The checkpoints' scheduler (the conversion scripts' default ``scheduler_type="ddim"``).
SCHEDULER = {
    "num_train_timesteps": 1000,
    "beta_start": 0.0015,
    "beta_end": 0.0195,
    "beta_schedule": "scaled_linear",
    "clip_sample": False,
    "set_alpha_to_one": False,
    "steps_offset": 1,
    "prediction_type": "epsilon",
}

# --- VAE (mel spectrogram <-> 8-channel latent, factor 4) and vocoder (64 mel bins -> 16 kHz, hop 160) ---
VAE = {
    "in_channels": 1,
    "out_channels": 1,
    "down_block_types": ["DownEncoderBlock2D"] * 3,
    "up_block_types": ["UpDecoderBlock2D"] * 3,
    "block_out_channels": [128, 256, 512],
    "latent_channels": 8,
    "layers_per_block": 2,
    "norm_num_groups": 32,
    "sample_size": 1024,
    # Learned ``scale_factor`` of the AudioLDM VAE (only rescales latents; weights are random anyway).
    "scaling_factor": 0.9227914214134216,
}
TINY_VAE = {**VAE, "block_out_channels": [8, 16, 16], "layers_per_block": 1, "norm_num_groups": 4}

VOCODER = {
    "model_in_dim": 64,
    "sampling_rate": 16000,
    "upsample_initial_channel": 1024,
    "upsample_rates": [5, 4, 2, 2, 2],
    "upsample_kernel_sizes": [16, 16, 8, 4, 4],
    "resblock_kernel_sizes": [3, 7, 11],
    "resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5], [1, 3, 5]],
    "normalize_before": False,
    # Init std only (default 0.01): random HiFi-GANs are near-silent (~1e-6 real, ~1e-10 tiny) with the
    # default; these give waveforms of std ~0.01-0.05 from mel-like input, so audio checks compare signals.
    "initializer_range": 0.03,
}
TINY_VOCODER = {**VOCODER, "upsample_initial_channel": 32, "initializer_range": 0.15}

# --- Text models ---
# laion/clap-htsat-unfused: RoBERTa-base text branch + HTS-AT audio branch, joint 512-d space.
CLAP_TEXT = {
    "vocab_size": 50265,
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "max_position_embeddings": 514,
    "type_vocab_size": 1,
    "layer_norm_eps": 1e-5,
    "projection_dim": 512,
    "pad_token_id": 1,
    "bos_token_id": 0,
    "eos_token_id": 2,
}
TINY_CLAP_TEXT = {
    **CLAP_TEXT,
    "vocab_size": 512,
    "hidden_size": 16,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 37,
    "max_position_embeddings": 128,
    "projection_dim": 16,
}
CLAP_AUDIO = {
    "spec_size": 256,
    "window_size": 8,
    "num_mel_bins": 64,
    "patch_size": 4,
    "patch_stride": [4, 4],
    "patch_embeds_hidden_size": 96,
    "hidden_size": 768,
    "depths": [2, 2, 6, 2],
    "num_attention_heads": [4, 8, 16, 32],
    "projection_dim": 512,
    "enable_fusion": False,
}
# The CLAP of AudioLDM2 and MusicLDM has a wider audio branch: text_encoder/config.json of cvssp/audioldm2,
# cvssp/audioldm2-large and ucsd-reach/musicldm (depths [2, 2, 12, 2], hidden_size 1024, patch_embeds_hidden_size
# 128), as diffusers' AudioLDM2 and MusicLDM conversion scripts build it.
WIDE_CLAP_AUDIO = MUSICLDM_CLAP_AUDIO = {
    **CLAP_AUDIO,
    "patch_embeds_hidden_size": 128,
    "hidden_size": 1024,
    "depths": [2, 2, 12, 2],
}
TINY_CLAP_AUDIO = {
    **CLAP_AUDIO,
    "spec_size": 64,
    "window_size": 4,
    "patch_size": 2,
    "patch_stride": [2, 2],
    "patch_embeds_hidden_size": 8,
    "hidden_size": 16,
    "depths": [2, 2],
    "num_attention_heads": [2, 2],
    "intermediate_size": 37,
    "projection_dim": 16,
}
# CLAP's feature extractor (48 kHz log-mel, only used to rank several waveforms per prompt). The unfused
# CLAP takes one random 10 s crop ("rand_trunc"); the tiny audio branch (spec_size 64) takes at most 64
# frames, so its 10 s clips use a hop of 7900 samples.
FEATURES = {"truncation": "rand_trunc"}
TINY_FEATURES = {**FEATURES, "hop_length": 7900}
# google/flan-t5-large encoder (AudioLDM2's second text encoder).
T5 = {
    "vocab_size": 32128,
    "d_model": 1024,
    "d_kv": 64,
    "d_ff": 2816,
    "num_layers": 24,
    "num_heads": 16,
    "feed_forward_proj": "gated-gelu",
    "relative_attention_num_buckets": 32,
    "relative_attention_max_distance": 128,
    "tie_word_embeddings": False,
    "pad_token_id": 0,
    "eos_token_id": 1,
}
TINY_T5 = {**T5, "vocab_size": 256, "d_model": 48, "d_kv": 12, "d_ff": 37, "num_layers": 2, "num_heads": 4}
# gpt2 (base): AudioLDM2's language model, which generates 8 hidden states per prompt.
GPT2 = {
    "vocab_size": 50257,
    "n_positions": 1024,
    "n_embd": 768,
    "n_layer": 12,
    "n_head": 12,
    "bos_token_id": 50256,
    "eos_token_id": 50256,
    "max_new_tokens": 8,  # read by the pipeline when the caller passes none
}
TINY_GPT2 = {
    **GPT2,
    "vocab_size": 64,
    "n_positions": 256,
    "n_embd": 32,
    "n_layer": 2,
    "n_head": 4,
    "bos_token_id": 63,
    "eos_token_id": 63,
}


# --- UNets: 4 levels, attention at levels 1-3 (F = 8, 4, 2 for 64 mel bins), none at level 0 ---
_DOWN = ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"]
_UP = ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"]


def _unet_common(channels: list[int], heads: int, groups: int, sample_size: int) -> dict[str, Any]:
    """What the AudioLDM-family UNets share: 8 latent channels, 4 levels, 2 layers per block."""
    return {
        "sample_size": sample_size,
        "in_channels": 8,
        "out_channels": 8,
        "down_block_types": _DOWN,
        "up_block_types": _UP,
        "block_out_channels": channels,
        "layers_per_block": 2,
        "norm_num_groups": groups,
        "attention_head_dim": heads,  # diffusers' historic name: this is the number of heads
    }


def _unet_audioldm2(
    channels: list[int], heads: int, groups: int, gpt2_dim: int, t5_dim: int
) -> dict[str, Any]:
    # Three transformers per layer: self-only (None), GPT2 context, Flan-T5 context.
    return {
        **_unet_common(channels, heads, groups, sample_size=256),
        "cross_attention_dim": [[None, gpt2_dim, t5_dim]] * len(channels),
    }


def _unet_ldm(
    channels: list[int], heads: int, groups: int, clap_dim: int, sample_size: int
) -> dict[str, Any]:
    # AudioLDM / MusicLDM: no text context; the CLAP embedding enters as a FiLM-style class embedding.
    return {
        **_unet_common(channels, heads, groups, sample_size),
        "cross_attention_dim": channels,
        "class_embed_type": "simple_projection",
        "projection_class_embeddings_input_dim": clap_dim,
        "class_embeddings_concat": True,
    }


REAL_CHANNELS = [128, 256, 384, 640]
TINY_CHANNELS = [16, 32, 32, 64]
AUDIOLDM2_UNET = _unet_audioldm2(REAL_CHANNELS, 8, 32, GPT2["n_embd"], T5["d_model"])
TINY_AUDIOLDM2_UNET = _unet_audioldm2(TINY_CHANNELS, 4, 8, TINY_GPT2["n_embd"], TINY_T5["d_model"])
# cvssp/audioldm2-large. Sources: haoheliu/AudioLDM2 audioldm2/utils.py sets, for "-large-" checkpoints,
# ``context_dim = [768, 1024, None]`` and ``transformer_depth = 2``; diffusers'
# convert_original_audioldm2_to_diffusers.py says "Set to `[768, 1024, None]` for the large model" and
# "transformer_layers_per_block ... `2` for the large model", and its base config spells the original's implicit
# extra self-attention transformer as a leading None ([None, 768, 1024] for the base's [768, 1024]). So the large
# UNet has four transformers per layer, [None, 768, 1024, None] (diffusers' AudioLDM2 blocks route transformers 0-1
# to the GPT2 states and 2+ to Flan-T5's; None ones see no context), each two layers deep. Check: 718M UNet
# parameters and 1.49B in all, against the model card's "750M" and "1.5B" (three transformers would give 570M
# and 1.35B). F = 8 self-attentions: 12 per layer (8 attn1 + the 4 attn2 of the context-free transformers), 60 in all.
def _large(unet: dict[str, Any]) -> dict[str, Any]:
    dims = unet["cross_attention_dim"][0]
    return {**unet, "cross_attention_dim": [[*dims, None]] * len(unet["block_out_channels"]),
            "transformer_layers_per_block": 2}


AUDIOLDM2_LARGE_UNET = _large(AUDIOLDM2_UNET)
TINY_AUDIOLDM2_LARGE_UNET = _large(TINY_AUDIOLDM2_UNET)
# cvssp/audioldm-m-full / audioldm-l-full (their unet/config.json and model card: "UNet dim" 192 and 256,
# channel_mult (1, 2, 3, 5); m-full's config has attention_head_dim 8, projection_class_embeddings_input_dim 512,
# sample_size 128; the l-full card: "twice the number of UNet channels ... as the small checkpoint"). Check: the
# s / m / l pipelines total 421M, 652M and 975M parameters, the cards' "Params" column exactly.
MEDIUM_CHANNELS = [192, 384, 576, 960]
LARGE_CHANNELS = [256, 512, 768, 1280]


def _c(cls: str, config: dict[str, Any]) -> dict[str, Any]:
    return {"class": cls, "config": config}


def _clap(text: dict[str, Any], audio: dict[str, Any]) -> dict[str, Any]:
    return _c(
        "ClapModel", {"text_config": text, "audio_config": audio, "projection_dim": text["projection_dim"]}
    )


def _audioldm2(tiny: bool, large: bool = False) -> dict[str, dict[str, Any]]:
    text, audio = (TINY_CLAP_TEXT, TINY_CLAP_AUDIO) if tiny else (CLAP_TEXT, WIDE_CLAP_AUDIO)
    t5, gpt2 = (TINY_T5, TINY_GPT2) if tiny else (T5, GPT2)
    dims = {"text_encoder_dim": text["projection_dim"], "text_encoder_1_dim": t5["d_model"]}
    return {
        "vae": _c("AutoencoderKL", TINY_VAE if tiny else VAE),
        "text_encoder": _clap(text, audio),
        "text_encoder_2": _c("T5EncoderModel", t5),
        # sic: diffusers spells the argument "langauge_model_dim"
        "projection_model": _c("AudioLDM2ProjectionModel", {**dims, "langauge_model_dim": gpt2["n_embd"]}),
        "language_model": _c("GPT2LMHeadModel", gpt2),
        "tokenizer": _c("RobertaTokenizer", {"model_max_length": 77 if tiny else 512}),
        "tokenizer_2": _c("T5Tokenizer", {"model_max_length": 128}),
        "feature_extractor": _c("ClapFeatureExtractor", TINY_FEATURES if tiny else FEATURES),
        "unet": _c("AudioLDM2UNet2DConditionModel", {
            (True, False): TINY_AUDIOLDM2_UNET, (False, False): AUDIOLDM2_UNET,
            (True, True): TINY_AUDIOLDM2_LARGE_UNET, (False, True): AUDIOLDM2_LARGE_UNET}[tiny, large]),
        "scheduler": _c("DDIMScheduler", SCHEDULER),
        "vocoder": _c("SpeechT5HifiGan", TINY_VOCODER if tiny else VOCODER),
    }


def _ldm_common(tiny: bool, sample_size: int, channels: list[int] = REAL_CHANNELS) -> dict[str, dict[str, Any]]:
    # AudioLDM and MusicLDM share the UNet, VAE and vocoder layout; sample_size is the default length.
    text = TINY_CLAP_TEXT if tiny else CLAP_TEXT
    channels, heads, groups = (TINY_CHANNELS, 4, 8) if tiny else (channels, 8, 32)
    return {
        "vae": _c("AutoencoderKL", {**(TINY_VAE if tiny else VAE), "sample_size": 4 * sample_size}),
        "tokenizer": _c("RobertaTokenizer", {"model_max_length": 77 if tiny else 512}),
        "unet": _c(
            "UNet2DConditionModel", _unet_ldm(channels, heads, groups, text["projection_dim"], sample_size)
        ),
        "scheduler": _c("DDIMScheduler", SCHEDULER),
        "vocoder": _c("SpeechT5HifiGan", TINY_VOCODER if tiny else VOCODER),
    }


def _audioldm(tiny: bool, channels: list[int] = REAL_CHANNELS) -> dict[str, dict[str, Any]]:
    text = TINY_CLAP_TEXT if tiny else CLAP_TEXT
    return {"text_encoder": _c("ClapTextModelWithProjection", text), **_ldm_common(tiny, 128, channels)}  # 5.12 s


def _musicldm(tiny: bool) -> dict[str, dict[str, Any]]:
    text, audio = (TINY_CLAP_TEXT, TINY_CLAP_AUDIO) if tiny else (CLAP_TEXT, MUSICLDM_CLAP_AUDIO)
    feature_extractor = _c("ClapFeatureExtractor", TINY_FEATURES if tiny else FEATURES)
    return {
        "text_encoder": _clap(text, audio),
        "feature_extractor": feature_extractor,
        **_ldm_common(tiny, 256),
    }


@dataclass(frozen=True)
class RandomSpec:
    """A built-in random-weight pipeline: its kind, the config of every component, and the weight seed."""

    name: str
    kind: PipelineKind
    components: dict[str, dict[str, Any]]
    seed: int = WEIGHT_SEED

    @property
    def spec(self) -> str:
        return RANDOM_PREFIX + self.name

    def config(self, component: str) -> dict[str, Any]:
        """A deep copy of one component's ``{"class", "config"}`` entry."""
        if component not in self.components:
            raise UsageError(
                f"{self.spec} has no component {component!r}; it has: {', '.join(self.components)}"
            )
        return copy.deepcopy(self.components[component])


_BUILDERS = {"audioldm2": _audioldm2, "audioldm": _audioldm, "musicldm": _musicldm}
RANDOM_SPECS: dict[str, RandomSpec] = {
    f"{kind}{suffix}": RandomSpec(f"{kind}{suffix}", kind, build(tiny))  # type: ignore[arg-type]
    for suffix, tiny in (("-tiny", True), ("", False))
    for kind, build in _BUILDERS.items()
}
# The other checkpoints' layouts: AudioLDM2-large (its tiny variant keeps the 2 transformer layers), AudioLDM
# medium and large (real size only: their tiny layout would be audioldm-tiny's).
RANDOM_SPECS.update({
    "audioldm2-large-tiny": RandomSpec("audioldm2-large-tiny", "audioldm2", _audioldm2(True, large=True)),
    "audioldm2-large": RandomSpec("audioldm2-large", "audioldm2", _audioldm2(False, large=True)),
    "audioldm-m": RandomSpec("audioldm-m", "audioldm", _audioldm(False, MEDIUM_CHANNELS)),
    "audioldm-l": RandomSpec("audioldm-l", "audioldm", _audioldm(False, LARGE_CHANNELS)),
})
BUILTIN_SPECS: tuple[str, ...] = tuple(RANDOM_PREFIX + name for name in RANDOM_SPECS)
DEFAULT_SPEC = "random:audioldm2-tiny"

# Every supported public checkpoint -> the built-in spec with its architecture (same component configs as the
# checkpoint's, random weights). cvssp/audioldm2-music: same UNet and text models as cvssp/audioldm2 (the model
# card's table: 350M UNet, 1.1B total, like the base; a unet/config.json saved from its snapshot 0019cb0 lists the
# base's block_out_channels, layers_per_block 2 and cross_attention_dim [None, 768, 1024]).
HUB_ARCHITECTURES: dict[str, str] = {
    "cvssp/audioldm2": "audioldm2",
    "cvssp/audioldm2-large": "audioldm2-large",
    "cvssp/audioldm2-music": "audioldm2",
    "cvssp/audioldm-s-full-v2": "audioldm",
    "cvssp/audioldm-m-full": "audioldm-m",
    "cvssp/audioldm-l-full": "audioldm-l",
    "ucsd-reach/musicldm": "musicldm",
}


def _valid_specs() -> str:
    return (
        f"valid built-in specs: {', '.join(BUILTIN_SPECS)}, a local diffusers folder with model_index.json, or a "
        f"Hugging Face id ORG/NAME[@REVISION] (e.g. {', '.join(HUB_ARCHITECTURES)})"
    )


def random_spec(spec: str) -> RandomSpec:
    """The built-in spec named ``random:<name>``; raises UsageError for an unknown name."""
    name = spec[len(RANDOM_PREFIX) :] if spec.startswith(RANDOM_PREFIX) else spec
    if name not in RANDOM_SPECS:
        raise UsageError(f"unknown model spec {spec!r}; {_valid_specs()}")
    return RANDOM_SPECS[name]


def snapshot_folder(spec: str | Path) -> Path:
    """A local diffusers snapshot folder; raises UsageError if it is missing or has no model_index.json."""
    path = Path(spec).expanduser()
    if not path.is_dir():
        raise UsageError(
            f"model spec {str(spec)!r} is neither a built-in spec nor a folder; {_valid_specs()}"
        )
    if not (path / "model_index.json").is_file():
        raise UsageError(f"folder {str(path)!r} has no model_index.json; {_valid_specs()}")
    return path


def check_spec(spec: str | Path) -> str | Path:
    """``spec`` if it names a built-in model, a snapshot folder or a hub id (cheap: nothing is loaded or
    downloaded; a hub id must be cached when ``HF_HUB_OFFLINE`` is set), else UsageError."""
    if not isinstance(spec, (str, Path)) or not str(spec):
        raise UsageError(f"model spec must be a non-empty string, got {spec!r}; {_valid_specs()}")
    if str(spec).startswith(RANDOM_PREFIX):
        random_spec(str(spec))
    elif hub.looks_like_hub_id(spec):
        snapshot = hub.resolve(str(spec), download=False)
        if snapshot.commit:
            _snapshot_kind(snapshot)
    else:
        folder_kind(snapshot_folder(spec))
    return spec


def folder_kind(path: Path, name: str | None = None) -> PipelineKind:
    """Pipeline kind from a snapshot's model_index.json ``_class_name`` (``name``: what errors call it)."""
    class_name = json.loads((path / "model_index.json").read_text()).get("_class_name")
    if class_name not in PIPELINE_CLASSES:
        what = name or f"folder {str(path)!r}"
        raise UsageError(f"{what} holds a {class_name!r}; supported pipelines: {', '.join(PIPELINE_CLASSES)}")
    return PIPELINE_CLASSES[class_name]


def _snapshot_kind(snapshot: hub.HubSnapshot) -> PipelineKind:
    name = f"model {snapshot.repo_id}@{snapshot.revision} (commit {snapshot.commit})"
    if not (snapshot.folder / "model_index.json").is_file():
        raise UsageError(f"{name} has no model_index.json: not a diffusers pipeline; {_valid_specs()}")
    return folder_kind(snapshot.folder, name)


def local_folder(spec: str | Path) -> Path:
    """The diffusers folder of a local or hub spec (a hub id is resolved in the cache, downloaded if missing
    and not offline), checked to hold a supported pipeline.

    Raises:
        UsageError: a missing folder, no model_index.json, another pipeline class, an unknown or uncached id.
    """
    if hub.looks_like_hub_id(spec):
        snapshot = hub.resolve(str(spec))
        _snapshot_kind(snapshot)
        return snapshot.folder
    return snapshot_folder(spec)


def model_record(spec: str | Path) -> dict[str, Any]:
    """What a manifest records about the model: the spec, its fingerprint and, for a hub id, the repository,
    the revision asked for, the commit it resolved to and the known architecture."""
    record: dict[str, Any] = {"spec": str(spec), "fingerprint": spec_fingerprint(spec)}
    if hub.looks_like_hub_id(spec):
        snapshot = hub.resolve(str(spec))
        record.update(repo_id=snapshot.repo_id, revision=snapshot.revision, commit=snapshot.commit,
                      architecture=HUB_ARCHITECTURES.get(snapshot.repo_id))
    return record


def _digest(payload: Any) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def spec_fingerprint(spec: str | Path) -> str:
    """Stable hash of a spec's configs, for cache keys (torch-free).

    Random specs: every component config, the weight seed, the builder version and the torch /
    transformers / diffusers versions (their init code decides the weights). Folders: model_index.json and
    every JSON file in the component subfolders (configs, scheduler, tokenizer, feature extractor), not the
    weight files.

    Hub ids: the same config hashes plus the repository and the commit the id resolved to (so a new commit of
    a branch is a new fingerprint even when its configs are unchanged).

    Raises:
        UsageError: unknown spec, a folder without model_index.json, an unknown or uncached hub id.
    """
    if isinstance(spec, str) and spec.startswith(RANDOM_PREFIX):
        r = random_spec(spec)
        versions = {lib: _version(lib) for lib in ("torch", "transformers", "diffusers")}
        payload = {"spec": r.spec, "seed": r.seed, "builder": BUILDER_VERSION, "components": r.components}
        return _digest({**payload, "versions": versions})
    path = local_folder(spec)
    files = [path / "model_index.json", *sorted(path.glob("*/*.json"))]
    configs = {str(f.relative_to(path)): hashlib.sha256(f.read_bytes()).hexdigest() for f in files}
    if hub.looks_like_hub_id(spec):
        repo_id, _ = hub.parse_hub_id(str(spec))
        return _digest({"repo_id": repo_id, "commit": path.name, "configs": configs})
    return _digest(configs)


def _version(lib: str) -> str:
    try:
        return metadata.version(lib)
    except metadata.PackageNotFoundError:
        return "absent"
