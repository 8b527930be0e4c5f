"""``litefocus-export``: patch, export, build, generate, inspect, report.

Commands stay short: they parse options, build the steps and run them. Errors of the
``LiteFocusError`` family become one line on stderr (exit 2 for usage, 1 otherwise); ``--debug``
shows the traceback.

Why one module over ~400 lines: it is the command table (one short function per command plus the shared option
groups); the work lives in the packages each command calls.
"""

from __future__ import annotations

import logging
import signal
import sys
from pathlib import Path

import click

from .artifacts.audio import DEFAULT_FORMAT, WAV_FORMATS, write_wav
from .artifacts.outputs import check_not_terminated, request_termination
from .core.choices import (
    ATTENTION_POLICIES,
    ATTENTIONS,
    ENGINE_BACKENDS,
    ENGINE_PRECISIONS,
    EXPORT_PRECISIONS,
    SCHEDULERS,
)
from .core.contract import DEFAULT_LEVELS, DEFAULT_SPARSE_RATIO, MIN_OPSET, check_levels, check_sparse_ratio
from .core.errors import LiteFocusError, UsageError
from .devicecheck import CHECKS
from .models.specs import DEFAULT_SPEC as DEFAULT_MODEL
from .models.specs import check_spec

log = logging.getLogger("litefocus_export")
DEFAULT_LEVELS_TEXT = ",".join(map(str, DEFAULT_LEVELS))
MODEL_HELP = ("Built-in random model (random:audioldm2-tiny, ...), local diffusers folder, or Hugging Face id "
              "ORG/NAME[@REVISION] (e.g. cvssp/audioldm2) from the hub cache; downloaded when missing unless "
              "HF_HUB_OFFLINE=1.")
FORCE_HELP = ("Replace the output folder even when it holds files that are not a litefocus-export folder "
              "(without it such a folder is refused and left as it is).")


class Group(click.Group):
    """Turns our exceptions and click's usage errors into one-line errors unless --debug is on."""

    def invoke(self, ctx: click.Context):  # noqa: ANN201
        try:
            result = super().invoke(ctx)
            check_not_terminated()  # a SIGTERM whose SystemExit was dropped still ends in 128 + signal
            return result
        except LiteFocusError as exc:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            click.echo(f"error: {exc}", err=True)
            ctx.exit(2 if isinstance(exc, UsageError) else 1)
        except click.UsageError as exc:  # a bad option value: one line too, not click's usage block
            if ctx.obj and ctx.obj.get("debug"):
                raise
            command = f" (see litefocus-export {exc.ctx.command.name} --help)" if exc.ctx and exc.ctx.command else ""
            click.echo(f"error: {exc.format_message()}{command}", err=True)
            ctx.exit(2)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            ctx.exit(130)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show tracebacks and debug logs.")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors.")
@click.version_option(package_name="litefocus-export")
@click.pass_context
def main(ctx: click.Context, debug: bool, quiet: bool) -> None:
    """LiteFocus dual-sparse attention for audio diffusion: from a diffusers pipeline to engines."""
    ctx.ensure_object(dict)["debug"] = debug
    level = logging.DEBUG if debug else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(level=level, format="%(message)s", stream=sys.stderr)
    if not debug:
        quiet_third_parties()
    # SIGTERM unwinds like an error: partial folders and temp files are removed on the way out
    signal.signal(signal.SIGTERM, _terminate)


def _terminate(signum: int, frame: object) -> None:
    request_termination(signum)


def quiet_third_parties() -> None:
    """Third-party warnings and log lines only with --debug: ours say what matters, in one line."""
    import os
    import warnings

    warnings.filterwarnings("ignore")
    # torch sets its loggers' levels when imported (after this runs): its own switch keeps them at ERROR
    os.environ.setdefault("TORCH_LOGS", "-all")
    for noisy in ("diffusers", "transformers", "torch", "onnxscript", "onnx_ir", "polygraphy", "onnxruntime"):
        logging.getLogger(noisy).setLevel(logging.ERROR)


