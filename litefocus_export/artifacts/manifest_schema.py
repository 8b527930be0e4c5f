"""The one check of a ``manifest.json``'s shape and values, shared by the runtime, ``inspect`` and ``serve``.

Typed parsing by hand (no schema library at run time): required keys and their types, finite and positive
numbers, ``format_version`` an integer in ``MIN_FORMAT_VERSION..FORMAT_VERSION``, bounded size and nesting,
and every file path relative, normalised and inside the folder. A failure is one ``EngineError`` line naming the field.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from pathlib import PurePosixPath
from typing import Any

from ..core.choices import ATTENTIONS, ENGINE_BACKENDS, ENGINE_PRECISIONS
from ..core.contract import ALL_STAGES, PIPELINE_KINDS, check_levels, check_sparse_ratio
from ..core.errors import EngineError, UsageError

# 2: the UNet's litefocus_index_<w> inputs are (L, batch, M), one sample per batch row (docs/design.md §2)
FORMAT_VERSION = 2
# folders of older formats are refused with "rebuild it": their engines take (L, M) samples
MIN_FORMAT_VERSION = 2
KINDS = ("export", "engine")
MAX_FILES = 10_000
MAX_DEPTH = 16
MAX_INT = 10**12  # sizes and counts: anything larger is not a real model
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class ManifestError(EngineError):
    """A manifest that does not have the shape this tool writes."""


def depth(value: Any, limit: int = MAX_DEPTH) -> int:
    """Nesting depth of JSON data, counted without recursion (a hostile file cannot exhaust the stack)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        deepest = max(deepest, level)
        if level > limit:
            return level
        if isinstance(item, dict):
            stack.extend((v, level + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, level + 1) for v in item)
    return deepest


def safe_relative_path(value: Any, where: str) -> str:
    """A file path inside the folder: relative, POSIX, normalised, no ``..``, no empty or odd parts."""
    if not isinstance(value, str) or not value or "\\" in value or "\0" in value:
        raise ManifestError(f"{where}: {value!r} is not a relative file path")
    path = PurePosixPath(value)
    if path.is_absolute() or path.as_posix() != value or any(p in ("", ".", "..") for p in value.split("/")):
        raise ManifestError(f"{where}: {value!r} is not a normalised path inside the folder")
    return value


def _field(data: dict[str, Any], key: str, where: str, check: Callable[[Any, str], Any]) -> Any:
    if key not in data:
        raise ManifestError(f"{where}: missing {key!r}")
    return check(data[key], f"{where}.{key}")


