"""The VAE decoder's mid-block attention alone: ORT's CPU MultiHeadAttention vs PyTorch's SDPA, same shapes.

At 80 s the AudioLDM(2) VAE decoder's mid-block attends over all 2000 x 16 = 32,000 latent tokens with one head
of width 512 (2.1 TFLOP); the ORT build runs it as one ``com.microsoft.MultiHeadAttention`` node
(``backends/onnxruntime/rewrites.py``). This times that node, the same attention as query-chunked
``MatMul -> Softmax -> MatMul`` in ORT (plain GEMMs, scores of one chunk at a time), and PyTorch's
``scaled_dot_product_attention`` (when torch is installed): best of ``--repeats`` after a warm-up, GFLOP/s, and
the largest difference from the MultiHeadAttention output. Every ratio comes from this one run.

    python scripts/bench_vae_attention.py --tokens 32000 --threads 2
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np

WIDTH = 512  # the VAE's block_out_channels[-1]: one head of this width


def session(nodes: list, inputs: dict[str, tuple], threads: int):  # noqa: ANN201
    import onnxruntime as ort
    from onnx import TensorProto, helper

    graph = helper.make_graph(nodes, "attention",
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs.items()],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18),
                                                    helper.make_opsetid("com.microsoft", 1)])
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.enable_cpu_mem_arena = False  # as OrtStage runs
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def best(fn: Callable[[], np.ndarray], repeats: int) -> tuple[float, np.ndarray]:
    out = fn()
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        seconds.append(time.perf_counter() - start)
    return min(seconds), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokens", type=int, default=32000, help="latent tokens (80 s: 2000 frames x 16 bins)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--chunk", type=int, default=4096, help="queries per chunk of the MatMul form")
    args = parser.parse_args()
    from onnx import helper

    tokens, scale = args.tokens, 1 / np.sqrt(WIDTH)
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((1, tokens, WIDTH), dtype=np.float32) * np.float32(0.05) for _ in range(3))
    gflop = 4 * tokens * tokens * WIDTH / 1e9
    print(f"attention over {tokens} tokens, 1 head of {WIDTH}, {args.threads} threads: {gflop:.0f} GFLOP")

    mha = session([helper.make_node("MultiHeadAttention", ["q", "k", "v"], ["y"], domain="com.microsoft",
                                    num_heads=1, scale=float(scale))],
                  {"q": q.shape, "k": k.shape, "v": v.shape}, args.threads)
    seconds, reference = best(lambda: mha.run(None, {"q": q, "k": k, "v": v})[0], args.repeats)
    print(f"ORT MultiHeadAttention: {seconds:.2f} s, {gflop / seconds:.0f} GFLOP/s")

    chunked = session([helper.make_node("MatMul", ["q", "kt"], ["s"]), helper.make_node("Softmax", ["s"], ["p"]),
                       helper.make_node("MatMul", ["p", "v"], ["y"])],
                      {"q": (1, None, WIDTH), "kt": (1, WIDTH, tokens), "v": v.shape}, args.threads)
    kt = np.ascontiguousarray(k.transpose(0, 2, 1)) * np.float32(scale)
    seconds_c, out = best(lambda: np.concatenate(
        [chunked.run(None, {"q": q[:, i:i + args.chunk], "kt": kt, "v": v})[0] for i in range(0, tokens, args.chunk)],
        axis=1), args.repeats)
    print(f"ORT MatMul/Softmax/MatMul, {args.chunk} queries a chunk: {seconds_c:.2f} s, {gflop / seconds_c:.0f} "
          f"GFLOP/s ({seconds / seconds_c:.2f}x MultiHeadAttention), max diff {np.abs(out - reference).max():.1e}")
    try:
        import torch
    except ImportError:
        return
    torch.set_num_threads(args.threads)
    tq, tk, tv = (torch.from_numpy(a)[:, None] for a in (q, k, v))
    with torch.no_grad():
        seconds_t, out_t = best(lambda: torch.nn.functional.scaled_dot_product_attention(tq, tk, tv)[:, 0].numpy(),
                                args.repeats)
    print(f"torch SDPA: {seconds_t:.2f} s, {gflop / seconds_t:.0f} GFLOP/s ({seconds / seconds_t:.2f}x "
          f"MultiHeadAttention), max diff {np.abs(out_t - reference).max():.1e}")


if __name__ == "__main__":
    main()