EXPORT_MODULES = ("torch", "diffusers", "transformers", "onnx", "onnxscript")


def require_export_extra(command: str) -> None:
    """One line (exit 2) when a command needs the ``export`` extra a serving host does not install."""
    import importlib.util

    missing = [name for name in EXPORT_MODULES if importlib.util.find_spec(name) is None]
    if missing:
        raise UsageError(f"'{command}' needs the export extra ({', '.join(missing)} not installed): "
                         f"pip install 'litefocus-export[export]'")


def attention_options(func, choices: tuple[str, ...] = ATTENTION_POLICIES):  # noqa: ANN001, ANN201
    """--attention / --sparse-ratio / --levels, shared by generate, export and build (``auto``: by length)."""
    func = click.option("--levels", default=DEFAULT_LEVELS_TEXT, show_default=True,
                        help="Comma-separated latent widths (frequency bins) of the levels to patch.")(func)
    func = click.option("--sparse-ratio", type=float, default=DEFAULT_SPARSE_RATIO, show_default=True,
                        help="Fraction of tokens sampled for cross-frequency compensation.")(func)
    func = click.option("--attention", type=click.Choice(choices), default="litefocus", show_default=True,
                        help="LiteFocus or the stock full attention" + (
                            "; auto: full attention up to 10.24 s (the checkpoints' training length), LiteFocus "
                            "beyond (build: by the profile's longest duration)." if "auto" in choices else "."))(func)
    return func


def concrete_attention_options(func):  # noqa: ANN001, ANN201
    """``attention_options`` without ``auto``: an export has no duration to decide it by."""
    return attention_options(func, ATTENTIONS)


def litefocus_config(sparse_ratio: float, levels: str):  # noqa: ANN201
    from .attention.config import LiteFocusConfig

    return LiteFocusConfig(sparse_ratio=sparse_ratio, levels=parse_levels(levels))


def request_options(func):  # noqa: ANN001, ANN201
    """Options of one generation request."""
    for decorator in reversed([
        click.option("--prompt", required=True, help="Text prompt."),
        click.option("--seconds", type=str, default="10", show_default=True, help="Audio length."),
        click.option("--steps", type=int, default=10, show_default=True, help="Denoising steps."),
        click.option("--seed", type=int, default=0, show_default=True, help="Seed for noise and samples."),
        click.option("--guidance", type=float, default=None,
                     help="Classifier-free guidance scale in [1, 20], 1 = none  [default: the pipeline's: "
                          "AudioLDM2 3.5, AudioLDM 2.5, MusicLDM 2.0]"),
        click.option("--negative-prompt", default=None, help="Negative prompt (default: empty)."),
        click.option("--scheduler", type=click.Choice(SCHEDULERS), default="ddim", show_default=True),
        click.option("--out", "out", required=True,
                     help="WAV file to write ('-': standard output). A file is replaced atomically; a device or "
                          "FIFO is written through."),
        click.option("--format", "wav_format", type=click.Choice(list(WAV_FORMATS)), default=DEFAULT_FORMAT,
                     show_default=True, help="WAV sample format (float32 keeps values past +-1; many tools "
                                             "cannot read it)."),
    ]):
        func = decorator(func)
    return func


@main.command()
@click.option("--backend", type=click.Choice(["torch", "engines"]), default=None,
              help="torch: the diffusers pipeline; engines: a built engine folder (default when --engines is given).")
@click.option("--model", default=DEFAULT_MODEL, show_default=True,
              help=MODEL_HELP + " Torch backend only; engines keep the model they were built from.")
@click.option("--engines", "engines", type=click.Path(path_type=Path), default=None,
              help="Engine folder (engines backend).")
