"""``manifest.json``: what an export or engine folder holds, and the checks a reader makes (torch-free).

docs/design.md §4: a later stage reads what an earlier one wrote through this file only. A reader refuses
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

from ..core.errors import EngineError, first_line
from .manifest_schema import FORMAT_VERSION, check_manifest

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


MAX_MANIFEST_BYTES = 16 << 20  # a real manifest is a few hundred KB


def read_manifest(folder: str | os.PathLike, *, verify_hashes: bool = True) -> dict[str, Any]:
    """Load and check ``folder/manifest.json`` (``manifest_schema.check_manifest``), then every listed file.

    Reads nothing outside ``folder``: listed paths are relative and normalised, and a listed file reached
    through a symbolic link that leaves the folder is refused before it is opened.

    Raises:
        EngineError: folder or manifest missing, too large, not JSON, the wrong shape, a newer format, a
            listed file missing, outside the folder, or changed.
    """
    folder = Path(folder)
    path = folder / MANIFEST
    if not folder.is_dir():
        raise EngineError(f"no such folder: {folder}")
    if path.is_symlink() or not path.is_file():
        raise EngineError(f"{folder} has no {MANIFEST}: not a litefocus-export folder (or an unfinished build)")
    if path.stat().st_size > MAX_MANIFEST_BYTES:
        raise EngineError(f"{path} is larger than {MAX_MANIFEST_BYTES >> 20} MB: not a manifest this tool wrote")
    try:
        manifest = json.loads(path.read_bytes())
    except (OSError, ValueError, RecursionError) as exc:
        raise EngineError(f"{path} is not valid JSON: {first_line(exc)}") from None
    check_manifest(manifest, str(path))
    if verify_hashes:
        for rel, entry in manifest["files"].items():
            file = inside(folder, rel)
            if file.stat().st_size != entry["bytes"] or sha256_file(file) != entry["sha256"]:
                raise EngineError(f"{folder}: file {rel} does not match its sha256 in the manifest (changed?)")
    return manifest


def inside(folder: Path, rel: str) -> Path:
    """``folder/rel`` if it is a regular file whose real path stays inside ``folder``'s real path."""
    file = folder / rel
    try:
        real = file.resolve(strict=True)
    except (OSError, RuntimeError):
        raise EngineError(f"{folder}: file {rel} listed in the manifest is missing") from None
    if not real.is_relative_to(folder.resolve()):
        raise EngineError(f"{folder}: file {rel} leads outside the folder (a symbolic link?): refused")
    if not real.is_file():
        raise EngineError(f"{folder}: {rel} listed in the manifest is not a regular file")
    return real
