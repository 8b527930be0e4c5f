"""``manifest.json``: what an export or engine folder holds, and the checks a reader makes (torch-free).

DESIGN.md §4: a later stage reads what an earlier one wrote through this file only. A reader refuses
a folder whose manifest is missing, unreadable, from a newer format, or whose files do not match
their recorded sha256, with a one-line reason.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

from .errors import EngineError

FORMAT_VERSION = 1
MANIFEST = "manifest.json"


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def file_entries(folder: Path, names: list[str]) -> dict[str, dict[str, Any]]:
    """``{relative path: {sha256, bytes}}`` for files under ``folder`` (recursing into folders)."""
    entries: dict[str, dict[str, Any]] = {}
    for name in names:
        path = folder / name
        paths = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for file in paths:
            rel = file.relative_to(folder).as_posix()
            entries[rel] = {"sha256": sha256_file(file), "bytes": file.stat().st_size}
    return entries


def tool_versions(*packages: str) -> dict[str, str]:
    """Installed versions of ``packages`` (absent ones are skipped)."""
    from importlib import metadata

    versions = {"python": platform.python_version()}
    for name in packages:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def write_manifest(folder: Path, data: dict[str, Any], files: list[str]) -> dict[str, Any]:
    """Write ``folder/manifest.json`` with ``data`` plus format version, file hashes and build time."""
    manifest = {"format_version": FORMAT_VERSION, **data, "files": file_entries(folder, files),
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n")
    return manifest


def read_manifest(folder: str | os.PathLike, *, verify_hashes: bool = True) -> dict[str, Any]:
    """Load and check ``folder/manifest.json``.

    Raises:
        EngineError: folder or manifest missing, manifest not JSON, newer format, a listed file
            missing or changed.
    """
    folder = Path(folder)
    path = folder / MANIFEST
    if not folder.is_dir():
        raise EngineError(f"no such folder: {folder}")
    if not path.is_file():
        raise EngineError(f"{folder} has no {MANIFEST}: not a litefocus-export folder (or an unfinished build)")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise EngineError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        raise EngineError(f"{path} is not a litefocus-export manifest")
    version = manifest.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise EngineError(f"{path} has format version {version!r}; this tool reads up to {FORMAT_VERSION}: upgrade it")
    if verify_hashes:
        for rel, entry in manifest["files"].items():
            file = folder / rel
            if not file.is_file():
                raise EngineError(f"{folder}: file {rel} listed in the manifest is missing")
            if file.stat().st_size != entry.get("bytes") or sha256_file(file) != entry.get("sha256"):
                raise EngineError(f"{folder}: file {rel} does not match its sha256 in the manifest (changed?)")
    return manifest