@attention_options
@request_options
def generate(backend, model, engines, attention, sparse_ratio, levels, prompt, seconds, steps, seed,  # noqa: ANN001
             guidance, negative_prompt, scheduler, out, wav_format) -> None:
    """Generate audio from text with PyTorch or with built engines.

    --model, --attention, --sparse-ratio and --levels apply to the torch backend; engines were built with them.
    """
    from .artifacts.outputs import check_output_file
    from .core.durations import resolve_attention
    from .core.request import GenerationRequest

    if backend == "torch" and engines is not None:
        raise UsageError("--engines goes with the engines backend, not --backend torch")
    backend = backend or ("engines" if engines else "torch")
    torch_only = {"--model": model != DEFAULT_MODEL, "--attention": attention != "litefocus",
                  "--sparse-ratio": sparse_ratio != DEFAULT_SPARSE_RATIO, "--levels": levels != DEFAULT_LEVELS_TEXT}
    if backend == "engines" and any(torch_only.values()):
        given = ", ".join(name for name, on in torch_only.items() if on)
        raise UsageError(f"{given}: fixed when the engines were built; give them to 'build', not 'generate --engines'")
    if backend == "engines" and engines is None:
        raise UsageError("--backend engines needs --engines DIR")
    # every value is checked before a model or an engine loads
    request = GenerationRequest(prompt=prompt, seconds=seconds, steps=steps, seed=seed, guidance=guidance,
                                negative_prompt=negative_prompt, scheduler=scheduler)
    output = check_output_file(out)
    if backend == "torch":
        require_export_extra("generate --backend torch")
        check_spec(model)
        check_sparse_ratio(sparse_ratio)
        parse_levels(levels)
        from .models import load_pipeline, pipeline_geometry
        from .pytorch import generate_torch

        config = litefocus_config(sparse_ratio, levels)
        attention, _ = resolve_attention(attention, request.seconds)
        pipe = load_pipeline(model)
        waveform = generate_torch(pipe, request, attention=attention, config=config)
        sample_rate = pipeline_geometry(pipe).sample_rate
    else:
        from .runtime import generate_from_engines

        waveform, sample_rate = generate_from_engines(engines, request)
    write_wav(output, waveform, sample_rate, wav_format)
    click.echo(f"wrote {output} ({len(waveform) / sample_rate:.2f} s at {sample_rate} Hz, {wav_format})",
               err=output.kind == "stdout")


def parse_levels(levels: str) -> tuple[int, ...]:
    try:
        return check_levels(tuple(int(w) for w in levels.split(",") if w.strip()))
    except (ValueError, UsageError):
        raise UsageError(f"--levels must be comma-separated positive integers, got {levels!r}") from None


def export_settings(attention: str, sparse_ratio: float, levels: str, opset: int = MIN_OPSET, precision: str = "fp32",
                    stages: str | None = None, verify: bool = False):  # noqa: ANN201
    from .export import ExportSettings

    chosen = tuple(s.strip() for s in stages.split(",") if s.strip()) if stages else None
    return ExportSettings(attention=attention, sparse_ratio=sparse_ratio, levels=parse_levels(levels), opset=opset,
                          precision=precision, stages=chosen, verify=verify)


@main.command("export")
@click.option("--model", default=DEFAULT_MODEL, show_default=True, help=MODEL_HELP)
@click.option("--out", "out", type=click.Path(path_type=Path), required=True, help="Output folder.")
@concrete_attention_options
@click.option("--opset", type=int, default=MIN_OPSET, show_default=True)
@click.option("--precision", type=click.Choice(EXPORT_PRECISIONS), default="fp32", show_default=True)
@click.option("--stages", default=None, help="Comma-separated stages (default: all of the pipeline).")
@click.option("--verify", is_flag=True, help="Compare every stage with PyTorch on ONNX Runtime (CPU); fails when a "
              "stage's max relative error is past the precision's tolerance (fp32 1e-3, fp16 5e-2).")
