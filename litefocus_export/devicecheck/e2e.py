"""Device check, end to end: the real-size UNet and a whole generation, stock diffusers vs LiteFocus, measured.

Why one module over ~400 lines: it is one run whose four sections share the device, the budget, the patched
models and the results being written; the report it renders lives apart (``render.py``).

On a CUDA machine (``scripts/device_check.sh`` runs it after the kernel check)::

    litefocus-export device-check e2e --out OUT        # random:audioldm2 (real size), fp16 + bf16

Sections, in this order (a global ``--budget-s`` skips what is left, with a note, instead of overrunning):

1. parity and routing: the LiteFocus UNet on the device (fp32, the custom op: the fused Triton kernel on
   CUDA) against the same UNet on the CPU reference path (``impl="reference"``, einsum) with the same
   samples, <= 1e-3 relative; in the same evaluation every patched layer must go through the expected
   kernel (fused on CUDA; none may fall back to its original processor or the dense form);
2. kernel fp32: the fused kernel's fp32 dot precisions (``ieee``, ``tf32x3``, ``tf32``) against the dense
   SDPA form at the 80 s level-1 shape;
3. one UNet evaluation (batch 2) per dtype and duration: stock diffusers (SDPA) vs LiteFocus, eagerly and
   replayed as CUDA graphs (the same mode on both sides; LiteFocus then reads its samples from a device
   buffer refilled before each replay); per dtype, host synchronisations per evaluation. torch.compile is
   not used: compiling a 347M-parameter UNet per shape and side would not fit the budget, and the
   processor's numpy sample draw is a graph break per patched layer;
4. a whole generation (DDIM, same seed and steps) with the stock and the LiteFocus pipeline, split into
   conditioning, UNet steps, VAE decode and vocoder, with each stage's peak GPU memory.

Times are CUDA events after warm-up (median of ``--repeats``); on CPU, ``time.perf_counter``, and peak
memory is the process's peak RSS instead of the GPU allocator's. Writes ``e2e.json`` and ``e2e.md`` into
``--out`` (the JSON after every section, so an interrupted run keeps what it measured). Exit status: 0 when
every check passed (skips allowed), 1 when one failed or a section raised, 2 for bad arguments.

The same code runs on CPU with the tiny model; with ``TRITON_INTERPRET=1`` set, the parity evaluation and the
kernel section run the Triton kernel through Triton's interpreter (the tests do this)::

    TRITON_INTERPRET=1 litefocus-export device-check e2e --device cpu --model random:audioldm2-tiny \\
        --seconds 1 --steps 1 --repeats 1 --warmup 1 --out /tmp/e2e
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import importlib
import json
import math
import os
import platform
import re
import sys
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ..core.errors import first_line
from ..core.kernels import plugin_module
from ..report.measure import peak_rss_mb  # VmHWM of this process
from ..report.output import median, ratio
from .render import STAGES, markdown, mb_text, route_text

PROG = "litefocus-export device-check e2e"
DTYPES = ("fp32", "fp16", "bf16")
MODES = ("eager", "cuda-graph")
PARITY_TOLERANCE = 1e-3
KERNEL_TOLERANCE = 1e-5
# (B, H, T, F, M, D): one F = 8 self-attention of AudioLDM2 at 80 s; a tiny one for the interpreter
KERNEL_SHAPE = {"cuda": (2, 8, 1000, 8, 800, 32), "cpu": (1, 2, 24, 4, 16, 16)}


# --- arguments ------------------------------------------------------------------------------------------


class OneLineParser(argparse.ArgumentParser):
    """argparse whose errors are one line on stderr (exit 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())}\n")


