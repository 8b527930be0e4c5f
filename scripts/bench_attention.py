"""One UNet forward of random:audioldm2 (real size), batch 2, fp32, 2 threads: stock SDPA vs LiteFocus.

Each (duration, implementation) runs in its own process so peak RSS is its own. Prints seconds, peak
RSS and ratios measured in this one run. Usage: python scripts/bench_attention.py [--seconds 10,40,80]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

from litefocus_export.report.measure import peak_rss_mb  # VmHWM: ru_maxrss keeps the parent's peak

IMPLS = ("stock", "litefocus-fast", "litefocus-reference")
MODEL = "random:audioldm2"


def one_forward(seconds: float, impl: str, threads: int, repeats: int) -> dict:
    import torch

    from litefocus_export.attention import LiteFocusConfig, patch_unet
    from litefocus_export.core.contract import example_unet_feeds, unet_call_arguments, unet_inputs
    from litefocus_export.models import load_unet, model_facts

    torch.set_num_threads(threads)
    facts = model_facts(MODEL)
    unet = load_unet(MODEL)
    if impl != "stock":
        patch_unet(unet, LiteFocusConfig(), freq_bins=facts.geometry.latent_freq_bins, context_free=facts.context_free)
        for proc in unet.attn_processors.values():
            if hasattr(proc, "impl"):
                proc.impl = "reference" if impl.endswith("reference") else "op"
    frames = facts.geometry.latent_frames(seconds)
    feeds = example_unet_feeds(unet_inputs(facts.kind, facts.unet_config, facts.geometry.latent_freq_bins), frames,
                               seed=0)
    sample, timestep, kwargs = unet_call_arguments({k: torch.from_numpy(v) for k, v in feeds.items()})
    times = []
    with torch.inference_mode():
        for _ in range(repeats):
            start = time.perf_counter()
            unet(sample, timestep, **kwargs, return_dict=False)
            times.append(time.perf_counter() - start)
    rss = peak_rss_mb()
    return {"seconds": seconds, "impl": impl, "forward_s": min(times), "peak_rss_mb": rss, "frames": frames}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", default="10,40,80")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--impls", default=",".join(IMPLS))
    parser.add_argument("--child", nargs=2, metavar=("SECONDS", "IMPL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(one_forward(float(args.child[0]), args.child[1], args.threads, args.repeats)))
        return
    rows = []
    for seconds in (float(s) for s in args.seconds.split(",")):
        for impl in args.impls.split(","):
            out = subprocess.run([sys.executable, __file__, "--child", str(seconds), impl, "--threads",
                                  str(args.threads), "--repeats", str(args.repeats)],
                                 capture_output=True, text=True, check=True).stdout
            rows.append(json.loads(out.strip().splitlines()[-1]))
            r = rows[-1]
            print(f"{r['seconds']:>5g} s  {impl:20s} {r['forward_s']:8.2f} s  peak RSS {r['peak_rss_mb']:7.0f} MB",
                  flush=True)
    print("\n| audio | stock SDPA | LiteFocus fast | LiteFocus reference | fast vs stock | fast vs reference "
          "| RSS fast / stock |")
    print("|---|---|---|---|---|---|---|")
    for seconds in sorted({r["seconds"] for r in rows}):
        by = {r["impl"]: r for r in rows if r["seconds"] == seconds}
        s, f, ref = (by.get(i) for i in IMPLS)
        cell = lambda r: f"{r['forward_s']:.2f} s, {r['peak_rss_mb']:.0f} MB" if r else "-"  # noqa: E731
        ratio = lambda a, b: f"{a['forward_s'] / b['forward_s']:.2f}x" if a and b else "-"  # noqa: E731
        rss = f"{f['peak_rss_mb'] / s['peak_rss_mb']:.2f}" if s and f else "-"
        print(f"| {seconds:g} s | {cell(s)} | {cell(f)} | {cell(ref)} | {ratio(s, f)} | {ratio(ref, f)} | {rss} |")


if __name__ == "__main__":
    main()