@click.option("--force", is_flag=True, help=FORCE_HELP)
def export_cmd(model, out, attention, sparse_ratio, levels, opset, precision, stages, verify, force) -> None:  # noqa: ANN001
    """Export a pipeline's stages to ONNX (the UNet with the DualSparseAttention op)."""
    from .export import export_pipeline

    require_export_extra("export")
    settings = export_settings(attention, sparse_ratio, levels, opset, precision, stages, verify)
    manifest = export_pipeline(model, out, settings, force=force)
    for name, desc in manifest["stages"].items():
        click.echo(f"  {name:18s} {desc['file']}")
    for name, result in (manifest.get("verification") or {}).items():
        click.echo(f"  verify {name:18s} max abs {result['max_abs']:.3e}  max rel {result['max_rel']:.3e}")
    click.echo(f"exported {model} to {out}")


@main.command()
@click.option("--model", default=DEFAULT_MODEL, show_default=True, help=MODEL_HELP)
@click.option("--seconds", default=None, help="Longest audio to serve (profile 1:S:S; at most 600)  [default: 10]")
@click.option("--profile", "profile_text", default=None, help="MIN:OPT:MAX seconds (instead of --seconds).")
@click.option("--backend", type=click.Choice(ENGINE_BACKENDS), default="onnxruntime", show_default=True,
              help="onnxruntime (CPU or CUDA), tensorrt (GPU), openvino (CPU, with bf16 and int8).")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True,
              help="ONNX Runtime execution provider.")
@click.option("--attention-impl", type=click.Choice(["native", "plugin"]), default="native", show_default=True,
              help="TensorRT: the function body (native) or the fused plugin.")
@click.option("--precision", type=click.Choice(("auto", *ENGINE_PRECISIONS)), default=None,
              help="onnxruntime, tensorrt: fp32 (default) or fp16 (the export's). openvino: fp32, bf16 (the CPU's bf16 "
                   "units), int8 (int8 weights, the int8 extra) or auto (default: bf16 where the CPU has AMX-BF16 or "
                   "AVX512-BF16, else fp32).")
@attention_options
@click.option("--out", "out", type=click.Path(path_type=Path), default=Path("engines"), show_default=True,
              help="Folder the engine folder is built in (one subfolder per build, named by its settings).")
@click.option("--skip-memory-check", is_flag=True,
              help="Build even when one generation at the longest duration would need more memory than this "
                   "machine has available (default: off, such an ONNX Runtime CPU build is refused in one line); "
                   "use it to build here for a host with more memory.")
@click.option("--force", is_flag=True, help=FORCE_HELP)
def build(model, seconds, profile_text, backend, device, attention_impl, precision, attention, sparse_ratio,  # noqa: ANN001
          levels, out, force, skip_memory_check) -> None:
    """Export (cached) and build engines for one duration profile; refused when a generation at its longest
    duration would not fit in this machine's available memory (unless --skip-memory-check)."""
    from .backends.build import BuildSettings, build_engines
    from .core.durations import DurationProfile, resolve_attention

    require_export_extra("build")
    if seconds and profile_text:
        raise UsageError("give --seconds or --profile, not both")
    profile = DurationProfile.parse(profile_text) if profile_text else DurationProfile.for_seconds(seconds or 10)
    attention, policy = resolve_attention(attention, profile.max_s)
    if backend == "openvino":  # built from the fp32 export; the precision is OpenVINO's
        export_precision, engine_precision = "fp32", precision
    elif precision in (None, *EXPORT_PRECISIONS):
        export_precision, engine_precision = precision or "fp32", None
    else:
        raise UsageError(f"--precision {precision} is for --backend openvino; {backend} takes "
                         f"{'|'.join(EXPORT_PRECISIONS)}")
    settings = BuildSettings(model=model, profile=profile, backend=backend, device=device,
                             attention_impl=attention_impl, skip_memory_check=skip_memory_check,
                             export=export_settings(attention, sparse_ratio, levels, precision=export_precision),
                             engine_precision=engine_precision, attention_policy=policy)
    folder = build_engines(settings, out, force=force)
    precision = settings.precision
    lo, opt, hi = profile.latent_frames()
    click.echo(f"engines: {folder}")
    click.echo(f"  covers {profile.min_s:g}-{profile.max_s:g} s (latent frames {lo}-{hi}, tuned for {opt}); "
               f"{backend} {precision}, {attention} attention")
    click.echo(f"  next: litefocus-export generate --engines {folder} --prompt '...' --seconds {profile.max_s:g} "
               f"--out out.wav")


