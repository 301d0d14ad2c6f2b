"""Services in their own processes, for tests that need real separation
(and InProcess: a Service in a thread of the test process).

A service script prints ``READY <address>`` on stdout once it serves
(``announce_ready`` does that for a zmicro.Service). Its stderr goes to a
log file (a pipe nobody reads would block a chatty child). Waits are
generous: a loaded 2-core machine must not fail a test.
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from .helpers import eventually

START_TIMEOUT = 60.0  # seconds for a service to say READY
STOP_TIMEOUT = 30.0   # seconds between SIGTERM and SIGKILL


class ServiceProcess:
    """A child process running one service until stop()."""

    def __init__(self, argv: list[str], *, env: dict[str, str] | None = None,
                 name: str = "") -> None:
        self.name = name
        self._log = tempfile.NamedTemporaryFile(prefix="zmicro-service-", suffix=".log",
                                                delete=False)
        self.log_path = Path(self._log.name)
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=self._log,
                                     text=True, env=env)
        line = self._readline(START_TIMEOUT)
        if not line.startswith("READY "):
            self.stop()
            raise RuntimeError(f"service {name or argv} did not start ({line!r}):\n{self.log}")
        self.address = line.split()[1]

    def _readline(self, timeout: float) -> str:
        out: list[str] = []
        reader = threading.Thread(target=lambda: out.append(self.proc.stdout.readline()),
                                  daemon=True)
        reader.start()
        reader.join(timeout)
        return out[0].strip() if out else ""

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def stop(self) -> str:
        """SIGTERM, then SIGKILL after a generous wait; returns the log."""
        stop_process(self.proc)
        self._log.close()
        return self.log


def stop_process(proc: subprocess.Popen) -> None:
    """SIGTERM `proc`, then SIGKILL it if it is still there after a while."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(STOP_TIMEOUT)


def announce_ready(svc) -> None:
    """Print READY <address> once `svc` is bound (from a daemon thread)."""
    def wait() -> None:
        while svc.address is None:
            time.sleep(0.01)
        print("READY", svc.address, flush=True)

    threading.Thread(target=wait, daemon=True).start()


def private_dir(tmp_path_factory, name: str) -> Path:
    """A fresh 0700 directory (the embedded registry refuses others)."""
    path = tmp_path_factory.mktemp(name)
    path.chmod(0o700)
    return path


class InProcess:
    """A Service running in a thread of the test process."""

    def __init__(self, svc, *, use_asyncio: bool = False) -> None:
        self.svc = svc
        if use_asyncio:
            import asyncio
            target = lambda: asyncio.run(svc.serve())  # noqa: E731
        else:
            target = svc.run
        self.thread = threading.Thread(target=target, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while svc.address is None:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("service did not start")
            time.sleep(0.005)

    def stop(self) -> None:
        self.svc.stop()
        self.thread.join(30)
        assert not self.thread.is_alive()


CHILD_TIMEOUT = 60.0  # seconds for a forked child (in_child) to end


def in_child(fn) -> bytes:
    """Run fn() in a forked child; its return value (bytes), or the test
    fails with what the child raised."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report through the pipe, never return into pytest
        code = 0
        try:
            out = b"ok " + fn()
        except BaseException as exc:  # noqa: BLE001 - everything goes to the parent
            out, code = f"{type(exc).__name__}: {exc}".encode(), 1
        try:
            os.write(write_end, out)
        finally:
            os._exit(code)
    os.close(write_end)
    try:
        waited = eventually(lambda: os.waitpid(pid, os.WNOHANG)[0] == pid or None,
                            "the forked child to exit", timeout=CHILD_TIMEOUT)
        assert waited
        with os.fdopen(read_end, "rb") as f:
            out = f.read()
    except BaseException:
        os.kill(pid, signal.SIGKILL)
        raise
    assert out.startswith(b"ok "), out.decode(errors="replace")
    return out[3:]
