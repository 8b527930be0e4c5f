"""Device check of the fused LiteFocus Triton kernel: correctness, then speed at the 80 s AudioLDM2 shape.

On a CUDA machine (torch and triton only; from a checkout without ``pip install``, ``python -m litefocus_export.cli``
stands for ``litefocus-export``)::

    litefocus-export device-check kernel            # checks + one markdown table, well under a minute
    litefocus-export device-check kernel --sweep    # also times a few tile configurations

On CPU, through Triton's interpreter at tiny shapes (sets TRITON_INTERPRET=1 itself)::

    litefocus-export device-check kernel --cpu-smoke

The timed shape is one F = 8 self-attention of AudioLDM2 at 80 s (docs/design.md §6): B = 2 (classifier-free
guidance), 8 heads of 256 / 8 = 32 channels, T = 1000 frames x F = 8 bins (N = 8000), M = 800 samples.
Exits 1 if a correctness check fails.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path

TOLERANCE = {"fp32": 1e-5, "fp16": 2e-3, "bf16": 1e-2}
# (B, H, T, F, M, D): ragged query/key blocks, F in 1/3/8, M = 0, head dims 32, 40 (padded), 128
GPU_CHECKS = [(2, 4, 125, 8, 100, 32), (1, 2, 77, 3, 50, 40), (1, 1, 33, 1, 0, 128)]
CPU_CHECKS = [(1, 2, 9, 3, 5, 8), (1, 1, 7, 1, 0, 40)]
GPU_TIMED = (2, 8, 1000, 8, 800, 32)
CPU_TIMED = (1, 2, 24, 4, 16, 16)
FULL = "full attention (SDPA over all N)"
SWEEP = [(64, 64, 4, 2), (128, 64, 4, 2), (128, 64, 8, 2), (64, 32, 4, 3), (128, 32, 8, 3), (64, 64, 4, 3)]


def load_modules() -> types.SimpleNamespace:
    """The op modules and the kernel (``core.kernels.plugin_module``: installed or from this checkout)."""
    from ..core.kernels import plugin_module

    try:
        from ..attention import fast, reference
    except ImportError as error:  # the package __init__ pulls in parts this check does not need
        print(f"note: litefocus_export.attention needs {error.name}; loading only the op modules")
        stub = types.ModuleType("litefocus_export.attention")
        stub.__path__ = [str(Path(__file__).resolve().parents[1] / "attention")]
        sys.modules["litefocus_export.attention"] = stub
        from ..attention import fast, reference
    kernel = plugin_module("triton.dual_sparse_attention")
    return types.SimpleNamespace(fast=fast, reference=reference, kernel=kernel)


def make_inputs(shape: tuple[int, ...], dtype, device: str, seed: int = 0) -> tuple:
    import torch

    batch, heads, frames, bins, samples, dim = shape
    gen = torch.Generator(device=device).manual_seed(seed)
    q, k, v = (torch.randn(batch, heads, frames * bins, dim, device=device, generator=gen).to(dtype)
               for _ in range(3))
    index = torch.randperm(frames * bins, device=device, generator=gen)[:samples]
    if samples >= 2:
        index[1] = bins  # token (1, 0): also a same-frequency key of every bin-0 query, counted twice
    return q, k, v, index


def rel_err(out, ref) -> float:
    return ((out.float() - ref).abs().max() / ref.abs().max()).item()


def reference_of(mods, q, k, v, index, **flags):
    """fp32 reference on the same (rounded) inputs, so only the kernel's own error is measured."""
    return mods.reference.dual_sparse_attention_reference(q.float(), k.float(), v.float(), index, **flags)


def check_cases(shapes: list[tuple[int, ...]], dtypes: dict) -> list[tuple]:
    """(label, shape, dtype name, same, cross, strided, per_row) for every correctness check."""
    cases = [(f"{n} {s}", s, n, True, True, False, False) for s in shapes for n in dtypes]
    shape = shapes[0]
    cases += [(f"fp32 {shape} same only", shape, "fp32", True, False, False, False),
              (f"fp32 {shape} cross only", shape, "fp32", False, True, False, False),
              (f"fp16 {shape} (B,N,H,D) views", shape, "fp16", True, True, True, False),
              (f"fp16 {shape} (B, M) per-row samples", shape, "fp16", True, True, False, True)]
    return cases


def per_row_index(index, batch: int):
    """(B, M): row b's sample is the shared one rolled by b, so every row differs (for B > 1 and M > 1)."""
    import torch

    return torch.stack([index.roll(b) for b in range(batch)])


def run_checks(mods, shapes, dtypes: dict, device: str) -> bool:
    ok = True
    for label, shape, name, same, cross, strided, per_row in check_cases(shapes, dtypes):
        q, k, v, index = make_inputs(shape, dtypes[name], device)
        if strided:  # the layout a processor gets from its projections: no copy needed
            q, k, v = (t.transpose(1, 2).contiguous().transpose(1, 2) for t in (q, k, v))
        if per_row:  # one sample per batch row (docs/design.md §1): the kernel moves its index pointer per row
            index = per_row_index(index, shape[0])
        flags = dict(freq_bins=shape[3], same_frequency=same, cross_frequency=cross)
        err = rel_err(mods.kernel.dual_sparse_attention_triton(q, k, v, index, **flags),
                      reference_of(mods, q, k, v, index, **flags))
        passed = err <= TOLERANCE[name]
        ok &= passed
        print(f"{'PASS' if passed else 'FAIL'} kernel vs reference {label}: max rel err {err:.2e}")
    return ok


