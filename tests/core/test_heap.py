"""glibc's mmap threshold for the engines' activations (core/heap.py)."""

from __future__ import annotations

import json
import platform
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from litefocus_export.core import heap
from litefocus_export.core.errors import UsageError

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"

# Frees one 16 MiB buffer (glibc then serves up to 16 MiB from the heap, unless the threshold is fixed), allocates
# 40 x 8 MiB, each followed by a small buffer that stays (so freed blocks cannot merge into the heap's top and be
# trimmed), frees the 40, and prints how much of their 320 MiB stayed resident.
RETAINED = """
import ctypes, json, sys
from litefocus_export.core import heap
if sys.argv[1] == "fixed":
    assert heap.set_mmap_threshold(1 << 20)
libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, (ctypes.c_size_t,)
libc.free.argtypes = (ctypes.c_void_p,)
def resident():
    return int(open("/proc/self/statm").read().split()[1]) * 4096
def touched(size):
    block = libc.malloc(size)
    ctypes.memset(block, 1, size)
    return block
libc.free(touched(16 << 20))
before = resident()
blocks, pins = [], []
for _ in range(40):
    blocks.append(touched(8 << 20))
    pins.append(touched(4096))
for block in blocks:
    libc.free(block)
print(json.dumps((resident() - before) / (1 << 20)))
"""


def retained_mib(mode: str) -> float:
    run = subprocess.run([sys.executable, "-c", RETAINED, mode], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


@pytest.mark.skipif(not GLIBC, reason="glibc's malloc only")
def test_fixed_threshold_gives_freed_buffers_back():
    default, fixed = retained_mib("default"), retained_mib("fixed")
    assert default > 200  # glibc's dynamic threshold: the 8 MiB buffers came from the heap and stayed
    assert fixed < 20


@pytest.mark.parametrize("text,expected", [("", heap.DEFAULT_THRESHOLD), ("0", 0), (" 4096 ", 4096),
                                           (str(32 << 20), 32 << 20)])
def test_threshold_from_env(text, expected):
    assert heap.threshold_from_env({heap.ENV: text}) == expected


@given(st.text(max_size=30))
def test_any_env_text_is_a_threshold_or_one_line(text):
    try:
        value = heap.threshold_from_env({heap.ENV: text})
    except UsageError as exc:
        assert "\n" not in str(exc) and heap.ENV in str(exc)
    else:
        assert 0 <= value <= heap.MAX_THRESHOLD


@pytest.mark.parametrize("threshold", [0, -1, heap.MAX_THRESHOLD + 1])
def test_out_of_range_is_not_set(threshold):
    assert heap.set_mmap_threshold(threshold) is False


def test_set_once_per_process(monkeypatch):
    monkeypatch.setattr(heap, "_applied", None)
    monkeypatch.setenv(heap.ENV, "0")
    assert heap.return_large_buffers_to_os() is None  # glibc's default kept
    monkeypatch.delenv(heap.ENV)
    calls = []
    monkeypatch.setattr(heap, "set_mmap_threshold", lambda value: calls.append(value) or True)
    assert heap.return_large_buffers_to_os() == heap.DEFAULT_THRESHOLD
    assert heap.return_large_buffers_to_os() == heap.DEFAULT_THRESHOLD
    assert calls == [heap.DEFAULT_THRESHOLD]