def _dict(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ManifestError(f"{where} must be an object, got {type(value).__name__}")
    return value


def _list(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise ManifestError(f"{where} must be a list, got {type(value).__name__}")
    return value


def _str(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise ManifestError(f"{where} must be text, got {type(value).__name__}")
    return value


def _int(low: int, high: int = MAX_INT) -> Callable[[Any, str], int]:
    def check(value: Any, where: str) -> int:
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            raise ManifestError(f"{where} must be an integer in {low}..{high}, got {value!r}")
        return value
    return check


def _choice(choices: tuple[str, ...]) -> Callable[[Any, str], str]:
    def check(value: Any, where: str) -> str:
        if value not in choices:
            raise ManifestError(f"{where} must be one of {', '.join(choices)}, got {value!r}")
        return value
    return check


def _files(value: Any, where: str) -> dict[str, Any]:
    files = _dict(value, where)
    if len(files) > MAX_FILES:
        raise ManifestError(f"{where} lists {len(files)} files; at most {MAX_FILES}")
    for rel, entry in files.items():
        safe_relative_path(rel, where)
        entry = _dict(entry, f"{where}[{rel!r}]")
        sha = entry.get("sha256")
        if not isinstance(sha, str) or not _SHA256.match(sha):
            raise ManifestError(f"{where}[{rel!r}].sha256 is not a sha256 hex digest")
        _field(entry, "bytes", f"{where}[{rel!r}]", _int(0))
    return files


def _litefocus(value: Any, where: str) -> dict[str, Any] | None:
    if value is None:
        return None
    settings = _dict(value, where)
    try:
        check_sparse_ratio(settings.get("sparse_ratio"))
        check_levels(settings.get("levels"))
    except UsageError as exc:
        raise ManifestError(f"{where}: {exc}") from None
    return settings


def _profiles(value: Any, where: str) -> list[Any]:
    from ..core.durations import DurationProfile

    profiles = _list(value, where)
    if not profiles:
        raise ManifestError(f"{where} is empty")
    for i, item in enumerate(profiles):
        item = _dict(item, f"{where}[{i}]")
        values = [item.get(k) for k in ("min_s", "opt_s", "max_s")]
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values):
            raise ManifestError(f"{where}[{i}] needs finite min_s, opt_s, max_s")
        try:
            DurationProfile(*values)
        except UsageError as exc:
            raise ManifestError(f"{where}[{i}]: {exc}") from None
    return profiles


def _backend(value: Any, where: str) -> dict[str, Any]:
    backend = _dict(value, where)
    _field(backend, "name", where, _choice(ENGINE_BACKENDS))
    providers = backend.get("providers")
    if providers is not None and not all(isinstance(p, str) for p in _list(providers, f"{where}.providers")):
        raise ManifestError(f"{where}.providers must be a list of names")
    return backend


def _stage(name: str, value: Any, where: str, files: dict[str, Any], kind: str) -> None:
    stage = _dict(value, where)
    keys = ("file", "engine") if kind == "engine" else ("file",)
    for key in keys:
        rel = _field(stage, key, where, safe_relative_path)
        if kind == "engine" and key == "file":
            continue  # the export's file name: the engine folder holds "engine"
        if rel not in files:
            raise ManifestError(f"{where}.{key}: {rel!r} is not listed (and hashed) in the manifest's files")
    if "weights_file" in stage:  # OpenVINO: the IR's .bin, which OpenVINO opens beside the .xml
        rel = _field(stage, "weights_file", where, safe_relative_path)
        if rel not in files:
            raise ManifestError(f"{where}.weights_file: {rel!r} is not listed (and hashed) in the manifest's files")
    inputs = _dict(stage.get("inputs", {}), f"{where}.inputs")
    for input_name, desc in inputs.items():
        desc = _dict(desc, f"{where}.inputs[{input_name!r}]")
        _field(desc, "dtype", f"{where}.inputs[{input_name!r}]", _str)
        for dim in _field(desc, "shape", f"{where}.inputs[{input_name!r}]", _list):
            if not (isinstance(dim, str) or (isinstance(dim, int) and not isinstance(dim, bool) and 0 <= dim)):
                raise ManifestError(f"{where}.inputs[{input_name!r}].shape has {dim!r}")
    for i, layer in enumerate(_list(stage.get("litefocus_layers", []), f"{where}.litefocus_layers")):
        layer = _dict(layer, f"{where}.litefocus_layers[{i}]")
        _field(layer, "level", f"{where}.litefocus_layers[{i}]", _int(0, 64))
        _field(layer, "width", f"{where}.litefocus_layers[{i}]", _int(1, 1 << 16))
    if "max_batch" in stage:  # engines built for a fixed batch range (TensorRT profiles)
        _field(stage, "max_batch", where, _int(1, 1 << 16))
    metadata = _dict(stage.get("metadata", {}), f"{where}.metadata")
    if not all(isinstance(v, str) for v in metadata.values()):
        raise ManifestError(f"{where}.metadata values must be text")


def check_manifest(data: Any, where: str = "manifest.json") -> dict[str, Any]:
    """``data`` if it has the shape this tool writes, else ``ManifestError`` naming the first bad field.

    ``format_version`` is checked first, so a folder from a newer tool says "upgrade" whatever else changed,
    and one of an older format (below ``MIN_FORMAT_VERSION``) says "rebuild it".
    """
    if depth(data) > MAX_DEPTH:
        raise ManifestError(f"{where} is nested more than {MAX_DEPTH} levels deep")
    data = _dict(data, where)
    version = data.get("format_version")
    if isinstance(version, int) and not isinstance(version, bool) and version > FORMAT_VERSION:
        raise ManifestError(f"{where} has format version {version}; this tool reads up to {FORMAT_VERSION}: "
                            f"upgrade it")
    if isinstance(version, int) and not isinstance(version, bool) and 1 <= version < MIN_FORMAT_VERSION:
        raise ManifestError(f"{where} has format version {version}: the folder was built by an older version of "
                            f"litefocus-export (this one reads {MIN_FORMAT_VERSION}..{FORMAT_VERSION}); rebuild it")
    _field(data, "format_version", where, _int(MIN_FORMAT_VERSION, FORMAT_VERSION))
    kind = _field(data, "kind", where, _choice(KINDS))
    files = _field(data, "files", where, _files)
    model = _field(data, "model", where, _dict)
    _field(model, "spec", f"{where}.model", _str)
    _field(model, "pipeline", f"{where}.model", _choice(PIPELINE_KINDS))
    geometry = _field(data, "geometry", where, _dict)
    for key in ("sample_rate", "hop_length", "vae_scale", "mel_bins", "latent_channels"):
        _field(geometry, key, f"{where}.geometry", _int(1, 10**7))
    _field(data, "attention", where, _choice(ATTENTIONS))
    _field(data, "litefocus", where, _litefocus)
    _field(data, "precision", where, _choice(ENGINE_PRECISIONS))
    stages = _field(data, "stages", where, _dict)
    if not stages:
        raise ManifestError(f"{where}.stages is empty")
    for name, stage in stages.items():
        _choice(ALL_STAGES)(name, f"{where}.stages")
        _stage(name, stage, f"{where}.stages[{name!r}]", files, kind)
    if kind == "engine":
        _field(data, "profiles", where, _profiles)
        _field(data, "backend", where, _backend)
    return data