def check_op_dispatch(mods, device: str) -> bool:
    """On CUDA the custom op must run the fused kernel (bit-identical); on CPU, the dense form."""
    import torch

    from ..attention.op import dual_sparse_attention

    shape = GPU_CHECKS[0] if device == "cuda" else CPU_CHECKS[0]
    q, k, v, index = make_inputs(shape, torch.float16 if device == "cuda" else torch.float32, device)
    out = dual_sparse_attention(q, k, v, index, freq_bins=shape[3])
    fused = mods.kernel.dual_sparse_attention_triton(q, k, v, index, freq_bins=shape[3])
    passed = torch.equal(out, fused) if device == "cuda" else rel_err(out, fused) <= 1e-5
    print(f"{'PASS' if passed else 'FAIL'} custom op litefocus::dual_sparse_attention on {device} "
          f"{'uses the fused kernel' if device == 'cuda' else 'matches the kernel'}")
    return passed


def bench(fn: Callable[[], object], device: str) -> float:
    """Milliseconds per call: triton's do_bench (CUDA events, median) on GPU, a wall clock on CPU."""
    if device == "cuda":
        import triton.testing

        return triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median")
    fn()
    start = time.perf_counter()
    for _ in range(3):
        fn()
    return (time.perf_counter() - start) / 3 * 1e3


def timed_impls(mods, q, k, v, index, bins: int) -> dict[str, Callable[[], object]]:
    import torch.nn.functional as F

    fused, dense = mods.kernel.dual_sparse_attention_triton, mods.fast.dual_sparse_attention_fast
    return {
        "fused Triton kernel": lambda: fused(q, k, v, index, freq_bins=bins),
        "dense form (SDPA over T+M keys)": lambda: dense(q, k, v, index, freq_bins=bins),
        FULL: lambda: F.scaled_dot_product_attention(q, k, v),
    }


def timing_rows(mods, shape, dtypes: dict, device: str) -> list[tuple]:
    rows = []
    for name, dtype in dtypes.items():
        q, k, v, index = make_inputs(shape, dtype, device, seed=1)
        ref = reference_of(mods, q, k, v, index, freq_bins=shape[3])
        impls = timed_impls(mods, q, k, v, index, shape[3])
        full_ms = bench(impls[FULL], device)
        for impl, fn in impls.items():
            ms = full_ms if impl == FULL else bench(fn, device)
            err = "n/a (other op)" if impl == FULL else f"{rel_err(fn(), ref):.2e}"
            rows.append((impl, name, f"{ms:.3f}", f"{full_ms / ms:.2f}x", err))
        del ref, q, k, v
    return rows


def sweep_rows(mods, shape, dtype, device: str) -> list[tuple]:
    q, k, v, index = make_inputs(shape, dtype, device, seed=2)
    base = mods.kernel.block_config(shape[5], "fp16")
    rows = []
    for block_t, block_n, warps, stages in SWEEP:
        tiles = dict(block_t=block_t, block_n=block_n, num_warps=warps, num_stages=stages)
        config = dataclasses.replace(base, **tiles)
        ms = bench(lambda c=config: mods.kernel.dual_sparse_attention_triton(
            q, k, v, index, freq_bins=shape[3], config=c), device)
        rows.append((block_t, block_n, warps, stages, f"{ms:.3f}"))
    return rows


def print_table(header: tuple, rows: list[tuple]) -> None:
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(str(c) for c in row) + " |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="litefocus-export device-check kernel", description=__doc__.splitlines()[0])
    parser.add_argument("--cpu-smoke", action="store_true", help="tiny shapes on CPU via TRITON_INTERPRET=1")
    parser.add_argument("--sweep", action="store_true", help="also time a few tile configurations (fp16)")
    args = parser.parse_args(argv)
    if args.cpu_smoke:
        os.environ["TRITON_INTERPRET"] = "1"  # before the kernel module is imported
    mods = load_modules()
    import torch
    import triton

    device = "cpu" if args.cpu_smoke else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        print("error: no CUDA device; use --cpu-smoke on CPU", file=sys.stderr)
        return 2
    name = torch.cuda.get_device_name() if device == "cuda" else "CPU (Triton interpreter)"
    print(f"device: {name}; torch {torch.__version__}; triton {triton.__version__}")
    print(f"kernel: {mods.kernel.__name__} ({mods.kernel.__file__})")
    dtypes = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    ok = run_checks(mods, CPU_CHECKS if args.cpu_smoke else GPU_CHECKS, dtypes, device)
    ok &= check_op_dispatch(mods, device)
    shape = CPU_TIMED if args.cpu_smoke else GPU_TIMED
    print(f"\ntimed shape (B, H, T, F, M, D) = {shape}, N = {shape[2] * shape[3]}\n")
    timed = {n: dtypes[n] for n in ("fp16", "fp32")}
    print_table(("impl", "dtype", "ms", "speedup vs full SDPA", "max rel err vs reference"),
                timing_rows(mods, shape, timed, device))
    if args.sweep:
        print("\ntile sweep, fused kernel, fp16\n")
        rows = sweep_rows(mods, shape, torch.float16, device)
        print_table(("block_t", "block_n", "warps", "stages", "ms"), rows)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