@main.command()
@click.argument("folder", type=click.Path(path_type=Path))
def inspect(folder) -> None:  # noqa: ANN001
    """Print a summary of an engine or export folder's manifest."""
    from .artifacts.manifest import read_manifest

    m = read_manifest(folder)
    click.echo(f"{folder}: {m.get('kind')} folder, format {m['format_version']}, created {m.get('created')}")
    click.echo(f"  model      {m['model']['spec']} ({m['model']['pipeline']})")
    click.echo(f"  attention  {m['attention']}" + (f" {m['litefocus']}" if m.get("litefocus") else ""))
    policy = m.get("attention_policy") or {}
    if policy.get("requested") == "auto":
        click.echo(f"  policy     auto: LiteFocus past {policy['litefocus_from_s']:g} s; this profile's longest "
                   f"{policy['longest_s']:g} s -> {policy['chosen']}")
    click.echo(f"  precision  {m['precision']}")
    if "backend" in m:
        b = m["backend"]
        click.echo(f"  backend    {b['name']} {b.get('version')} on {b.get('device')} ({b.get('architecture')})")
        if b["name"] == "openvino":
            units = ", ".join(b.get("cpu_features") or []) or "no bf16/int8 units"
            needs = ", ".join(b.get("cpu_features_required") or []) or "nothing beyond fp32"
            click.echo(f"  cpu        built on {b.get('cpu_model')} ({units}); {b.get('weights')} weights, "
                       f"{b.get('activations')} activations; needs {needs}")
        for p in m.get("profiles", []):
            click.echo(f"  profile    {p['min_s']:g}-{p['max_s']:g} s (opt {p['opt_s']:g} s)")
    for name, desc in m["stages"].items():
        error = desc.get("error_vs_fp32")
        measured = (f"  {desc.get('activations')}, error vs fp32 at {error['seconds']:g} s: "
                    f"max {error['max_rel']:.1e}, rms {error['rms_rel']:.1e}") if error else ""
        click.echo(f"  stage      {name:18s} {desc.get('engine', desc['file'])}{measured}")
    click.echo(f"  files      {len(m['files'])}, {sum(f['bytes'] for f in m['files'].values()) / 1e6:.1f} MB, "
               f"hashes verified")


@main.command()
@click.option("--model", default=DEFAULT_MODEL, show_default=True, help=MODEL_HELP)
@click.option("--seconds", default="10,20,40,80", show_default=True, help="Comma-separated audio durations.")
@click.option("--backends", default="torch,onnxruntime,tensorrt,openvino", show_default=True,
              help="Comma-separated: torch, onnxruntime, tensorrt, openvino (at the CPU's default precision), and "
                   "precision variants torch-bf16, openvino-fp32, openvino-bf16, openvino-int8 (unavailable ones are "
                   "listed as skipped, with the reason).")
@click.option("--attention", default="full,litefocus", show_default=True, help="Comma-separated: full, litefocus.")
@click.option("--steps", type=int, default=10, show_default=True, help="Denoising steps (--stages all).")
@click.option("--repeats", type=int, default=3, show_default=True, help="Timed repeats per configuration (medians).")
@click.option("--warmup", type=int, default=1, show_default=True, help="Untimed runs before the repeats.")
@click.option("--stages", type=click.Choice(["unet", "all"]), default="all", show_default=True,
              help="unet: one UNet evaluation at batch 2; all: whole generations with a per-stage breakdown.")
