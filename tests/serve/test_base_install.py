"""The built wheel without extras, in a fresh virtual environment: serve and request work with no torch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import soundfile

from litefocus_export.serve.process import ServerProcess

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow  # default run <= 8 min (issue 23): a fresh virtualenv with the base install: ~40 s
def test_base_install_serves_without_torch(tiny_build, tmp_path):
    engines, _, _ = tiny_build
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path / "dist"), str(REPO)],
                   check=True, capture_output=True)
    wheel = next((tmp_path / "dist").glob("litefocus_export-*.whl"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python, cli = str(venv / "bin" / "python"), str(venv / "bin" / "litefocus-export")
    install = subprocess.run([python, "-m", "pip", "install", "-q", "--disable-pip-version-check", str(wheel)],
                             capture_output=True, text=True)
    assert install.returncode == 0, install.stderr[-3000:]
    for heavy in ("torch", "diffusers", "transformers", "onnx"):
        assert subprocess.run([python, "-c", f"import {heavy}"], capture_output=True).returncode != 0, heavy
    refused = subprocess.run([cli, "build", "--seconds", "5"], capture_output=True, text=True)
    assert refused.returncode == 2 and "pip install 'litefocus-export[export]'" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1

    server = ServerProcess([engines], python=python)
    try:
        out = tmp_path / "rain.wav"
        result = subprocess.run([cli, "request", "--url", server.url, "--prompt", "rain", "--seconds", "1",
                                 "--steps", "1", "--out", str(out)], capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        assert soundfile.info(str(out)).frames == 16000
    finally:
        assert server.stop() == 0
