"""An engine folder at run time: its checked manifest and one runner per stage (torch-free)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..artifacts.manifest import inside, read_manifest
from ..backends import Runner, open_stage
from ..core.contract import UNET, UNET_OUTPUT, draw_unet_samples
from ..core.durations import DurationProfile, require_covered
from ..core.errors import EngineError
from ..core.geometry import AudioGeometry
from ..core.lifecycle import Closing

log = logging.getLogger(__name__)


class EngineFolder(Closing):
    """``engines/<model>-<profile>-.../``: refuses a missing, newer-format, malformed or tampered folder (one line).

    Every listed file is checked against its hash and every stage is opened here, at load, with the runner of
    the backend the manifest names (``backends.open_stage``): nothing is opened later from a folder that may
    have changed since. :meth:`run` is how the sampler, text conditioning and decoding run every stage.

    Args:
        folder: the engine folder.
        threads: intra-op threads per stage (0: the backend's default).
        stages: the stages to open (default: all; a benchmark of the UNet alone opens only ``("unet",)``).
    """

    def __init__(self, folder: str | Path, threads: int = 0, stages: tuple[str, ...] | None = None):
        self.folder = Path(folder)
        self.manifest = read_manifest(self.folder)
        if self.manifest["kind"] != "engine":
            raise EngineError(f"{self.folder} is an {self.manifest['kind']!r} folder, not an engine folder "
                              f"(run litefocus-export build)")
        self.threads = threads
        self.closed = False
        self._runners: dict[str, Runner] = {}
        for name in stages if stages is not None else tuple(self.manifest["stages"]):
            self._runners[name] = open_stage(self.manifest["backend"], inside(self.folder, self.stage(name)["engine"]),
                                             threads, self.stage(name), name)

    @property
    def kind(self) -> str:
        return self.manifest["model"]["pipeline"]

    @property
    def geometry(self) -> AudioGeometry:
        return AudioGeometry.from_manifest(self.manifest["geometry"])

    @property
    def latent_channels(self) -> int:
        return int(self.manifest["geometry"]["latent_channels"])

    @property
    def sparse_ratio(self) -> float:
        """The LiteFocus sampled fraction the engines were built with (0 for full attention)."""
        return float((self.manifest.get("litefocus") or {}).get("sparse_ratio", 0.0))

    @property
    def profiles(self) -> list[DurationProfile]:
        return [DurationProfile.from_dict(p) for p in self.manifest["profiles"]]

    def check_covers(self, seconds: float) -> DurationProfile:
        return require_covered(self.profiles, seconds)

    def stage(self, name: str) -> dict[str, Any]:
        """The manifest entry of stage ``name``."""
        try:
            return self.manifest["stages"][name]
        except KeyError:
            raise EngineError(f"{self.folder} has no {name} stage (stages: "
                              f"{', '.join(self.manifest['stages'])})") from None

    @property
    def max_batch(self) -> int | None:
        """The most batch rows every stage takes (the smallest ``max_batch`` a stage records: TensorRT engines
        are built for a batch range); None when no stage has a limit."""
        limits = [int(stage["max_batch"]) for stage in self.manifest["stages"].values() if "max_batch" in stage]
        return min(limits) if limits else None

    def runner(self, name: str) -> Runner:
        """A callable ``feeds -> {output name: array}`` for stage ``name`` (opened at load)."""
        if self.closed:
            raise EngineError(f"{self.folder} was closed")
        if name not in self._runners:
            self.stage(name)
            raise EngineError(f"{self.folder}: stage {name} was not opened (opened: {', '.join(self._runners)})")
        return self._runners[name]

    def close(self) -> None:
        """Close every opened stage's runner (their sessions, compiled models, engines)."""
        for runner in self._runners.values():
            runner.close()
        self._runners.clear()
        self.closed = True


    def run(self, name: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run stage ``name`` on ``feeds`` (extra arrays are ignored)."""
        return self.runner(name)(feeds)

    def unet_step(self, feeds: dict[str, np.ndarray],
                  samples_rngs: np.random.Generator | Sequence[np.random.Generator],
                  rows: Sequence[int] | None = None) -> np.ndarray:
        """One UNet evaluation for a batch of requests: fresh LiteFocus samples, then ``noise_pred``.

        Each request draws every patched layer's sample from its own generator in execution order, as the
        PyTorch path draws them (docs/design.md §1), and its batch rows get that draw (``contract.draw_unet_samples``),
        so a request's output does not depend on what it is batched with.

        Args:
            feeds: the UNet's inputs but the index inputs, batch first.
            samples_rngs: each request's samples generator; one generator: a single request owning every row
                (its classifier-free-guidance rows share one draw, diffusers semantics).
            rows: the request of each batch row, e.g. ``[0, ..., n-1] * 2`` for ``n`` guided requests (batch
                ``[uncond rows..., cond rows...]``). Default: every row of a single request; for ``n``
                generators, one row each (batch ``n``) or the guided layout (batch ``2n``).
        """
        single = isinstance(samples_rngs, np.random.Generator)
        rngs = [samples_rngs] if single else list(samples_rngs)
        batch = len(feeds["sample"])
        if rows is None and single:
            rows = [0] * batch
        elif rows is None:
            if not rngs or batch % len(rngs) or batch // len(rngs) not in (1, 2):
                raise EngineError(f"unet_step: a batch of {batch} rows for {len(rngs)} requests needs explicit rows")
            rows = list(range(len(rngs))) * (batch // len(rngs))
        if len(rows) != batch:
            raise EngineError(f"unet_step: {len(rows)} rows given for a batch of {batch}")
        layers = self.stage(UNET).get("litefocus_layers", [])
        samples = draw_unet_samples(rngs, layers, feeds["sample"].shape[2], self.sparse_ratio, rows)
        return self.run(UNET, {**feeds, **samples})[UNET_OUTPUT]
