"""The end-to-end device check's report: ``e2e.md`` from the results ``e2e.py`` measured (plain text, no torch)."""

from __future__ import annotations

from typing import Any

from ..report.output import ratio

STAGES = ("conditioning", "unet_steps", "vae_decode", "vocoder")

def mb_text(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} MB"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f} ms" if value < 10 else f"{value:.1f} ms"


def _n(value: int | None) -> str:
    return "-" if value is None else str(value)


def _x(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def route_text(route: dict[str, Any]) -> str:
    return (f"{route['litefocus_calls']} LiteFocus calls for {route['patched_layers']} patched layers: "
            f"{route['fused_kernel_calls']} fused kernel, {route['dense_form_calls']} dense form, "
            f"{route['fallback_calls']} fallbacks (expected: all {route['expected_path']}) "
            f"{'PASS' if route['passed'] else 'FAIL'}")


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *("| " + " | ".join(r) + " |" for r in rows)]


def markdown(results: dict[str, Any]) -> str:
    env, settings = results["environment"], results["settings"]
    lines = [f"# End-to-end device check: {settings['model']}", "",
             f"{env['device']}; torch {env['torch']}, triton {env['triton']}, diffusers {env['diffusers']}; "
             f"times: {env['timing']}, median of {settings['repeats']} after {settings['warmup']} warm-up; "
             f"memory: {env['memory']}. Batch 2 (classifier-free guidance), sparse ratio {settings['sparse_ratio']}.",
             ""]
    parity = results.get("parity")
    if parity:
        lines += [f"Parity at {parity['seconds']:g} s, fp32: {parity['device_path']} on the device vs "
                  f"{parity['reference_path']}, same samples: max rel err {parity['max_rel_err']:.2e} "
                  f"(<= {parity['tolerance']:g}): {'PASS' if parity['passed'] else 'FAIL'}", ""]
    routing = results.get("routing") or {}
    if routing:
        rows = [[name, *(_n(r[k]) for k in ("litefocus_calls", "fused_kernel_calls", "dense_form_calls",
                                            "fallback_calls")),
                 _n(r.get("stock_host_syncs")), _n(r["host_syncs"]), "PASS" if r["passed"] else "FAIL"]
                for name, r in routing.items()]
        lines += ["## Routing: one UNet evaluation", "",
                  *_table(["evaluation", "LiteFocus calls", "fused kernel", "dense form", "fallbacks",
                           "host syncs stock", "host syncs LiteFocus", "check"], rows), ""]
    kernel = results.get("kernel_fp32")
    if kernel:
        shape = ", ".join(f"{k}={v}" for k, v in kernel["shape"].items())
        rows = [[r["impl"], _ms(r["ms"]), _x(r["vs_dense"]), r.get("error") or
                 ("-" if r["max_rel_err"] is None else f"{r['max_rel_err']:.2e}")] for r in kernel["rows"]]
        lines += [f"## Kernel, fp32 ({shape})", "",
                  *_table(["impl", "time", "vs dense form", "max rel err vs reference"], rows), ""]
    unet_rows = results.get("unet") or []
    if unet_rows:
        by = {(r["dtype"], r["seconds"], r["mode"], r["impl"]): r for r in unet_rows}
        rows = []
        for dtype, seconds, mode in dict.fromkeys((r["dtype"], r["seconds"], r["mode"]) for r in unet_rows):
            stock, lite = by.get((dtype, seconds, mode, "stock"), {}), by.get((dtype, seconds, mode, "litefocus"), {})
            rows.append([dtype, f"{seconds:g} s", mode, _ms(stock.get("ms")), _ms(lite.get("ms")),
                         _x(ratio(stock.get("ms"), lite.get("ms"))), mb_text(stock.get("peak_mb")),
                         mb_text(lite.get("peak_mb"))])
        lines += ["## One UNet evaluation, batch 2", "",
                  *_table(["dtype", "audio", "mode (both sides)", "stock SDPA", "LiteFocus", "speedup",
                           "peak stock", "peak LiteFocus"], rows), ""]
    generation = results.get("generation")
    if generation and generation.get("runs"):
        stock, lite = generation["runs"].get("stock", {}), generation["runs"].get("litefocus", {})
        rows = []
        for stage in (*STAGES, "end_to_end"):
            rows.append([stage.replace("_", " "), _ms(stock.get(f"{stage}_ms")), _ms(lite.get(f"{stage}_ms")),
                         _x(ratio(stock.get(f"{stage}_ms"), lite.get(f"{stage}_ms"))),
                         mb_text(stock.get(f"{stage}_peak_mb")), mb_text(lite.get(f"{stage}_peak_mb"))])
        lines += [f"## Whole generation: {generation['seconds']:g} s, {generation['steps']} steps, "
                  f"{generation['scheduler']}, {generation['dtype']}", "",
                  *_table(["stage", "stock", "LiteFocus", "speedup", "peak stock", "peak LiteFocus"], rows), ""]
    if results.get("skipped"):
        lines += ["## Skipped", "", *(f"- {s['what']}: {s['why']}" for s in results["skipped"]), ""]
    if results.get("errors"):
        lines += ["## Errors", "", *(f"- {e['section']}: {e['error']}" for e in results["errors"]), ""]
    if results.get("peak_rss_mb") is not None:
        lines += [f"Peak RSS of the whole run: {results['peak_rss_mb']:.0f} MB.", ""]
    checks = results.get("checks") or {}
    verdict = "all checks passed" if results.get("ok") else "FAILED"
    listed = ", ".join(f"{name}: {'pass' if check['passed'] else 'FAIL'}" for name, check in checks.items())
    lines += [f"Checks: {verdict} ({listed}). Wall time {results.get('wall_s', 0):.0f} s.", ""]
    return "\n".join(lines)
