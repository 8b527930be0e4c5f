"""``litefocus-export serve``: the model repository on the ``tritonserver`` that nvidia-pytriton bundles.

Triton Inference Server speaks KServe v2 over HTTP and gRPC, batches requests dynamically, bounds its queue
and exports Prometheus metrics; it runs the ``litefocus_audio`` python-backend model (``triton_model``). The
bundled binary needs, for its python backend (pytriton issue #51), the backend folder with the stub of this
interpreter's Python version, and ``LD_LIBRARY_PATH`` holding this interpreter's libpython and the wheel's
``nvidia_pytriton.libs``: all set up here in a temporary folder, removed at exit. Every address binds to
127.0.0.1 unless ``--host`` says otherwise. SIGTERM (or Ctrl-C) is passed on: Triton stops taking requests,
finishes the ones in flight (up to ``exit_timeout_s``) and exits; then so does this command, with 0.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from ..core.errors import EngineError, UsageError
from .repository import ServingSettings, write_repository

log = logging.getLogger(__name__)
_INSTALL = "pip install nvidia-pytriton (part of litefocus-export's base install)"


@dataclass(frozen=True)
class Endpoints:
    host: str = "127.0.0.1"
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002

    def __post_init__(self) -> None:
        ports = (self.http_port, self.grpc_port, self.metrics_port)
        if any(not isinstance(p, int) or not 1 <= p <= 65535 for p in ports) or len(set(ports)) != 3:
            raise UsageError(f"ports must be three different numbers in 1..65535, got {ports}")
        if not self.host:
            raise UsageError("--host is empty")

    @property
    def http_url(self) -> str:
        return f"{self.host}:{self.http_port}"


def bundled_tritonserver() -> tuple[Path, Path, Path]:
    """(tritonserver binary, python backend folder, this Python's backend stub) from nvidia-pytriton."""
    try:
        import pytriton
    except ImportError:
        raise UsageError(f"serving needs nvidia-pytriton ({_INSTALL})") from None
    root = Path(pytriton.__file__).parent / "tritonserver"
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    binary = root / "bin" / "tritonserver"
    backend = root / "backends" / "python"
    stub = root / "python_backend_stubs" / version / "triton_python_backend_stub"
    for path in (binary, backend, stub):
        if not path.exists():
            raise UsageError(f"nvidia-pytriton has no {path.relative_to(root)} for Python {version} ({_INSTALL})")
    return binary, backend, stub


def server_environment() -> dict[str, str]:
    """This process's environment plus what the bundled server's python backend needs to load."""
    import pytriton

    libpython = sysconfig.get_config_var("LIBDIR") or ""
    libs = [libpython, str(Path(pytriton.__file__).parent.parent / "nvidia_pytriton.libs")]
    path = os.pathsep.join(p for p in [*libs, os.environ.get("LD_LIBRARY_PATH", "")] if p)
    return {**os.environ, "LD_LIBRARY_PATH": path}


def server_command(binary: Path, repository: Path, backends: Path, endpoints: Endpoints,
                   exit_timeout_s: int) -> list[str]:
    host = endpoints.host
    return [str(binary), "--model-repository", str(repository), "--backend-directory", str(backends),
            "--http-address", host, "--grpc-address", host, "--metrics-address", host,
            "--http-port", str(endpoints.http_port), "--grpc-port", str(endpoints.grpc_port),
            "--metrics-port", str(endpoints.metrics_port), "--allow-metrics", "true", "--allow-gpu-metrics", "false",
            "--exit-timeout-secs", str(exit_timeout_s), "--log-info", "false", "--strict-readiness", "true"]


def wait_ready(url: str, proc: subprocess.Popen, timeout_s: float) -> None:
    """Until ``/v2/health/ready`` answers 200; EngineError if the server exits or the time runs out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise EngineError(f"tritonserver exited with code {proc.returncode} before it was ready "
                              f"(the engine folders could not be loaded? see its log above)")
        try:
            with urllib.request.urlopen(f"http://{url}/v2/health/ready", timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.25)
    raise EngineError(f"tritonserver was not ready after {timeout_s:g} s")


def serve(folders: list[Path], endpoints: Endpoints, settings: ServingSettings, *, exit_timeout_s: int = 30,
          ready_timeout_s: float = 600.0) -> int:
    """Serve ``folders`` until SIGTERM / Ctrl-C; returns the exit code (0 after a clean drain)."""
    binary, backend, stub = bundled_tritonserver()
    with tempfile.TemporaryDirectory(prefix="litefocus-serve-") as work:
        work_dir = Path(work)
        repository = write_repository(folders, work_dir / "repository", settings)
        backends = work_dir / "backends"
        shutil.copytree(backend, backends / "python")
        shutil.copy2(stub, backends / "python" / stub.name)
        command = server_command(binary, repository, backends, endpoints, exit_timeout_s)
        log.debug("starting %s", " ".join(command))
        proc = subprocess.Popen(command, env=server_environment())
        stopping = []

        def forward(signum: int, frame: object) -> None:
            stopping.append(signum)
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)

        previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            wait_ready(endpoints.http_url, proc, ready_timeout_s)
            log.warning("serving %s on http://%s (gRPC %s:%d, metrics http://%s:%d/metrics); Ctrl-C or SIGTERM "
                        "drains and stops", "litefocus_audio", endpoints.http_url, endpoints.host, endpoints.grpc_port,
                        endpoints.host, endpoints.metrics_port)
            code = proc.wait()
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(exit_timeout_s + 10)
                except subprocess.TimeoutExpired:
                    proc.kill()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    if stopping:
        log.warning("stopped (%s); tritonserver exited with %d", signal.Signals(stopping[0]).name, code)
        return 0
    return code or 1
