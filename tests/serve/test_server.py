"""A real Triton Inference Server on loopback (the tritonserver nvidia-pytriton bundles), tiny engines.

Each server listens on free 127.0.0.1 ports and is always stopped; requests are bounded in number.
"""

from __future__ import annotations

import concurrent.futures
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from litefocus_export.core.errors import EngineError
from litefocus_export.core.request import GenerationRequest
from litefocus_export.runtime import Sampler
from litefocus_export.serve.client import send
from litefocus_export.serve.process import ServerProcess, free_ports

pytest.importorskip("pytriton")
pytest.importorskip("tritonclient.http")


@pytest.fixture(scope="module")
def two_profiles(tiny_build, tiny_short_build):
    """The session's 1-80 s tiny engines and a 1-3 s build of the same export."""
    return tiny_short_build, tiny_build[0]


@pytest.fixture(scope="module")
def server(two_profiles):
    server = ServerProcess(list(two_profiles), "--max-batch", "4", "--max-queue-delay-ms", "200")
    yield server
    assert server.stop() == 0


def rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12))


def test_concurrent_requests_equal_generate(server, two_profiles):
    short, long = two_profiles
    requests = [GenerationRequest(prompt=p, seconds=s, steps=2, seed=seed)
                # prompts of different token lengths: batched text stages pad them, each row at its own positions
                for p, s, seed in [("rain", 1.0, 1), ("wind in tall grass on a summer evening", 1.0, 2),
                                   ("birds", 1.0, 3), ("rain", 4.0, 4), ("waves breaking on a pebble beach", 4.0, 5),
                                   ("fire crackling", 1.0, 6)]]
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda r: send(server.url, r), requests))
    alone = {folder: Sampler(folder, progress=False) for folder in (short, long)}
    for request, (waveform, rate) in zip(requests, answers):
        expected = alone[short if request.seconds <= 3 else long](request)
        assert rate == 16000 and waveform.shape == expected.shape
        assert rel(waveform, expected) <= 1e-5, (request, rel(waveform, expected))
    assert server.status("/v2/health/live") == 200 and server.status("/v2/models/litefocus_audio/ready") == 200
    assert server.status("/metrics", server.metrics_url) == 200


def test_a_bad_request_then_a_good_one(server):
    for bad, message in [(GenerationRequest(prompt="x", seconds=90.0), "outside every served profile"),
                         (GenerationRequest(prompt="x", seconds=1.0, steps=1000), "use at most 999")]:
        with pytest.raises(EngineError, match=message):
            send(server.url, bad)
    waveform, _ = send(server.url, GenerationRequest(prompt="rain", seconds=1.0, steps=1))
    assert waveform.shape == (16000,) and np.isfinite(waveform).all()


def test_request_command_writes_the_wav_or_says_why(server, tmp_path):
    from click.testing import CliRunner

    from litefocus_export.cli import main

    ok = CliRunner().invoke(main, ["request", "--url", server.url, "--prompt", "rain", "--seconds", "1", "--steps", "1",
                                   "--out", str(tmp_path / "a.wav")])
    assert ok.exit_code == 0 and (tmp_path / "a.wav").is_file(), ok.output
    refused = CliRunner().invoke(main, ["request", "--url", server.url, "--prompt", "rain", "--seconds", "99",
                                        "--out", str(tmp_path / "b.wav")])
    assert refused.exit_code == 1 and len(refused.output.strip().splitlines()) == 1
    assert "outside every served profile" in refused.output and not (tmp_path / "b.wav").exists()


@pytest.mark.slow  # default run <= 8 min (issue 23): a server of its own, one request at a time: ~35 s
def test_queue_overflow_is_refused_at_once(two_profiles):
    short, _ = two_profiles
    server = ServerProcess([short], "--max-batch", "1", "--max-queue", "1", "--max-queue-delay-ms", "0")
    try:
        request = GenerationRequest(prompt="rain", seconds=2.0, steps=3)
        with concurrent.futures.ThreadPoolExecutor(6) as pool:
            futures = [pool.submit(send, server.url, request) for _ in range(6)]
            outcomes = [f.exception() for f in futures]
        refused = [e for e in outcomes if e is not None]
        assert refused and all("queue is full" in str(e) for e in refused), outcomes
        assert len(refused) < 6
    finally:
        assert server.stop() == 0


def test_sigterm_drains_requests_in_flight(two_profiles):
    short, _ = two_profiles
    server = ServerProcess([short], "--max-batch", "2")
    requests = [GenerationRequest(prompt="rain", seconds=3.0, steps=6, seed=s) for s in range(3)]
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        futures = [pool.submit(send, server.url, r) for r in requests]
        time.sleep(1.5)  # in flight
        code = server.stop()
        waveforms = [f.result()[0] for f in futures]
    assert code == 0 and all(w.shape == (48000,) for w in waveforms)


def test_generated_repository_serves_on_tritonserver(two_profiles, tmp_path):
    """``triton-repo`` output on the tritonserver binary itself (as the official server would run it)."""
    from litefocus_export.serve.repository import ServingSettings, write_repository
    from litefocus_export.serve.server import Endpoints, bundled_tritonserver, server_command, server_environment

    short, _ = two_profiles
    repository = write_repository([short], tmp_path / "repo", ServingSettings(), copy=True)
    binary, backend, stub = bundled_tritonserver()
    shutil.copytree(backend, tmp_path / "backends" / "python")
    shutil.copy2(stub, tmp_path / "backends" / "python" / stub.name)
    http, grpc, metrics = free_ports(3)
    endpoints = Endpoints("127.0.0.1", http, grpc, metrics)
    proc = subprocess.Popen(server_command(binary, repository, tmp_path / "backends", endpoints, 10),
                            env={**server_environment(), "PYTHONPATH": os.pathsep.join(sys.path)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        request = GenerationRequest(prompt="rain", seconds=2.0, steps=2, seed=9)
        deadline = time.monotonic() + 180
        while True:
            try:
                waveform, rate = send(endpoints.http_url, request, timeout_s=60)
                break
            except EngineError:
                assert time.monotonic() < deadline and proc.poll() is None, "tritonserver did not answer"
                time.sleep(0.5)
        expected = Sampler(repository / "litefocus_audio" / "1" / "engines" / short.name, progress=False)(request)
        assert rate == 16000 and rel(waveform, expected) <= 1e-5
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)


@pytest.mark.slow  # default run <= 8 min (issue 23): a server on the OpenVINO engines: ~35 s
def test_openvino_engines_serve_batched_requests_as_generate(openvino_fp32_engines):
    """An OpenVINO engine folder behind the server: concurrent requests are batched, each equal to the request run
    alone on the same folder."""
    server = ServerProcess([openvino_fp32_engines], "--max-batch", "4", "--max-queue-delay-ms", "200")
    try:
        requests = [GenerationRequest(prompt=p, seconds=1.5, steps=2, seed=seed)
                    for p, seed in [("rain", 1), ("wind in tall grass on a summer evening", 2), ("birds", 3)]]
        with concurrent.futures.ThreadPoolExecutor(3) as pool:
            answers = list(pool.map(lambda r: send(server.url, r), requests))
        alone = Sampler(openvino_fp32_engines, progress=False)
        for request, (waveform, rate) in zip(requests, answers):
            assert rate == 16000 and rel(waveform, alone(request)) <= 1e-5, request
    finally:
        assert server.stop() == 0