@click.option("--accuracy", is_flag=True, help="Also compare outputs: engines vs PyTorch, LiteFocus vs full.")
@click.option("--quality", is_flag=True,
              help="Also score each waveform (--stages all): CLAP audio-text score with the pipeline's own CLAP "
                   "model, and the log-mel distance of LiteFocus to full attention (meaningless on random weights).")
@click.option("--prompt", default="a dog barking in the rain", show_default=True, help="Prompt (--stages all).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for noise, samples and UNet inputs.")
@click.option("--threads", type=int, default=0, show_default=True,
              help="Intra-op threads for torch and ONNX Runtime (0: library default).")
@click.option("--sparse-ratio", type=float, default=DEFAULT_SPARSE_RATIO, show_default=True,
              help="LiteFocus sampled fraction.")
@click.option("--levels", default=DEFAULT_LEVELS_TEXT, show_default=True, help="Latent widths of the LiteFocus levels.")
@click.option("--engines-dir", type=click.Path(path_type=Path), default=None,
              help="Where engines are built (default: $LITEFOCUS_CACHE/report-engines).")
@click.option("--out", "out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder for report.md, report.json and the plots.")
def report(model, seconds, backends, attention, steps, repeats, warmup, stages, accuracy, quality, prompt, seed,  # noqa: ANN001
           threads, sparse_ratio, levels, engines_dir, out) -> None:
    """Latency comparison: duration x backend x attention, medians, stage breakdown, FLOPs, plots."""
    require_export_extra("report")
    from .report import ReportSettings, parse_list, run_report

    settings = ReportSettings(out=out, model=model, seconds=parse_list(seconds, "seconds"),
                              backends=parse_list(backends, "backends"), attention=parse_list(attention, "attention"),
                              steps=steps, repeats=repeats, warmup=warmup, stages=stages, accuracy=accuracy,
                              quality=quality, seed=seed, prompt=prompt, threads=threads, sparse_ratio=sparse_ratio,
                              levels=parse_levels(levels), engines_dir=engines_dir)
    data = run_report(settings)
    click.echo(f"measured {data['measured_configurations']} configurations; wrote {out / 'report.md'}, "
               f"{out / 'report.json'}" + "".join(f", {out / p}" for p in data["plots"]))
    for skipped in data["skipped"]:
        click.echo(f"  skipped {skipped['backend']} ({skipped['attention']}): {skipped['reason']}")
    for failed in data["failed"]:
        click.echo(f"  failed {failed['seconds']:g} s {failed['backend']} {failed['attention']}: {failed['error']}")


def serving_options(func):  # noqa: ANN001, ANN201
    """How the served model batches and queues (serve and triton-repo)."""
    for decorator in reversed([
        click.option("--max-batch", type=int, default=4, show_default=True,
                     help="Most requests in one batch (one UNet call per step for all of them)."),
        click.option("--max-queue-delay-ms", type=float, default=50.0, show_default=True,
                     help="How long the batcher waits to fill a batch."),
        click.option("--max-queue", type=int, default=64, show_default=True,
                     help="Most requests waiting; past it a request is refused at once."),
        click.option("--request-timeout", type=float, default=0.0, show_default=True,
                     help="Most seconds a request may wait in the queue (0: no limit)."),
        click.option("--instances", type=int, default=1, show_default=True,
                     help="Model instances (each holds the engines: memory times instances)."),
        click.option("--threads", type=int, default=0, show_default=True,
                     help="Intra-op threads per stage (0: ONNX Runtime's default)."),
    ]):
        func = decorator(func)
    return func


