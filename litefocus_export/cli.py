"""``litefocus-export``: patch, export, build, generate, inspect, report.

Commands stay short: they parse options, build the steps and run them. Errors of the
``LiteFocusError`` family become one line on stderr (exit 2 for usage, 1 otherwise); ``--debug``
shows the traceback.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from .errors import LiteFocusError, UsageError

DEFAULT_MODEL = "random:audioldm2-tiny"
log = logging.getLogger("litefocus_export")


class Group(click.Group):
    """Turns our exceptions into one-line errors unless --debug is on."""

    def invoke(self, ctx: click.Context):  # noqa: ANN201
        try:
            return super().invoke(ctx)
        except LiteFocusError as exc:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            click.echo(f"error: {exc}", err=True)
            ctx.exit(2 if isinstance(exc, UsageError) else 1)
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
        for noisy in ("diffusers", "transformers", "torch", "onnxscript", "onnx_ir", "polygraphy"):
            logging.getLogger(noisy).setLevel(logging.ERROR)


def attention_options(func):  # noqa: ANN001, ANN201
    """--attention / --sparse-ratio / --levels, shared by generate, export and build."""
    func = click.option("--levels", default="8", show_default=True,
                        help="Comma-separated latent widths (frequency bins) of the levels to patch.")(func)
    func = click.option("--sparse-ratio", type=float, default=0.1, show_default=True,
                        help="Fraction of tokens sampled for cross-frequency compensation.")(func)
    func = click.option("--attention", type=click.Choice(["litefocus", "full"]), default="litefocus",
                        show_default=True, help="LiteFocus or the stock full attention.")(func)
    return func


def litefocus_config(sparse_ratio: float, levels: str, seed: int = 0):  # noqa: ANN201
    from .attention.config import LiteFocusConfig

    try:
        widths = tuple(int(w) for w in levels.split(",") if w.strip())
    except ValueError:
        raise UsageError(f"--levels must be comma-separated integers, got {levels!r}") from None
    return LiteFocusConfig(sparse_ratio=sparse_ratio, levels=widths, seed=seed)


def request_options(func):  # noqa: ANN001, ANN201
    """Options of one generation request."""
    for decorator in reversed([
        click.option("--prompt", required=True, help="Text prompt."),
        click.option("--seconds", type=str, default="10", show_default=True, help="Audio length."),
        click.option("--steps", type=int, default=10, show_default=True, help="Denoising steps."),
        click.option("--seed", type=int, default=0, show_default=True, help="Seed for noise and samples."),
        click.option("--guidance", type=float, default=None, help="Guidance scale (pipeline default)."),
        click.option("--negative-prompt", default=None, help="Negative prompt."),
        click.option("--scheduler", type=click.Choice(["ddim", "dpm"]), default="ddim", show_default=True),
        click.option("--out", "out", type=click.Path(dir_okay=False, path_type=Path), required=True,
                     help="WAV file to write."),
    ]):
        func = decorator(func)
    return func


@main.command()
@click.option("--backend", type=click.Choice(["torch", "engines"]), default=None,
              help="torch: the diffusers pipeline; engines: a built engine folder (default when --engines is given).")
@click.option("--model", default=DEFAULT_MODEL, show_default=True, help="Model spec (torch backend).")
@click.option("--engines", "engines", type=click.Path(path_type=Path), default=None, help="Engine folder.")
@attention_options
@request_options
def generate(backend, model, engines, attention, sparse_ratio, levels, prompt, seconds, steps, seed,  # noqa: ANN001
             guidance, negative_prompt, scheduler, out) -> None:
    """Generate audio from text with PyTorch or with built engines."""
    from .audio import write_wav
    from .pytorch import GenerationRequest

    backend = backend or ("engines" if engines else "torch")
    request = GenerationRequest(prompt=prompt, seconds=seconds, steps=steps, seed=seed, guidance=guidance,
                                negative_prompt=negative_prompt, scheduler=scheduler)
    if backend == "torch":
        from .models import load_pipeline
        from .pytorch import generate_torch, pipeline_geometry

        pipe = load_pipeline(model)
        config = litefocus_config(sparse_ratio, levels, seed)
        waveform = generate_torch(pipe, request, attention=attention, config=config)
        sample_rate = pipeline_geometry(pipe).sample_rate
    else:
        if engines is None:
            raise UsageError("--backend engines needs --engines DIR")
        from .runtime import generate_from_engines

        waveform, sample_rate = generate_from_engines(engines, request)
    write_wav(out, waveform, sample_rate)
    click.echo(f"wrote {out} ({len(waveform) / sample_rate:.2f} s at {sample_rate} Hz)")
