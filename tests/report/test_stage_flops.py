"""Per-stage FLOPs of the decode stages (counted on the meta device) and per-stage peak memory."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from litefocus_export.models.specs import TINY_VOCODER
from litefocus_export.report.flops import FlopCounter, decode_flops
from litefocus_export.report.generations import StagePeaks
from litefocus_export.report.markdown import decode_flops_section, stage_memory_section


def test_counter_counts_convolutions_linears_and_attention():
    with torch.device("meta"), FlopCounter() as count:
        torch.nn.functional.conv1d(torch.empty(2, 8, 100), torch.empty(16, 8, 3), padding=1)
        torch.nn.functional.conv_transpose1d(torch.empty(1, 16, 10), torch.empty(16, 4, 8), stride=4, padding=2)
        torch.nn.functional.linear(torch.empty(5, 32), torch.empty(7, 32))
        q = torch.empty(2, 3, 50, 16)
        torch.nn.functional.scaled_dot_product_attention(q, torch.empty(2, 3, 40, 16), torch.empty(2, 3, 40, 16))
    assert count.by_kind["conv"] == 2 * (2 * 16 * 100) * 8 * 3 + 2 * (16 * 10) * 4 * 8
    assert count.by_kind["linear"] == 2 * 5 * 7 * 32
    assert count.by_kind["attention"] == 4 * 2 * 3 * 50 * 40 * 16


def hifigan_gflop(config: dict, frames: int) -> float:
    """The HiFi-GAN's convolution FLOPs by hand, from its config (batch 1)."""
    c, length, bins = config["upsample_initial_channel"], frames, config["model_in_dim"]
    flops = 2 * length * c * bins * 7
    for i, (rate, kernel) in enumerate(zip(config["upsample_rates"], config["upsample_kernel_sizes"])):
        c_in, c_out = c // 2**i, c // 2 ** (i + 1)
        flops += 2 * length * c_in * c_out * kernel  # transposed: per input element
        length = (length - 1) * rate - 2 * ((kernel - rate) // 2) + kernel
        taps = sum(2 * k * len(d) for k, d in zip(config["resblock_kernel_sizes"], config["resblock_dilation_sizes"]))
        flops += 2 * length * c_out * c_out * taps
    return (flops + 2 * length * c_out * 7) / 1e9


def test_decode_flops_of_the_tiny_model():
    ten = decode_flops("random:audioldm2-tiny", 10.0)
    frames = 1000  # 10 s: 1000 mel frames
    assert ten["vocoder"]["total_gflop"] == pytest.approx(hifigan_gflop(TINY_VOCODER, frames), rel=1e-9)
    # VAE mid-block attention: one head over every latent position, 4 * N^2 * C
    tokens, channels = 250 * 16, 16
    assert ten["vae_decoder"]["attention_gflop"] == pytest.approx(4 * tokens**2 * channels / 1e9, rel=1e-9)
    twenty = decode_flops("random:audioldm2-tiny", 20.0)
    assert twenty["vocoder"]["conv_gflop"] == pytest.approx(2 * ten["vocoder"]["conv_gflop"], rel=1e-3)
    assert twenty["vae_decoder"]["conv_gflop"] == pytest.approx(2 * ten["vae_decoder"]["conv_gflop"], rel=1e-9)


def test_stage_peaks_are_per_stage():
    peaks = StagePeaks()
    peaks.begin()
    with peaks.stage("vae_decode"):
        big = np.ones(200 * 2**20 // 8)
        del big
    with peaks.stage("vocoder"):
        small = np.ones(10 * 2**20 // 8)
        del small
    result = peaks.end()
    if not result:
        pytest.skip("no /proc/self/clear_refs here")
    assert result["vae_decode"] > result["vocoder"] + 150
    assert peaks.overall_mb >= result["vae_decode"]


def test_report_sections_render():
    row = {"seconds": 80, "backend": "onnxruntime", "attention": "litefocus", "peak_rss_mb": 4000.0,
           "between_requests_rss_mb": 2500.0,
           "stage_peak_mb": {"conditioning_peak_mb": 3000.0, "unet_steps_peak_mb": 4000.0,
                             "vae_decode_peak_mb": 3500.0, "vocoder_peak_mb": 2600.0}}
    data = {"rows": [row], "notes": {"stage_peak": "note"},
            "decode_flops": {"formula": "f", "per_duration": [
                {"seconds": 80, "vae_decoder": {"conv_gflop": 1.0, "total_gflop": 2.0},
                 "vocoder": {"conv_gflop": 3.0, "total_gflop": 3.0}}]}}
    memory = "\n".join(stage_memory_section(data))
    assert "3500" in memory and "2500" in memory
    flops = "\n".join(decode_flops_section(data))
    assert "vocoder" in flops and "3" in flops
