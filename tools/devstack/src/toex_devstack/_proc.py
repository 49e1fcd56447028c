"""Process and port helpers shared by the server wrappers (internal)."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

LOOPBACK = "127.0.0.1"

# initdb and postgres refuse to run as root, so as root the cluster belongs to this system user.
PG_SYSTEM_USER = "toexpg"


class DevstackError(RuntimeError):
    """A local server could not be set up or started; the message says what to do."""


Progress = Callable[[str], None]


def no_progress(_message: str) -> None:
    return None


def free_port(host: str = LOOPBACK) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_open(port: int, host: str = LOOPBACK, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def ensure_port_free(port: int, what: str, host: str = LOOPBACK) -> None:
    if port_open(port, host):
        raise DevstackError(
            f"{what}: port {host}:{port} is already in use by another process; "
            "stop that process or choose another port"
        )


def find_executable(name: str) -> str | None:
    """Find a tool on PATH or next to the running interpreter (a venv's bin/ is not always on PATH)."""
    found = shutil.which(name)
    if found:
        return found
    candidate = Path(sys.executable).parent / name
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    return None


def is_root() -> bool:
    return os.geteuid() == 0


def ensure_pg_system_user() -> pwd.struct_passwd:
    """Create the unprivileged PostgreSQL owner once (idempotent); only needed when running as root."""
    try:
        return pwd.getpwnam(PG_SYSTEM_USER)
    except KeyError:
        pass
    useradd = shutil.which("useradd") or "/usr/sbin/useradd"
    result = subprocess.run(
        [
            useradd,
            "--system",
            "--user-group",
            "--no-create-home",
            "--shell",
            "/usr/sbin/nologin",
            PG_SYSTEM_USER,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    # Exit code 9: created meanwhile by a concurrent run.
    if result.returncode not in (0, 9):
        raise DevstackError(f"could not create system user {PG_SYSTEM_USER!r}: {result.stderr.strip()}")
    return pwd.getpwnam(PG_SYSTEM_USER)


def process_alive(pid: int | None) -> bool:
    """True if the process exists and is not a zombie (a container's PID 1 may never reap it)."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    # The state field follows the parenthesised command name.
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def process_cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def terminate_group(pid: int, timeout: float = 20.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    """SIGTERM the process group led by ``pid``, wait, then SIGKILL what is left."""
    for sig, wait_for in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)
        deadline = time.monotonic() + wait_for
        while time.monotonic() < deadline:
            if proc is not None:
                if proc.poll() is not None:
                    return
            elif not process_alive(pid):
                return
            time.sleep(0.05)
    if proc is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=1)


def terminate_groups(pids: list[int], timeout: float = 20.0) -> None:
    """SIGTERM the process groups led by ``pids`` at once, wait for them all, then SIGKILL what
    is left: stopping many servers takes as long as the slowest, not the sum."""
    for sig, wait_for in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, sig)
        deadline = time.monotonic() + wait_for
        while time.monotonic() < deadline and any(process_alive(pid) for pid in pids):
            time.sleep(0.05)
        if not any(process_alive(pid) for pid in pids):
            return


def tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:])


def wait_until(
    check: Callable[[], bool],
    *,
    timeout: float,
    what: str,
    alive: Callable[[], bool] | None = None,
    log: Path | None = None,
    progress: Progress = no_progress,
    progress_every: float = 10.0,
    interval: float = 0.1,
) -> None:
    """Poll ``check`` until true; fail early with the log tail if the process died."""
    start = time.monotonic()
    next_note = start + progress_every
    while True:
        if check():
            return
        now = time.monotonic()
        if alive is not None and not alive():
            detail = f"\n--- last lines of {log} ---\n{tail(log)}" if log else ""
            raise DevstackError(f"{what} exited before it became ready{detail}")
        if now - start > timeout:
            detail = f"\n--- last lines of {log} ---\n{tail(log)}" if log else ""
            raise DevstackError(f"{what} not ready after {timeout:.0f} s{detail}")
        if now >= next_note:
            progress(f"  still waiting for {what} ({now - start:.0f} s)")
            next_note = now + progress_every
        time.sleep(interval)