def serving_settings(max_batch, max_queue_delay_ms, max_queue, request_timeout, instances, threads):  # noqa: ANN001, ANN201
    from .serve.repository import ServingSettings

    return ServingSettings(max_batch=max_batch, max_queue_delay_ms=max_queue_delay_ms, max_queue=max_queue,
                           request_timeout_s=request_timeout, instances=instances, threads=threads)


@main.command()
@click.argument("engine_dirs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--host", default="127.0.0.1", show_default=True, help="Address every endpoint binds to.")
@click.option("--http-port", type=int, default=8000, show_default=True)
@click.option("--grpc-port", type=int, default=8001, show_default=True)
@click.option("--metrics-port", type=int, default=8002, show_default=True, help="Prometheus metrics (/metrics).")
@click.option("--exit-timeout", type=int, default=30, show_default=True,
              help="On SIGTERM, seconds to finish the requests in flight before stopping.")
@serving_options
def serve(engine_dirs, host, http_port, grpc_port, metrics_port, exit_timeout, **serving) -> None:  # noqa: ANN001
    """Serve engine folders with Triton Inference Server (KServe v2 over HTTP and gRPC, model litefocus_audio).

    Each request goes to the smallest profile that covers it; compatible requests are batched.
    """
    from .serve.server import Endpoints
    from .serve.server import serve as run_server

    endpoints = Endpoints(host, http_port, grpc_port, metrics_port)
    settings = serving_settings(**serving)
    sys.exit(run_server(list(engine_dirs), endpoints, settings, exit_timeout_s=exit_timeout))


@main.command("triton-repo")
@click.argument("engine_dirs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", "out", type=click.Path(path_type=Path), required=True, help="Repository folder to write.")
@click.option("--copy", is_flag=True, help="Copy the engine folders into the repository (default: reference them).")
@serving_options
def triton_repo(engine_dirs, out, copy, **serving) -> None:  # noqa: ANN001
    """Write a standalone Triton model repository (python backend) for the official tritonserver."""
    from .serve.repository import write_repository

    repository = write_repository(list(engine_dirs), out, serving_settings(**serving), copy=copy)
    click.echo(f"wrote {repository} (model litefocus_audio; serve with: tritonserver --model-repository "
               f"{repository}; see docs/serving.md)")


@main.command()
@click.option("--url", default="127.0.0.1:8000", show_default=True, help="The server's HTTP endpoint (host:port).")
@click.option("--timeout", type=float, default=600.0, show_default=True, help="Seconds to wait for the answer.")
@request_options
def request(url, timeout, prompt, seconds, steps, seed, guidance, negative_prompt, scheduler, out,  # noqa: ANN001
            wav_format) -> None:
    """Send one request to a running server and write the WAV it returns."""
    from .artifacts.outputs import check_output_file
    from .core.request import GenerationRequest
    from .serve.client import send

    generation = GenerationRequest(prompt=prompt, seconds=seconds, steps=steps, seed=seed, guidance=guidance,
                                   negative_prompt=negative_prompt, scheduler=scheduler)
    output = check_output_file(out)
    waveform, sample_rate = send(url, generation, timeout_s=timeout)
    write_wav(output, waveform, sample_rate, wav_format)
    click.echo(f"wrote {output} ({len(waveform) / sample_rate:.2f} s at {sample_rate} Hz, {wav_format})",
               err=output.kind == "stdout")


@main.command("device-check", context_settings={"ignore_unknown_options": True, "allow_extra_args": True,
                                                "help_option_names": []})
@click.argument("check", type=click.Choice(CHECKS))
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def device_check(check: str, args: tuple[str, ...]) -> None:
    """Run a GPU check (kernel, e2e, tensorrt); its own options follow it (CHECK --help lists them)."""
    from .devicecheck import check_main

    sys.exit(check_main(check)(list(args)))


if __name__ == "__main__":  # python -m litefocus_export.cli: a checkout without pip install (the device machine)
    main()
