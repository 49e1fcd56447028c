"""The disk fills while comms writes a CDR upload, or the Parquet parts of its import.

Comms runs as its own process with its data directory on a small disk: a tmpfs of a few hundred
kilobytes where this machine lets the test mount one, else a file size limit on the process
(RLIMIT_FSIZE: a write past the limit fails with EFBIG; Python ignores SIGXFSZ, so the process
lives on). The import must fail with a status that says what is wrong, leave no dataset listed
and no partial files behind (or have them cleaned when the service next starts), and once the
disk has room again, importing the same file must finish it.

TOEX_FAULTS_SMALL_DISK=filesystem|rlimit chooses how the disk is made small (default: a
filesystem if it can be mounted).
"""

from __future__ import annotations

import os
import resource
import subprocess
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from .matrix import COMMS, cdr_rows, cdr_upload, events_by_resource, files_under, list_datasets, relayed

ROWS = 20_000  # about 1.2 MB of CSV, a few hundred KB of Parquet
PAGE = 4096
# Statuses that tell the caller the service cannot take the file now (not that the file is bad).
CLEAR = {grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE}
STORAGE_WORDS = ("storage", "disk", "space", "full")


@dataclass
class SmallDisk:
    """A data directory that holds at most `size` bytes (a file system), or whose files may not
    grow past `size` bytes (a process's file size limit)."""

    path: Path
    size: int
    how: str  # "filesystem" or "rlimit"

    def confine(self, pid: int) -> None:
        """Apply the limit to the process that writes there (a file system needs nothing)."""
        if self.how != "rlimit":
            return
        ignored = int(
            next(
                line.split()[1]
                for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                if line.startswith("SigIgn:")
            ),
            16,
        )
        assert ignored & (1 << (25 - 1)), "the service must ignore SIGXFSZ (25), or the limit kills it"
        resource.prlimit(pid, resource.RLIMIT_FSIZE, (self.size, self.size))

    def lift(self) -> None:
        """Room again: a larger file system (a process started next has no limit)."""
        if self.how == "filesystem":
            subprocess.run(["mount", "-o", "remount,size=64m", str(self.path)], check=True)


def mount_small(path: Path, size: int) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "toex-fault-disk", str(path)],
        capture_output=True,
    )
    return done.returncode == 0


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Callable[[int], SmallDisk]]:
    mounted: list[Path] = []
    wanted = os.environ.get("TOEX_FAULTS_SMALL_DISK", "")

    def make(size: int) -> SmallDisk:
        path = tmp_path / "comms-data"
        if wanted != "rlimit" and mount_small(path, size):
            mounted.append(path)
            return SmallDisk(path, size, "filesystem")
        if wanted == "filesystem":
            pytest.fail("TOEX_FAULTS_SMALL_DISK=filesystem, but a tmpfs cannot be mounted here")
        return SmallDisk(path, size, "rlimit")

    yield make
    for path in mounted:
        # Lazily: the service process may still be stopping.
        subprocess.run(["umount", "-l", str(path)], check=False)


@pytest.mark.parametrize("during", ["upload", "parquet"])
async def test_a_full_disk_fails_the_import_clearly_and_leaves_nothing_behind(
    during: str, small_disk: Callable[[int], SmallDisk], spawn: Any, postgres: Any, broker: Any
) -> None:
    body = cdr_rows(ROWS)
    if during == "upload":
        disk = small_disk(256 * 1024)  # a fifth of the file
    else:
        # The upload fits, with 64 KB to spare: the Parquet parts written next do not.
        disk = small_disk(-(-len(body) // PAGE) * PAGE + 64 * 1024)
        if disk.how == "rlimit":
            pytest.skip("a file size limit cannot fill the disk in the Parquet write (the upload is larger)")
    comms = await spawn(COMMS, postgres=postgres, nats_url=broker.url, data_dir=disk.path)
    assert comms.proc is not None
    disk.confine(comms.proc.pid)

    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await comms.stub.ImportCdr(cdr_upload(body), metadata=comms.md(), timeout=30)
    code, details = refused.value.code(), refused.value.details() or ""
    print(f"disk full ({disk.how}, {during}): {code.name}: {details!r}")
    assert comms.running, "the service died of the full disk"
    assert not [w for w in ("Traceback", 'File "') if w in details], details

    assert not await list_datasets(comms), "a dataset of the failed import is listed"
    left = files_under(disk.path)
    failed_log = comms.log_tail(3000)

    # Room again, and the service started afresh (without the limit).
    await comms.stop()
    disk.lift()
    await comms.start()
    assert not files_under(disk.path), (
        f"partial files of the failed import: {left} after it failed, {files_under(disk.path)} after a restart"
    )
    assert not await list_datasets(comms)

    answer = await comms.stub.ImportCdr(cdr_upload(body), metadata=comms.md(), timeout=30)
    assert answer.dataset.rows_accepted == ROWS and not answer.already_imported, answer
    assert await list_datasets(comms) == [(answer.dataset.name, ROWS)]

    await relayed(comms)
    imported = await events_by_resource(broker.url, "comms", "DatasetImported")
    assert imported == Counter({answer.dataset.name: 1}), "DatasetImported once, for the one dataset"

    # Last, so that everything above is checked whatever the service answered.
    clear = code in CLEAR and any(word in details.lower() for word in STORAGE_WORDS)
    if not clear:
        print(failed_log)
    assert clear, (
        f"a full disk answers {code.name} {details!r}, not RESOURCE_EXHAUSTED or UNAVAILABLE saying storage is full"
    )
