"""One real server process for tests (etcd, nats-server): its lifecycle.

:class:`ServerProcess` starts ``argv()`` with output to ``log_path``, waits
until ``ready()`` says so (the server's own health endpoint), and stops
(SIGTERM, then SIGKILL after STOP_TIMEOUT) or kills it (SIGKILL: a crash);
``start()`` after either keeps what the subclass keeps (ports, data), so a
restarted server has the same address and state. Subclasses name the
server (``what``) and give ``argv`` and ``ready``.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

START_TIMEOUT = 60.0  # seconds for a server to answer (loaded 2-core machine)
STOP_TIMEOUT = 30.0


def free_port() -> int:
    """A loopback TCP port the OS had free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(url: str) -> Any:
    """The decoded JSON answer of GET `url` (raises OSError or ValueError)."""
    with urllib.request.urlopen(url, timeout=2) as resp:
        return json.load(resp)


class ServerProcess:
    """A server process with a log file; see the module docstring."""

    what = "server"
    log_path: Path
    proc: subprocess.Popen | None = None

    def argv(self) -> list[str]:
        raise NotImplementedError

    def ready(self) -> bool:
        """Whether the started server answers (exceptions count as no)."""
        raise NotImplementedError

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        """Start the server and wait until it answers."""
        if self.running:
            return
        log = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen(self.argv(), stdout=log, stderr=log,
                                         stdin=subprocess.DEVNULL)
        finally:
            log.close()
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.what} exited with {self.proc.returncode}:\n{self.log}")
            try:
                if self.ready():
                    return
            except (OSError, ValueError):
                pass
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"{self.what} did not answer within {START_TIMEOUT} s:\n{self.log}")

    def stop(self) -> None:
        """SIGTERM and wait (SIGKILL after STOP_TIMEOUT)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(STOP_TIMEOUT)
        self.proc = None

    def kill(self) -> None:
        """SIGKILL and wait: a crash."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(STOP_TIMEOUT)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    @property
    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""
