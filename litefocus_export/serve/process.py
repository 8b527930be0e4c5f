"""``litefocus-export serve`` in a child process on free loopback ports: for tests, load tests and tools."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path


def free_ports(count: int) -> list[int]:
    """``count`` TCP ports free on 127.0.0.1 right now."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


class ServerProcess:
    """A server on 127.0.0.1, ready when constructed (or AssertionError with its log); ``stop()`` drains it.

    ``python``: the interpreter to run it with (e.g. a virtual environment's, to test a base install).
    """

    def __init__(self, folders: Sequence[Path], *args: str, ready_timeout_s: float = 300.0,
                 python: str = sys.executable):
        self.http, grpc, metrics = free_ports(3)
        self.url, self.metrics_url = f"127.0.0.1:{self.http}", f"127.0.0.1:{metrics}"
        command = [python, "-c", "from litefocus_export.cli import main; main()", "serve",
                   *map(str, folders), "--http-port", str(self.http), "--grpc-port", str(grpc),
                   "--metrics-port", str(metrics), *args]
        self.proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + ready_timeout_s
        while time.monotonic() < deadline and self.proc.poll() is None:
            if self.status("/v2/health/ready") == 200:
                return
            time.sleep(0.25)
        self.stop()
        raise AssertionError(f"the server did not start:\n{self.proc.stdout.read()[-3000:]}")

    def status(self, path: str, url: str | None = None) -> int | None:
        """HTTP status of GET ``path`` (None: no answer)."""
        try:
            with urllib.request.urlopen(f"http://{url or self.url}{path}", timeout=2) as answer:
                return answer.status
        except OSError:
            return None

    def stop(self, timeout_s: float = 120.0) -> int:
        """SIGTERM, then wait (in-flight requests finish first); returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()
