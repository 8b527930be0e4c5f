"""The fused Triton kernel (plugins/triton) against the reference op, on CPU via Triton's interpreter.

conftest.py sets TRITON_INTERPRET=1 before this module imports the kernel.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from litefocus_export.plugins.triton import dual_sparse_attention as fused

from litefocus_export.attention.reference import dual_sparse_attention_reference
from litefocus_export.core.errors import UsageError

REPO = Path(__file__).resolve().parents[2]
FLAGS = [(True, True), (True, False), (False, True)]
TOLERANCE = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1e-2}
# (batch, heads, frames T, bins F, samples M, head dim D): odd T, F in 1/3/8, M = 0, D not a power of 2
SHAPES = [(1, 2, 7, 1, 5, 8), (2, 1, 9, 3, 4, 40), (1, 2, 5, 8, 0, 16), (1, 1, 37, 3, 40, 8)]


def make_qkv(shape: tuple[int, ...], seed: int = 0) -> list[torch.Tensor]:
    batch, heads, frames, bins, _, dim = shape
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, heads, frames * bins, dim, generator=gen) for _ in range(3)]


def make_index(shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    """Random sample with a duplicate and a same-frequency key of bin 0, both counted twice."""
    _, _, frames, bins, samples, _ = shape
    index = torch.randint(0, frames * bins, (samples,), generator=torch.Generator().manual_seed(seed))
    if samples >= 3:
        index[1] = index[0]
        index[2] = bins  # token (t=1, f=0): also a same-frequency key of every bin-0 query
    return index


def small_tiles(dim: int, dtype: torch.dtype) -> fused.BlockConfig:
    # 16 x 16 tiles: several ragged key blocks and query blocks even at these sizes
    return fused.block_config(dim, fused.SUPPORTED_DTYPES[dtype], block_t=16, block_n=16)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).abs().max() / b.float().abs().max()).item()


def check(q, k, v, index, bins, dtype, same=True, cross=True, scale=None, **kwargs) -> torch.Tensor:
    """Run the kernel in ``dtype``; compare with the reference on the same rounded inputs, in fp32."""
    q, k, v = (t.to(dtype) for t in (q, k, v))
    flags = dict(freq_bins=bins, scale=scale, same_frequency=same, cross_frequency=cross)
    out = fused.dual_sparse_attention_triton(q, k, v, index, config=small_tiles(q.shape[-1], dtype), **flags,
                                             **kwargs)
    ref = dual_sparse_attention_reference(q.float(), k.float(), v.float(), index, **flags)
    assert out.dtype == dtype and out.shape == q.shape
    assert rel_err(out, ref) <= TOLERANCE[dtype]
    return out


class TestMatchesReference:
    # cross_frequency alone with M = 0 has no keys: a UsageError, tested below
    @pytest.mark.parametrize(
        ("shape", "flags"), [(s, f) for s in SHAPES for f in FLAGS if s[4] or f[0]],
        ids=lambda x: "B{}H{}T{}F{}M{}D{}".format(*x) if len(x) == 6 else ("same" * x[0] + "cross" * x[1]),
    )
    def test_fp32(self, shape, flags):
        check(*make_qkv(shape), make_index(shape), shape[3], torch.float32, *flags)

    @pytest.mark.parametrize("shape", SHAPES[1:], ids=lambda s: "B{}H{}T{}F{}M{}D{}".format(*s))
    @pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
    def test_half_precision(self, shape, dtype):
        check(*make_qkv(shape, seed=1), make_index(shape, seed=1), shape[3], dtype)

    @pytest.mark.parametrize("flags", FLAGS, ids=["both", "same", "cross"])
    def test_fp16_flags(self, flags):
        shape = SHAPES[3]
        check(*make_qkv(shape), make_index(shape), shape[3], torch.float16, *flags)

    def test_custom_scale(self):
        shape = SHAPES[1]
        check(*make_qkv(shape), make_index(shape), shape[3], torch.float32, scale=0.3)

    def test_default_tiles(self):
        shape = SHAPES[3]
        q, k, v = make_qkv(shape)
        index = make_index(shape)
        out = fused.dual_sparse_attention_triton(q, k, v, index, freq_bins=shape[3])
        assert rel_err(out, dual_sparse_attention_reference(q, k, v, index, freq_bins=shape[3])) <= 1e-5


class TestPerRowSamples:
    """A (B, M) sample: batch row b attends to its own sampled keys (the index pointer moves per row)."""

    @pytest.mark.parametrize("flags", [f for f in FLAGS if f[1]], ids=lambda f: "same" * f[0] + "cross" * f[1])
    @pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
    def test_rows_differ_and_match_the_reference(self, flags, dtype):
        batch, heads, frames, bins, samples, dim = shape = (3, 2, 9, 3, 7, 16)
        q, k, v = make_qkv(shape, seed=4)
        index = torch.stack([make_index(shape, seed=s) for s in range(batch)])
        assert not torch.equal(index[0], index[1])
        out = check(q, k, v, index, bins, dtype, *flags)
        for b in range(batch):  # row b alone with its (M,) sample gives the same
            alone = fused.dual_sparse_attention_triton(q[b:b + 1].to(dtype), k[b:b + 1].to(dtype),
                                                       v[b:b + 1].to(dtype), index[b], freq_bins=bins,
                                                       same_frequency=flags[0], cross_frequency=flags[1],
                                                       config=small_tiles(dim, dtype))
            assert rel_err(out[b:b + 1], alone) <= TOLERANCE[dtype]

    def test_identical_rows_equal_one_shared_sample(self):
        shape = (2, 2, 9, 3, 6, 8)
        q, k, v = make_qkv(shape, seed=5)
        index = make_index(shape)
        shared = check(q, k, v, index, 3, torch.float32)
        rows = check(q, k, v, index.expand(2, -1), 3, torch.float32)  # a stride-0 view: made contiguous
        torch.testing.assert_close(rows, shared, rtol=0, atol=0)


class TestStrides:
    @pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
    def test_views_of_token_major_buffer(self, dtype):
        """q, k, v as (B, H, N, D) views of one (B, N, 3, H, D) projection, as a processor has them."""
        batch, heads, frames, bins, _, dim = shape = (2, 3, 9, 3, 6, 40)
        buffer = torch.randn(batch, frames * bins, 3, heads, dim, generator=torch.Generator().manual_seed(2))
        q, k, v = (buffer[:, :, i].transpose(1, 2) for i in range(3))
        assert not q.is_contiguous()
        check(q, k, v, make_index(shape), bins, dtype)

    def test_strided_output_and_index(self):
        """``out`` may be a view too; a non-contiguous sample index is accepted."""
        batch, heads, frames, bins, samples, dim = shape = (1, 2, 9, 3, 5, 8)
        q, k, v = make_qkv(shape)
        rows = torch.stack([make_index(shape), make_index(shape, seed=3)], dim=1)  # (M, 2)
        out = torch.zeros(batch, frames * bins, heads, dim).transpose(1, 2)
        result = check(q, k, v, rows[:, 0], bins, torch.float32, out=out)
        assert result is out

    def test_head_dim_slice(self):
        """Rows wider than the head dim (a slice of a wider buffer): stride_n != D."""
        shape = (1, 2, 7, 3, 4, 8)
        q, k, v = (t[..., :6] for t in make_qkv(shape))
        check(q, k, v, make_index(shape), 3, torch.float32)


class TestErrors:
    def test_dtype_mismatch(self):
        q, k, v = make_qkv(SHAPES[0])
        with pytest.raises(UsageError, match="share one dtype"):
            fused.dual_sparse_attention_triton(q, k.half(), v, torch.zeros(1, dtype=torch.int64), freq_bins=1)

    def test_head_dim_too_large(self):
        q = torch.randn(1, 1, 4, 136)
        with pytest.raises(UsageError, match="head dim 136"):
            fused.dual_sparse_attention_triton(q, q, q, torch.zeros(1, dtype=torch.int64), freq_bins=2)

    def test_devices_differ(self):
        q, k, v = make_qkv(SHAPES[0])
        with pytest.raises(UsageError, match="several devices"):
            fused.dual_sparse_attention_triton(q, k, v, torch.zeros(1, dtype=torch.int64, device="meta"),
                                               freq_bins=1)

    @pytest.mark.parametrize("flags", [(False, False)])
    def test_inputs_checked_like_the_reference(self, flags):
        q, k, v = make_qkv(SHAPES[0])
        with pytest.raises(UsageError, match="both off"):
            fused.dual_sparse_attention_triton(q, k, v, torch.zeros(1, dtype=torch.int64), freq_bins=1,
                                               same_frequency=False, cross_frequency=False)

    def test_no_keys(self):
        q, k, v = make_qkv(SHAPES[0])
        with pytest.raises(UsageError, match="no keys"):
            fused.dual_sparse_attention_triton(q, k, v, torch.zeros(0, dtype=torch.int64), freq_bins=1,
                                               same_frequency=False)


class TestLaunchParameters:
    """The pure pieces the TensorRT AOT plugin evaluates on shape expressions."""

    def test_aot_args_match_the_launcher_for_contiguous_tensors(self):
        q = torch.empty(2, 8, 8000, 32)
        head_dim_strides = {8, 12, 16, 20}  # stride_*d, compiled in as 1 by the AOT variant
        for index_row_stride in (0, 800):  # (M,) and (B, M) samples
            jit = fused.torch_scalar_args((q, q, q, q), 800, 8, index_row_stride)
            aot = fused.aot_scalar_args(q.shape, 800, 8, index_row_stride)
            assert [a for i, a in enumerate(jit) if i not in head_dim_strides] == aot
            assert all(jit[i] == 1 for i in head_dim_strides) and jit[4] == index_row_stride

    def test_index_layout(self):
        assert fused.index_layout((800,)) == (800, 0) and fused.index_layout((2, 800)) == (800, 800)
        with pytest.raises(UsageError, match="rank 3"):
            fused.index_layout((1, 2, 3))

    def test_aot_args_follow_the_kernel_signature(self):
        runtime = [n for n, t in fused.aot_signature("fp16").items() if t == "i32"]
        assert len(runtime) == len(fused.aot_scalar_args((2, 8, 8000, 32), 800, 8)) == 17
        assert runtime[:5] == ["heads", "frames", "freq_bins", "num_samples", "index_row_stride"]
        pointers = [n for n, t in fused.aot_signature("bf16").items() if t.startswith("*")]
        assert pointers == ["q_ptr", "k_ptr", "v_ptr", "index_ptr", "out_ptr"]  # TensorRT: output last

    def test_grid(self):
        assert fused.launch_grid((2, 8, 8000, 32), 8, 64) == (16, 8, 16)
        assert fused.launch_grid((1, 1, 37, 8), 1, 16) == (3, 1, 1)

    @pytest.mark.parametrize("dim", [8, 32, 40, 64, 80, 128])
    @pytest.mark.parametrize("dtype_name", ["fp32", "fp16", "bf16"])
    def test_tiles_fit_48_kib(self, dim, dtype_name):
        config = fused.block_config(dim, dtype_name)
        assert config.block_d >= max(dim, 16) and config.block_d & (config.block_d - 1) == 0
        element = 4 if dtype_name == "fp32" else 2
        tile_bytes = (config.block_t + 2 * config.block_n * config.num_stages) * config.block_d * element
        assert tile_bytes <= 48 * 1024


def run_without_interpreter(code: str, tmp_path: Path) -> str:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.update(TRITON_CACHE_DIR=str(tmp_path / "triton-cache"), TRITON_DEFAULT_FP_FUSION="1")
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_aot_compile_for_sm90(tmp_path):
    """The AOT variant compiles to PTX for an H100 with no GPU here (triton ships ptxas)."""
    out = run_without_interpreter("""
        import json, re
        from triton.backends.compiler import GPUTarget
        from litefocus_export.plugins.triton.dual_sparse_attention import compile_for_aot
        report = []
        for dtype, dim in [("fp16", 32), ("bf16", 40), ("fp32", 128)]:
            kernel = compile_for_aot(dtype, dim, dim ** -0.5, True, True, target=GPUTarget("cuda", 90, 32))
            entry = re.search(r"\\.entry\\s+(\\w+)\\((.*?)\\)", kernel.ptx, re.S)
            report.append([entry.group(1), entry.group(2).count(".param"), kernel.threads, kernel.shared_mem])
        print(json.dumps(report))
    """, tmp_path)
    for name, params, threads, shared in json.loads(out.strip().splitlines()[-1]):
        assert name == "dual_sparse_attention_kernel"
        # 4 inputs + 17 int32 + output; newer Triton appends its (unused) scratch pointers
        assert 22 <= params <= 24
        assert threads == 128 and shared <= 48 * 1024


@pytest.mark.parametrize("interpret", ["", "1"])
def test_op_registers_cuda_kernel_only_outside_the_interpreter(interpret, tmp_path):
    out = run_without_interpreter(f"""
        import os
        os.environ["TRITON_INTERPRET"] = "{interpret}"
        import torch
        import litefocus_export.attention.op
        print(torch._C._dispatch_has_kernel_for_dispatch_key("litefocus::dual_sparse_attention", "CUDA"))
    """, tmp_path)
    assert out.strip() == str(not interpret)
