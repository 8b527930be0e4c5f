"""Models by Hugging Face id: ``ORG/NAME[@REVISION]`` resolved to a snapshot folder of the user's hub cache.

Resolution goes through ``huggingface_hub.snapshot_download`` and its cache layout
(``$HF_HUB_CACHE/models--ORG--NAME/{refs/<revision>, snapshots/<commit>/...}``), so a model downloaded by
diffusers, ``huggingface-cli download`` or this tool is found where it is. A snapshot already in the cache is
used without asking the hub (reproducible, and no network wait); a missing one is downloaded (one weight format
per component, as diffusers' ``from_pretrained`` does) unless ``HF_HUB_OFFLINE=1``, which reads the cache only.
The resolved commit is the snapshot folder's name.

Nothing here imports torch or diffusers unless a download is needed.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from ..core.errors import UsageError

# A repo id as the hub accepts it (one slash; letters, digits, '-', '_', '.'), then an optional @revision.
_NAME = r"[A-Za-z0-9][A-Za-z0-9._-]*"
_HUB_ID = re.compile(rf"^(?P<repo>{_NAME}/{_NAME})(?:@(?P<rev>[A-Za-z0-9._/-]+))?$")
DEFAULT_REVISION = "main"
_TRUE = {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class HubSnapshot:
    """A resolved hub model: its id, the revision asked for, the commit it resolved to and the local folder."""

    repo_id: str
    revision: str
    commit: str
    folder: Path

    @property
    def spec(self) -> str:
        return self.repo_id if self.revision == DEFAULT_REVISION else f"{self.repo_id}@{self.revision}"


def looks_like_hub_id(spec: object) -> bool:
    """Whether ``spec`` is meant as a hub id: ``ORG/NAME[@REV]`` (one slash before any '@') and no such local path."""
    if isinstance(spec, Path) or not isinstance(spec, str) or spec.startswith("random:"):
        return False
    name = spec.split("@", 1)[0]
    if name.count("/") != 1 or name.startswith((".", "/", "~")) or name.endswith("/"):
        return False
    return not Path(spec).expanduser().exists()


def parse_hub_id(spec: str) -> tuple[str, str]:
    """``"ORG/NAME@REV"`` -> ``("ORG/NAME", "REV")`` (revision ``main`` when none); UsageError when malformed."""
    match = _HUB_ID.match(spec)
    if not match:
        raise UsageError(f"model id {spec!r} is not a Hugging Face id of the form ORG/NAME[@REVISION]")
    return match.group("repo"), match.group("rev") or DEFAULT_REVISION


def offline() -> bool:
    """``HF_HUB_OFFLINE`` as set now (huggingface_hub reads it once, at import)."""
    value = os.environ.get("HF_HUB_OFFLINE")
    if value is not None:
        return value.strip().lower() in _TRUE
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def cache_dir() -> Path:
    """The hub cache as set now: ``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else huggingface_hub's default."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def _cached(repo_id: str, revision: str) -> Path | None:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo_id, revision=revision, cache_dir=cache_dir(), local_files_only=True))
    except (LocalEntryNotFoundError, FileNotFoundError, OSError):
        return None


def _download(repo_id: str, revision: str) -> Path:
    """Download like diffusers' from_pretrained (its file filter: one weight format per component)."""
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        from diffusers import DiffusionPipeline

        return Path(DiffusionPipeline.download(repo_id, revision=revision, cache_dir=cache_dir()))
    except RevisionNotFoundError:
        raise UsageError(f"model {repo_id!r} has no revision {revision!r}") from None
    except GatedRepoError:
        raise UsageError(f"model {repo_id!r} is gated: accept its terms on huggingface.co and log in "
                         "(huggingface-cli login)") from None
    except RepositoryNotFoundError:
        raise UsageError(f"unknown model id {repo_id!r}: no such model on the Hugging Face hub (or it is "
                         "private: log in with huggingface-cli login), and no local folder of that name") from None
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UsageError(f"cannot download {repo_id}@{revision} and it is not in the Hugging Face cache "
                         f"({cache_dir()}): {first}") from None


def resolve(spec: str, *, download: bool = True) -> HubSnapshot:
    """The snapshot of hub id ``spec`` in the cache, downloaded first when missing (unless offline).

    Args:
        spec: ``ORG/NAME`` or ``ORG/NAME@REVISION`` (a branch, tag or commit).
        download: whether a missing snapshot may be downloaded (``check_spec`` passes False: cheap checks).

    Raises:
        UsageError: a malformed id, an id missing from the cache offline, an unknown id or revision online.
    """
    repo_id, revision = parse_hub_id(spec)
    folder = _cached(repo_id, revision)
    if folder is None:
        if offline():
            raise UsageError(f"model {repo_id}@{revision} is not in the Hugging Face cache ({cache_dir()}) and "
                             "HF_HUB_OFFLINE is set (and there is no local folder of that name): download it once "
                             f"with network access (huggingface-cli download {repo_id})")
        if not download:
            return HubSnapshot(repo_id, revision, "", Path())
        folder = _download(repo_id, revision)
    return HubSnapshot(repo_id, revision, folder.name, folder)
