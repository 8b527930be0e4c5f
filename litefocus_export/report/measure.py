"""One report configuration, measured in its own process so its peak RSS is its own.

``python -m litefocus_export.report.measure JOB.json RESULT.json``: the job names the model, backend
(``torch``, or an engine folder for ``onnxruntime`` / ``tensorrt``), attention, duration and mode
(``unet``: one UNet evaluation at batch 2; ``all``: whole generations). It runs the warm-up, then the
timed repeats, and writes the raw times, peak RSS and (optionally) the first output to ``.npy`` for the
accuracy columns. Engine jobs import no torch.
"""

from __future__ import annotations

import json
import logging
import re
import resource
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..sampling import seeded_streams

log = logging.getLogger(__name__)
TIMESTEP = 500.0


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB.

    Linux: ``VmHWM`` of /proc/self/status, which starts afresh at exec; ``ru_maxrss`` would still hold the
    peak of the forked parent image. Elsewhere ``ru_maxrss`` (bytes on macOS, KiB otherwise).
    """
    try:
        match = re.search(r"^VmHWM:\s*(\d+)\s*kB", Path("/proc/self/status").read_text(), re.MULTILINE)
        if match:
            return int(match.group(1)) / 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def unet_feeds(facts: Any, frames: int, seed: int) -> dict[str, np.ndarray]:
    """UNet inputs at batch 2 (numpy, seeded), named as in the exported graph: the same for every backend."""
    config = facts.unet_config
    rng = np.random.default_rng(seed)
    feeds = {"sample": rng.standard_normal((2, config["in_channels"], frames, facts.geometry.latent_freq_bins),
                                           dtype=np.float32),
             "timestep": np.full(2, TIMESTEP, np.float32)}
    if facts.kind == "audioldm2":
        dims = [d for d in config["cross_attention_dim"][0] if d is not None]
        feeds["encoder_hidden_states"] = rng.standard_normal((2, 8, dims[0]), dtype=np.float32)
        feeds["encoder_hidden_states_1"] = rng.standard_normal((2, 64, dims[1]), dtype=np.float32)
        feeds["encoder_attention_mask_1"] = np.ones((2, 64), np.int64)
    else:
        dim = config["projection_class_embeddings_input_dim"]
        feeds["class_labels"] = rng.standard_normal((2, dim), dtype=np.float32)
    return feeds


class TorchUNet:
    """The diffusers UNet alone (no text encoders built), stock or patched with LiteFocus."""

    def __init__(self, job: dict[str, Any], facts: Any):
        import types

        import torch

        from ..attention import LiteFocusConfig, RandomSamples, patch
        from ..models import load_unet

        self.torch = torch
        self.unet = load_unet(job["model"])
        if job["attention"] == "litefocus":
            # patch() reads F_lat off the vocoder and VAE, and the pipeline class decides which attn2 are
            # self-attention: a stand-in with those attributes, named like the pipeline, is enough.
            geometry = facts.geometry
            stand_in = type(facts.pipeline_class, (types.SimpleNamespace,), {})(
                unet=self.unet, vae_scale_factor=geometry.vae_scale,
                vocoder=types.SimpleNamespace(config=types.SimpleNamespace(model_in_dim=geometry.mel_bins)))
            config = LiteFocusConfig(sparse_ratio=job["sparse_ratio"], levels=tuple(job["levels"]))
            patch(stand_in, config, RandomSamples(config.sparse_ratio, generator=seeded_streams(job["seed"])[1]))
        feeds = unet_feeds(facts, facts.geometry.latent_frames(job["seconds"]), job["seed"])
        self.inputs = {k: torch.from_numpy(v) for k, v in feeds.items()}

    def __call__(self) -> np.ndarray:
        args = dict(self.inputs)
        if "class_labels" in args:  # AudioLDM / MusicLDM: no text context, as their pipelines call the UNet
            args["encoder_hidden_states"] = None
        with self.torch.inference_mode():
            out = self.unet(args.pop("sample"), args.pop("timestep"), **args, return_dict=False)[0]
        return out.numpy()


class EngineUNet:
    """The engine folder's unet stage, fed like the sampler feeds it (fresh LiteFocus samples per call)."""

    def __init__(self, job: dict[str, Any], facts: Any):
        from ..runtime import EngineFolder

        self.engines = EngineFolder(job["engines"], threads=job["threads"])
        self.frames = facts.geometry.latent_frames(job["seconds"])
        self.feeds = unet_feeds(facts, self.frames, job["seed"])
        self.layers = self.engines.stage("unet").get("litefocus_layers", [])
        self.ratio = (self.engines.manifest.get("litefocus") or {}).get("sparse_ratio", 0.0)
        self.samples_rng = seeded_streams(job["seed"])[1]

    def __call__(self) -> np.ndarray:
        from ..runtime.sampler import draw_unet_samples

        samples = draw_unet_samples(self.samples_rng, self.layers, self.frames, self.ratio)
        return self.engines.run("unet", {**self.feeds, **samples})["noise_pred"]


def time_unet(step: Any, repeats: int, warmup: int) -> tuple[dict[str, Any], np.ndarray]:
    """Warm-up calls, then ``repeats`` timed calls; the output of the first call is returned for accuracy."""
    first = None
    for _ in range(warmup):
        out = step()
        first = out if first is None else first
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = step()
        times.append(time.perf_counter() - start)
        first = out if first is None else first
    return {"unet_step_s": times}, first


def run_job(job: dict[str, Any]) -> tuple[dict[str, Any], np.ndarray]:
    """Measure one configuration: ``({times..., rss}, first output)``."""
    from .flops import model_facts
    from .stages import time_generations

    facts = model_facts(job["model"])
    if job["backend"] == "torch" and job["threads"]:
        import torch

        torch.set_num_threads(job["threads"])
    if job["stages"] == "unet":
        step = TorchUNet(job, facts) if job["backend"] == "torch" else EngineUNet(job, facts)
        times, output = time_unet(step, job["repeats"], job["warmup"])
    else:
        times, output = time_generations(job)
    return {**times, "peak_rss_mb": peak_rss_mb()}, output


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stderr)
    job = json.loads(Path(argv[0]).read_text())
    result, output = run_job(job)
    if job.get("output"):
        np.save(job["output"], np.asarray(output, dtype=np.float32))
    Path(argv[1]).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