def _positive_list(text: str) -> list[float]:
    try:
        values = [float(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of numbers: {text!r}") from None
    if not values or any(not math.isfinite(v) or v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"needs positive numbers: {text!r}")
    return values


def _positive_float(text: str) -> float:
    values = _positive_list(text)
    if len(values) != 1:
        raise argparse.ArgumentTypeError(f"needs one positive number: {text!r}")
    return values[0]


def _count(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    return parse


def _choices(allowed: tuple[str, ...]) -> Callable[[str], list[str]]:
    def parse(text: str) -> list[str]:
        values = [s.strip() for s in text.split(",") if s.strip()]
        bad = [v for v in values if v not in allowed]
        if not values or bad:
            raise argparse.ArgumentTypeError(f"{text!r}: choose from {', '.join(allowed)}")
        return list(dict.fromkeys(values))

    return parse


def _ratio(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {value}")
    return value


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = OneLineParser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="random:audioldm2", help="model spec (default random:audioldm2)")
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu (default cuda)")
    parser.add_argument("--dtype", type=_choices(DTYPES), default=None,
                        help="UNet dtypes, comma-separated (default fp16,bf16 on CUDA, fp32 on CPU); the "
                             "generation runs in the first")
    parser.add_argument("--seconds", type=_positive_list, default=[10.0, 40.0, 80.0],
                        help="UNet durations (default 10,40,80)")
    parser.add_argument("--generation-seconds", type=_positive_float, default=None,
                        help="generation length (default: the longest --seconds)")
    parser.add_argument("--parity-seconds", type=_positive_float, default=None,
                        help="parity length (default: the shortest --seconds)")
    parser.add_argument("--steps", type=_count(1), default=10, help="generation steps (default 10)")
    parser.add_argument("--repeats", type=_count(1), default=3, help="timed repeats, median (default 3)")
    parser.add_argument("--warmup", type=_count(0), default=2, help="untimed calls first (default 2)")
    parser.add_argument("--modes", type=_choices(MODES), default=list(MODES),
                        help="UNet execution modes (default eager,cuda-graph; cuda-graph needs CUDA)")
    parser.add_argument("--budget-s", type=_positive_float, default=420.0,
                        help="skip what is left after this many seconds (default 420)")
    parser.add_argument("--sparse-ratio", type=_ratio, default=0.1)
    parser.add_argument("--seed", type=_count(0), default=0)
    parser.add_argument("--prompt", default="rain on a tin roof")
    parser.add_argument("--skip-generation", action="store_true", help="no whole generation")
    parser.add_argument("--skip-kernel", action="store_true", help="no fp32 kernel precision table")
    parser.add_argument("--out", type=Path, default=Path("device_check_out"), help="folder for e2e.json and e2e.md")
    args = parser.parse_args(argv)
    if not re.fullmatch(r"cpu|cuda(:\d+)?", args.device):
        parser.error(f"--device must be cpu, cuda or cuda:N, got {args.device!r}")
    return args


def interpreter_on() -> bool:
    return os.environ.get("TRITON_INTERPRET", "").lower() in ("1", "true", "on")


# --- small helpers ----------------------------------------------------------------------------------------


def kernel_module() -> Any:
    """The Triton kernel module, imported the way the custom op imports it (installed or from this checkout)."""
    return plugin_module("triton.dual_sparse_attention")


def describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {first_line(error)}"


class Budget:
    """Wall-clock budget: sections and repeat loops ask before they start another piece of work."""

    def __init__(self, seconds: float):
        self.start, self.seconds = time.perf_counter(), seconds

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def exhausted(self) -> bool:
        return self.elapsed() > self.seconds


class Device:
    """Timing and memory on one device: CUDA events and the allocator's peak, or perf_counter and RSS."""

    def __init__(self, torch: Any, name: str):
        self.torch = torch
        self.device = torch.device(name)
        self.cuda = self.device.type == "cuda"

    def sync(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize(self.device)

    def mark(self) -> Any:
        if self.cuda:
            event = self.torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return time.perf_counter()

    def ms(self, start: Any, end: Any) -> float:
        """Milliseconds between two marks (call ``sync`` first on CUDA)."""
        return start.elapsed_time(end) if self.cuda else (end - start) * 1e3

    def time_ms(self, fn: Callable[[], Any]) -> float:
        self.sync()
        start = self.mark()
        fn()
        end = self.mark()
        self.sync()
        return self.ms(start, end)

    def reset_peak(self) -> None:
        if self.cuda:
            self.torch.cuda.reset_peak_memory_stats(self.device)

    def peak_mb(self) -> float | None:
        return self.torch.cuda.max_memory_allocated(self.device) / 2**20 if self.cuda else None

    def release(self) -> None:
        if self.cuda:
            self.torch.cuda.empty_cache()


@contextlib.contextmanager
def exact_fp32(torch: Any) -> Iterator[None]:
    """No TF32 in torch's CUDA matmuls and convolutions (nor in the fused kernel, which follows matmuls)."""
    matmul, conv = torch.backends.cuda.matmul, getattr(torch.backends.cudnn, "conv", None)
    if hasattr(matmul, "fp32_precision") and conv is not None and hasattr(conv, "fp32_precision"):
        targets = [(matmul, "fp32_precision", "ieee"), (conv, "fp32_precision", "ieee")]
    else:  # torch before the fp32_precision settings
        targets = [(matmul, "allow_tf32", False), (torch.backends.cudnn, "allow_tf32", False)]
    saved = [getattr(obj, name) for obj, name, _ in targets]
    for obj, name, value in targets:
        setattr(obj, name, value)
    try:
        yield
    finally:
        for (obj, name, _), value in zip(targets, saved):
            setattr(obj, name, value)


@contextlib.contextmanager
def counting(targets: dict[str, tuple[Any, str]]) -> Iterator[dict[str, int]]:
    """Count calls of ``obj.attr`` for each ``label: (obj, attr)`` (module functions, instance callables)."""
    counts = dict.fromkeys(targets, 0)
    saved = {label: getattr(obj, attr) for label, (obj, attr) in targets.items()}

    def wrap(label: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def counted(*args: Any, **kwargs: Any) -> Any:
            counts[label] += 1
            return fn(*args, **kwargs)

        return counted

    for label, (obj, attr) in targets.items():
        setattr(obj, attr, wrap(label, saved[label]))
    try:
        yield counts
    finally:
        for label, (obj, attr) in targets.items():
            setattr(obj, attr, saved[label])


@contextlib.contextmanager
def host_syncs(device: Device) -> Iterator[dict[str, int | None]]:
    """Count CUDA operations that block the host (torch's sync debug mode) inside the block; None on CPU."""
    result: dict[str, int | None] = {"count": None}
    if not device.cuda:
        yield result
        return
    torch = device.torch
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            yield result
        finally:
            torch.cuda.set_sync_debug_mode("default")
    result["count"] = sum("synchroniz" in str(w.message) for w in caught)


class RecordingSamples:
    """A sample source that passes another one's samples through and records them (layer, tokens, index)."""

    def __init__(self, inner: Any):
        self.inner = inner
        self.calls: list[tuple[str, int, Any]] = []

    def __call__(self, layer: str, n_tokens: int) -> Any:
        index = self.inner(layer, n_tokens)
        self.calls.append((layer, n_tokens, index))
        return index


class StagedSamples:
    """Samples in one device buffer, refilled from a seeded numpy source before each call: CUDA-graph safe.

    Each layer gets a fixed view of the buffer (so a captured graph reads whatever was copied in last);
    ``refill`` draws every layer's next sample on the host into pinned memory, and copies it with one
    asynchronous copy. The host waits only for the previous copy before overwriting the pinned buffer.
    """

    def __init__(self, torch: Any, layout: list[tuple[str, int]], source: Any, device: Device):
        self.torch, self.source, self.device = torch, source, device
        sizes = [len(source(name, n_tokens)) for name, n_tokens in layout]  # also advances the generator once
        offsets = [sum(sizes[:i]) for i in range(len(sizes))]
        total = max(sum(sizes), 1)
        self.layout = [(name, n, o, m) for (name, n), o, m in zip(layout, offsets, sizes)]
        self.host = torch.empty(total, dtype=torch.int64, pin_memory=device.cuda)
        self.buffer = torch.zeros(total, dtype=torch.int64, device=device.device)
        self.views = {name: self.buffer[o:o + m] for name, _, o, m in self.layout}
        self.copied: Any = None
        self.refill()

    def refill(self) -> None:
        if self.copied is not None:
            self.copied.synchronize()
        host = self.host.numpy()
        for name, n_tokens, offset, size in self.layout:
            host[offset:offset + size] = self.source(name, n_tokens)
        self.buffer.copy_(self.host, non_blocking=True)
        if self.device.cuda:
            self.copied = self.torch.cuda.Event()
            self.copied.record()

    def __call__(self, layer: str, n_tokens: int) -> Any:
        return self.views[layer]


# --- the check ------------------------------------------------------------------------------------------


class Check:
    """State shared by the sections: the model, the device, results, budget."""

    def __init__(self, args: argparse.Namespace):
        import torch

        from .. import attention
        from ..attention import op as op_module
        from ..models import load_unet, model_facts

        self.args, self.torch, self.attention, self.op_module = args, torch, attention, op_module
        self.dev = Device(torch, args.device)
        self.budget = Budget(args.budget_s)
        self.facts = model_facts(args.model)
        self.dtypes = args.dtype or (["fp16", "bf16"] if self.dev.cuda else ["fp32"])
        self.torch_dtypes = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
        try:
            self.kernel = kernel_module()
        except ImportError as error:  # no triton: only the dense form exists
            self.kernel, self.kernel_note = None, describe(error)
        else:
            self.kernel_note = None
        # where LiteFocus runs: the fused kernel on CUDA; on CPU the custom op's dense form, except in the
        # parity evaluation under TRITON_INTERPRET=1, which routes the op's CPU calls to the interpreted kernel
        self.kernel_on_cpu = False
        if not self.dev.cuda and interpreter_on() and self.kernel is not None:
            self._route_cpu_calls_to_kernel()
        self.results: dict[str, Any] = {"environment": self.environment(), "settings": self.settings(),
                                        "checks": {}, "skipped": [], "errors": []}
        self.cpu_unet = load_unet(args.model)  # fp32, CPU: the source of every copy, and the parity reference
        self.cpu_unet.eval()

    # --- bookkeeping

    def environment(self) -> dict[str, Any]:
        torch = self.torch
        env: dict[str, Any] = {
            "python": platform.python_version(), "torch": torch.__version__,
            "device": torch.cuda.get_device_name(self.dev.device) if self.dev.cuda else f"CPU ({platform.machine()})",
            "timing": "CUDA events" if self.dev.cuda else "time.perf_counter",
            "memory": "torch.cuda.max_memory_allocated" if self.dev.cuda else "peak RSS (VmHWM)",
            "triton_interpreter": interpreter_on(),
        }
        if self.dev.cuda:
            env["compute_capability"] = ".".join(map(str, torch.cuda.get_device_capability(self.dev.device)))
        for name in ("triton", "diffusers", "transformers"):
            try:
                env[name] = importlib.import_module(name).__version__
            except ImportError:
                env[name] = None
        return env

    def settings(self) -> dict[str, Any]:
        a = self.args
        return {"model": a.model, "dtypes": self.dtypes, "seconds": a.seconds,
                "generation_seconds": a.generation_seconds or max(a.seconds),
                "parity_seconds": a.parity_seconds or min(a.seconds), "steps": a.steps, "repeats": a.repeats,
                "warmup": a.warmup, "modes": a.modes, "budget_s": a.budget_s, "sparse_ratio": a.sparse_ratio,
                "seed": a.seed, "scheduler": "ddim", "batch": 2}

    def skip(self, what: str, why: str) -> None:
        self.results["skipped"].append({"what": what, "why": why})
        print(f"skipped {what}: {why}", flush=True)

    def over_budget(self, what: str) -> bool:
        if self.budget.exhausted():
            self.skip(what, f"time budget of {self.args.budget_s:g} s used up")
            return True
        return False

    def write(self) -> None:
        out = self.args.out
        out.mkdir(parents=True, exist_ok=True)
        self.results["wall_s"] = round(self.budget.elapsed(), 2)
        self.results["ok"] = not self.results["errors"] and all(c["passed"] for c in self.results["checks"].values())
        (out / "e2e.json").write_text(json.dumps(self.results, indent=1, default=str) + "\n")
        (out / "e2e.md").write_text(markdown(self.results))

    def section(self, name: str, fn: Callable[[], None]) -> None:
        print(f"== {name} ({self.budget.elapsed():.0f} s)", flush=True)
        try:
            fn()
        except Exception as error:  # one section's failure must not cost the others' measurements
            self.results["errors"].append({"section": name, "error": describe(error)})
            print(f"error in {name}: {describe(error)}", file=sys.stderr, flush=True)
            traceback.print_exc()
            self.dev.release()
        self.write()

    # --- the model

    def config(self) -> Any:
        return self.attention.LiteFocusConfig(sparse_ratio=self.args.sparse_ratio, seed=self.args.seed)

    def random_samples(self) -> Any:
        from ..core.seeds import seeded_streams

        return self.attention.RandomSamples(self.args.sparse_ratio, generator=seeded_streams(self.args.seed)[1])

    def patch(self, unet: Any, samples: Any) -> list[str]:
        geometry = self.facts.geometry
        return self.attention.patch_unet(unet, self.config(), samples, freq_bins=geometry.latent_freq_bins,
                                         context_free=self.facts.context_free)

    def unet_copy(self, dtype: str) -> Any:
        return copy.deepcopy(self.cpu_unet).to(device=self.dev.device, dtype=self.torch_dtypes[dtype]).eval()

    def inputs(self, seconds: float, dtype: str, device: Any = None) -> tuple[Any, Any, dict[str, Any]]:
        """Seeded batch-2 UNet inputs (``contract.example_unet_feeds``) as (sample, timestep, kwargs)."""
        from ..core.contract import example_unet_feeds, unet_call_arguments, unet_inputs

        facts, torch = self.facts, self.torch
        descriptions = unet_inputs(facts.kind, facts.unet_config, facts.geometry.latent_freq_bins)
        feeds = example_unet_feeds(descriptions, facts.geometry.latent_frames(seconds), self.args.seed)
        device = self.dev.device if device is None else device
        tensors = {}
        for name, array in feeds.items():
            tensor = torch.from_numpy(array).to(device)
            tensors[name] = tensor.to(self.torch_dtypes[dtype]) if tensor.is_floating_point() and name != "timestep" \
                else tensor
        return unet_call_arguments(tensors)

    @staticmethod
    def unet_call(unet: Any, inputs: tuple[Any, Any, dict[str, Any]]) -> Callable[[], Any]:
        sample, timestep, kwargs = inputs
        return lambda: unet(sample, timestep, **kwargs, return_dict=False)[0]

    # --- routing: which implementation every patched layer ran

    def _route_cpu_calls_to_kernel(self) -> None:
        op, check = self.op_module.dual_sparse_attention_op, self

        @op.register_kernel("cpu")
        def _cpu(q, k, v, sample_index, freq_bins, scale, same_frequency, cross_frequency):  # noqa: ANN001, ANN202
            kwargs = dict(freq_bins=freq_bins, scale=scale, same_frequency=same_frequency,
                          cross_frequency=cross_frequency)
            if check.kernel_on_cpu:  # attribute lookups at call time, so `counting` sees the calls
                return check.kernel.dual_sparse_attention_triton(q, k, v, sample_index, **kwargs)
            return check.op_module.dual_sparse_attention_fast(q, k, v, sample_index, **kwargs)

    def routing(self, unet: Any, call: Callable[[], Any], kernel_expected: bool) -> dict[str, Any]:
        """Run ``call`` once, counting per patched layer call which implementation ran, and host syncs."""
        state = self.attention.litefocus_state(unet)
        source = state.samples
        recorder = RecordingSamples(source)
        targets = {"dense_form_calls": (self.op_module, "dual_sparse_attention_fast")}
        if self.kernel is not None:
            targets["fused_kernel_calls"] = (self.kernel, "dual_sparse_attention_triton")
        for name, processor in state.processors.items():
            targets[f"fallback {name}"] = (processor, "fallback")
        state.set_samples(recorder)
        try:
            with self.torch.inference_mode(), counting(targets) as counts, host_syncs(self.dev) as syncs:
                output = call()
        finally:
            state.set_samples(source)
        self.dev.sync()
        fallbacks = sum(v for k, v in counts.items() if k.startswith("fallback "))
        handled = len(recorder.calls)
        fused = counts.get("fused_kernel_calls", 0)
        expected = "fused Triton kernel" if kernel_expected else "dense SDPA form"
        passed = (handled == len(state.layers) and fallbacks == 0
                  and (fused, counts["dense_form_calls"]) == ((handled, 0) if kernel_expected else (0, handled)))
        return {"patched_layers": len(state.layers), "litefocus_calls": handled, "fused_kernel_calls": fused,
                "dense_form_calls": counts["dense_form_calls"], "fallback_calls": fallbacks,
                "host_syncs": syncs["count"], "expected_path": expected, "passed": passed,
                "samples": recorder.calls, "output": output}

    # --- 1. parity and routing

    def parity(self) -> None:
        torch, args = self.torch, self.args
        seconds = args.parity_seconds or min(args.seconds)
        kernel_in_path = self.dev.cuda or (self.kernel is not None and interpreter_on())
        unet = self.unet_copy("fp32")
        self.patch(unet, self.random_samples())
        call = self.unet_call(unet, self.inputs(seconds, "fp32"))
        with exact_fp32(torch):
            self.kernel_on_cpu = kernel_in_path and not self.dev.cuda
            try:
                route = self.routing(unet, call, kernel_expected=kernel_in_path)
            finally:
                self.kernel_on_cpu = False
        device_out = route.pop("output").float().cpu()
        samples = route.pop("samples")
        del unet, call
        self.dev.release()

        queued: dict[str, list[Any]] = {}
        for layer, _, index in samples:
            queued.setdefault(layer, []).append(index.cpu().numpy() if hasattr(index, "cpu") else index)
        self.patch(self.cpu_unet, self.attention.QueuedSamples(queued))
        try:
            for processor in self.attention.litefocus_state(self.cpu_unet).processors.values():
                processor.impl = "reference"
            with torch.inference_mode():
                reference = self.unet_call(self.cpu_unet, self.inputs(seconds, "fp32", device="cpu"))().float()
        finally:
            self.attention.unpatch(self.cpu_unet)
        error = float((device_out - reference).abs().max() / reference.abs().max().clamp_min(1e-12))
        passed = math.isfinite(error) and error <= PARITY_TOLERANCE
        self.results["parity"] = {"seconds": seconds, "dtype": "fp32", "device_path": route["expected_path"],
                                  "reference_path": "CPU, impl=reference (einsum)", "max_rel_err": error,
                                  "tolerance": PARITY_TOLERANCE, "passed": passed}
        self.results["routing"] = {"parity fp32": route}
        self.results["checks"]["parity"] = {"passed": passed, "detail": f"max rel err {error:.2e}"}
        self.results["checks"]["routing parity fp32"] = {"passed": route["passed"], "detail": route_text(route)}
        print(f"parity at {seconds:g} s: max rel err {error:.2e} ({'PASS' if passed else 'FAIL'}); "
              f"routing: {route_text(route)}", flush=True)

    # --- 2. kernel fp32 precisions

    def kernel_fp32(self) -> None:
        torch = self.torch
        if self.kernel is None:
            self.skip("kernel fp32", f"the Triton kernel does not import ({self.kernel_note})")
            return
        if not (self.dev.cuda or interpreter_on()):
            self.skip("kernel fp32", "needs CUDA, or TRITON_INTERPRET=1 on CPU")
            return
        import torch.nn.functional as F

        from ..attention.fast import dual_sparse_attention_fast
        from ..attention.reference import dual_sparse_attention_reference

        batch, heads, frames, bins, samples, dim = shape = KERNEL_SHAPE["cuda" if self.dev.cuda else "cpu"]
        gen = torch.Generator(device=self.dev.device).manual_seed(1)
        q, k, v = (torch.randn(batch, heads, frames * bins, dim, device=self.dev.device, generator=gen)
                   for _ in range(3))
        index = torch.randperm(frames * bins, device=self.dev.device, generator=gen)[:samples]
        with exact_fp32(torch):
            ref = dual_sparse_attention_reference(q, k, v, index, freq_bins=bins)
            base = self.kernel.block_config(dim, "fp32")
            impls: dict[str, Callable[[], Any]] = {}
            for precision in self.kernel.FP32_DOT_PRECISIONS:
                config = dataclasses.replace(base, fp32_dot=precision)
                impls[f"fused kernel, fp32_dot={precision}"] = (
                    lambda c=config: self.kernel.dual_sparse_attention_triton(q, k, v, index, freq_bins=bins, config=c))
            impls["dense form (SDPA over T+M keys)"] = lambda: dual_sparse_attention_fast(q, k, v, index,
                                                                                         freq_bins=bins)
            impls["full attention SDPA over N"] = lambda: F.scaled_dot_product_attention(q, k, v)
            rows = []
            for name, fn in impls.items():
                if self.over_budget(f"kernel fp32: {name}"):
                    continue
                try:  # tf32x3 / tf32 are candidates: one that does not compile is a finding, not a crash
                    out = fn()
                    error = None if name.startswith("full") else float((out - ref).abs().max() / ref.abs().max())
                    ms = self._bench(fn)
                except Exception as failure:
                    rows.append({"impl": name, "ms": None, "max_rel_err": None, "within_tolerance": None,
                                 "error": describe(failure)})
                    print(f"kernel fp32 {name}: {describe(failure)}", file=sys.stderr, flush=True)
                    continue
                rows.append({"impl": name, "ms": ms, "max_rel_err": error,
                             "within_tolerance": None if error is None else error <= KERNEL_TOLERANCE})
        dense = next((r["ms"] for r in rows if r["impl"].startswith("dense")), None)
        for row in rows:
            row["vs_dense"] = ratio(dense, row["ms"])
        self.results["kernel_fp32"] = {"shape": dict(zip("BHTFMD", shape)), "rows": rows,
                                       "tolerance": KERNEL_TOLERANCE}
        ieee = next((r for r in rows if r["impl"].endswith("=ieee")), None)
        if ieee is not None:  # the default: it must hold the reference tolerance
            error = ieee["max_rel_err"]
            self.results["checks"]["kernel fp32 ieee"] = {
                "passed": error is not None and error <= KERNEL_TOLERANCE,
                "detail": ieee.get("error") or f"max rel err {error:.2e}"}

    def _bench(self, fn: Callable[[], Any]) -> float:
        if self.dev.cuda:
            import triton.testing

            return float(triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median"))
        return median([self.dev.time_ms(fn) for _ in range(max(1, self.args.repeats))])

    # --- 3. one UNet evaluation

    def unet(self) -> None:
        self.results["unet"] = []
        self.results.setdefault("routing", {})
        for dtype in self.dtypes:
            if self.over_budget(f"UNet {dtype}"):
                continue
            unet = self.unet_copy(dtype)
            try:
                self._unet_dtype(unet, dtype)
            finally:
                self.attention.unpatch(unet)
                del unet
                self.dev.release()
            self.write()

    def _unet_dtype(self, unet: Any, dtype: str) -> None:
        args, torch = self.args, self.torch
        # routing and host syncs per evaluation, eager, at the shortest duration (stock, then LiteFocus)
        call = self.unet_call(unet, self.inputs(min(args.seconds), dtype))
        with torch.inference_mode():
            for _ in range(max(1, args.warmup)):
                call()
            with host_syncs(self.dev) as stock_syncs:
                call()
        self.patch(unet, self.random_samples())
        with torch.inference_mode():
            call()  # compile the kernel for this shape outside the sync count
        route = self.routing(unet, call, kernel_expected=self.dev.cuda)
        del route["output"], route["samples"]
        route["stock_host_syncs"] = stock_syncs["count"]
        self.results["routing"][f"UNet {dtype}"] = route
        self.results["checks"][f"routing UNet {dtype}"] = {"passed": route["passed"], "detail": route_text(route)}
        if self.dev.cuda:  # LiteFocus may not add host synchronisations (e.g. a blocking sample copy per layer)
            extra = route["host_syncs"] - stock_syncs["count"]
            self.results["checks"][f"host syncs UNet {dtype}"] = {
                "passed": extra <= 0, "detail": f"LiteFocus {route['host_syncs']}, stock {stock_syncs['count']}"}
        print(f"routing {dtype}: {route_text(route)}; host syncs per evaluation: stock {stock_syncs['count']}, "
              f"LiteFocus {route['host_syncs']}", flush=True)
        self.attention.unpatch(unet)

        for seconds in args.seconds:
            inputs = self.inputs(seconds, dtype)
            for mode in args.modes:
                for impl in ("stock", "litefocus"):
                    what = f"UNet {dtype} {seconds:g} s {mode} {impl}"
                    if mode == "cuda-graph" and not self.dev.cuda:
                        self.skip(what, "CUDA graphs need CUDA")
                        continue
                    if self.over_budget(what):
                        continue
                    row = {"dtype": dtype, "seconds": seconds, "latent_frames": int(inputs[0].shape[2]),
                           "mode": mode, "impl": impl}
                    try:
                        row.update(self._time_unet(unet, inputs, mode, impl))
                    except Exception as error:  # e.g. a capture that fails: record it, measure the rest
                        row.update(status="error", note=describe(error))
                        self.results["errors"].append({"section": what, "error": describe(error)})
                        print(f"error in {what}: {describe(error)}", file=sys.stderr, flush=True)
                    finally:
                        self.attention.unpatch(unet)
                        self.dev.release()
                    self.results["unet"].append(row)
                    if row.get("ms") is not None:
                        print(f"{what}: {row['ms']:.2f} ms, peak {mb_text(row['peak_mb'])}", flush=True)

    def _time_unet(self, unet: Any, inputs: tuple, mode: str, impl: str) -> dict[str, Any]:
        torch, args, dev = self.torch, self.args, self.dev
        call = self.unet_call(unet, inputs)
        refill: Callable[[], None] | None = None
        if impl == "litefocus" and mode == "eager":  # host draws, as users run it
            self.patch(unet, self.random_samples())
        elif impl == "litefocus":  # device-resident samples, refilled before each replay
            recorder = RecordingSamples(self.random_samples())
            self.patch(unet, recorder)
            with torch.inference_mode():
                call()
            layout = [(name, n_tokens) for name, n_tokens, _ in recorder.calls]
            staged = StagedSamples(torch, layout, self.random_samples(), dev)
            self.attention.litefocus_state(unet).set_samples(staged)
            refill = staged.refill
        dev.sync()
        dev.reset_peak()
        graph = None
        with torch.inference_mode():
            if mode == "cuda-graph":
                graph, call = self._capture(call, refill)
            for _ in range(args.warmup):
                call()
            times: list[float] = []
            for _ in range(args.repeats):
                times.append(dev.time_ms(call))
                if self.budget.exhausted():
                    break
        peak = dev.peak_mb()
        del graph
        note = f"{len(times)} of {args.repeats} repeats (budget)" if len(times) < args.repeats else None
        return {"ms": median(times), "ms_all": times, "peak_mb": peak, "status": "ok", "note": note}

    def _capture(self, call: Callable[[], Any], refill: Callable[[], None] | None) -> tuple[Any, Callable[[], Any]]:
        """Capture ``call`` into a CUDA graph (after warm-up on a side stream); returns (graph, replay)."""
        torch = self.torch
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):
                if refill:
                    refill()
                call()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_out = call()

        def replay() -> Any:
            if refill:
                refill()
            graph.replay()
            return static_out

        return graph, replay

    # --- 4. whole generation

    def generation(self) -> None:
        from ..core.request import GenerationRequest
        from ..models import load_pipeline
        from ..pytorch import generate_torch

        args, dev = self.args, self.dev
        dtype = self.dtypes[0]
        seconds = args.generation_seconds or max(args.seconds)
        pipe = load_pipeline(args.model, device=str(dev.device), dtype=self.torch_dtypes[dtype])
        pipe.set_progress_bar_config(disable=True)
        request = GenerationRequest(prompt=args.prompt, seconds=seconds, steps=args.steps, seed=args.seed,
                                    scheduler="ddim")
        result: dict[str, Any] = {"seconds": seconds, "steps": args.steps, "dtype": dtype, "scheduler": "ddim",
                                  "prompt": args.prompt, "runs": {}}
        self.results["generation"] = result
        for attention in ("full", "litefocus"):
            impl = "stock" if attention == "full" else "litefocus"
            if self.over_budget(f"generation {impl} warm-up"):
                continue
            if args.warmup:  # one 1-step generation of the same length: kernels, allocator, cuDNN
                generate_torch(pipe, dataclasses.replace(request, steps=1), attention=attention, config=self.config())
            runs: list[dict[str, Any]] = []
            for _ in range(args.repeats):
                if self.over_budget(f"generation {impl} repeat {len(runs) + 1}"):
                    break
                runs.append(self._one_generation(pipe, request, attention, generate_torch))
            if runs:
                result["runs"][impl] = _summarise_runs(runs)
                summary = result["runs"][impl]
                print(f"generation {impl}: {summary['end_to_end_ms']:.0f} ms end to end, UNet steps "
                      f"{summary['unet_steps_ms']:.0f} ms, finite {summary['finite']}", flush=True)
            self.write()
        stock, lite = result["runs"].get("stock"), result["runs"].get("litefocus")
        if stock and lite:
            result["speedup"] = {f"{k}": ratio(stock[f"{k}_ms"], lite[f"{k}_ms"]) for k in (*STAGES, "end_to_end")}
            passed = lite["finite"] or not stock["finite"]
            self.results["checks"]["generation finite"] = {
                "passed": passed, "detail": f"waveform finite: stock {stock['finite']}, LiteFocus {lite['finite']}"}
        del pipe
        dev.release()

    def _one_generation(self, pipe: Any, request: Any, attention: str, generate: Callable[..., Any]) -> dict:
        """One timed generation: marks at the first UNet call, around VAE decodes and vocoder calls."""
        import numpy as np

        dev = self.dev
        marks: dict[str, Any] = {}
        spans: dict[str, list[tuple[Any, Any]]] = {"vae_decode": [], "vocoder": []}
        peaks: dict[str, float | None] = {}

        def boundary(stage_done: str) -> None:  # the stage before this one has ended: take its peak memory
            if stage_done not in peaks:
                peaks[stage_done] = dev.peak_mb()
                dev.reset_peak()

        def wrap(label: str, fn: Callable[..., Any]) -> Callable[..., Any]:
            def timed(*args: Any, **kwargs: Any) -> Any:
                if label == "unet":
                    if "unet_start" not in marks:
                        boundary("conditioning")
                        marks["unet_start"] = dev.mark()
                    return fn(*args, **kwargs)
                boundary("unet_steps" if label == "vae_decode" else "vae_decode")
                start = dev.mark()
                out = fn(*args, **kwargs)
                spans[label].append((start, dev.mark()))
                return out
            return timed

        targets = {"unet": (pipe.unet, "forward"), "vae_decode": (pipe.vae, "decode"),
                   "vocoder": (pipe.vocoder, "forward")}
        saved = {label: vars(obj).get(name) for label, (obj, name) in targets.items()}
        for label, (obj, name) in targets.items():
            setattr(obj, name, wrap(label, getattr(obj, name)))
        try:
            dev.sync()
            dev.reset_peak()
            start = dev.mark()
            waveform = generate(pipe, request, attention=attention, config=self.config())
            end = dev.mark()
            boundary("vocoder")
            dev.sync()
        finally:
            for label, (obj, name) in targets.items():
                if saved[label] is None:
                    delattr(obj, name)
                else:
                    setattr(obj, name, saved[label])
        vae_start = spans["vae_decode"][0][0] if spans["vae_decode"] else end
        times = {
            "conditioning_ms": dev.ms(start, marks.get("unet_start", vae_start)),
            "unet_steps_ms": dev.ms(marks["unet_start"], vae_start) if "unet_start" in marks else 0.0,
            "vae_decode_ms": sum(dev.ms(a, b) for a, b in spans["vae_decode"]),
            "vocoder_ms": sum(dev.ms(a, b) for a, b in spans["vocoder"]),
            "end_to_end_ms": dev.ms(start, end),
        }
        memory = {f"{stage}_peak_mb": peaks.get(stage) for stage in STAGES}
        return {**times, **memory, "finite": bool(np.isfinite(waveform).all()), "waveform_samples": len(waveform)}

    # --- run

    def run(self) -> int:
        args = self.args
        self.section("parity and routing", self.parity)
        if args.skip_kernel:
            self.skip("kernel fp32", "--skip-kernel")
        elif not self.over_budget("kernel fp32"):
            self.section("kernel fp32", self.kernel_fp32)
        if not self.over_budget("UNet"):
            self.section("UNet", self.unet)
        if args.skip_generation:
            self.skip("generation", "--skip-generation")
        elif not self.over_budget("generation"):
            self.section("generation", self.generation)
        if not self.dev.cuda:
            self.results["peak_rss_mb"] = peak_rss_mb()
        self.write()
        print("\n" + markdown(self.results), flush=True)
        print(f"wrote {args.out / 'e2e.json'} and {args.out / 'e2e.md'}", flush=True)
        return 0 if self.results["ok"] else 1


def _summarise_runs(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Median of each time over the runs; the largest peak of each stage; finite only if every run was."""
    summary: dict[str, Any] = {"runs": len(runs)}
    for key in runs[0]:
        values = [r[key] for r in runs]
        if key.endswith("_ms"):
            summary[key] = median(values)
            summary[f"{key}_all"] = values
        elif key.endswith("_peak_mb"):
            summary[key] = max(values) if all(v is not None for v in values) else None
        elif key == "finite":
            summary[key] = all(values)
        else:
            summary[key] = values[0]
    return summary


# --- main -----------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    from ..core.errors import UsageError

    def usage(message: str) -> int:
        print(f"{PROG}: error: {message}", file=sys.stderr)
        return 2

    if args.device.startswith("cuda"):
        if not torch.cuda.is_available():
            return usage("no CUDA device; use --device cpu (with --model random:audioldm2-tiny)")
        if interpreter_on():
            return usage("TRITON_INTERPRET=1 runs Triton kernels on CPU tensors: unset it for --device cuda")
    for name in ("diffusers", "transformers"):
        try:
            importlib.import_module(name)
        except ImportError:
            return usage(f"{name} is not installed")
    try:
        from ..models import model_facts

        model_facts(args.model)
    except UsageError as error:
        return usage(str(error))
    for name in ("diffusers", "transformers"):
        importlib.import_module(name).utils.logging.set_verbosity_error()
    warnings.filterwarnings("ignore", category=FutureWarning)
    return Check(args).run()


if __name__ == "__main__":
    sys.exit(main())
