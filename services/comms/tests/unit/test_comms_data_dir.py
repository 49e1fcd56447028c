"""The data directory: a full disk is told to the caller as such, and what imports killed midway
leave behind is swept without touching another live process's work."""

from __future__ import annotations

import errno
import io
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import polars as pl
import pytest
from toex_common.grpc.status import grpc_code
from toex_common.testing.fakes import principal
from toex_comms.adapters import ingest
from toex_comms.adapters.store import Owner, ParquetDatasetStore
from toex_comms.bootstrap import sweep_data_dir
from toex_comms.domain import commands
from toex_comms.domain.model import Dataset, DatasetKind, Handling
from toex_comms.domain.profiles import BUILTIN_PROFILES
from toex_comms.service_layer import handlers
from toex_kernel.errors import ResourceExhausted
from toex_kernel.principal import Role
from toex_kernel.regions import Region

from .fakes import FakeCommsUnitOfWork, FakeExporter

NOW = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)
DAY = 24 * 3600.0
CSV = (
    b"start_time,duration,calling_number,called_number\n"
    + b"2024-03-01T10:00:00Z,60,07700900001,07700900002\n" * 50
)


def files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def says_the_disk_is_full(exc: ResourceExhausted) -> None:
    assert grpc_code(exc) is grpc.StatusCode.RESOURCE_EXHAUSTED
    message = exc.message
    assert "comms data directory is full" in message, message
    assert "free space" in message and "enlarge" in message and "import the same file again" in message
    assert "nothing" in message and "kept" in message


# ---------------------------------------------------------------- a full disk


class NoRoom(io.RawIOBase):
    """A file on a disk without room: every write fails with `code`."""

    def __init__(self, code: int) -> None:
        self.code = code

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        raise OSError(self.code, os.strerror(self.code))


class FullPath(type(Path())):  # type: ignore[misc]
    """A path whose file, once opened, has no room (as on a full disk or past RLIMIT_FSIZE)."""

    code = errno.ENOSPC

    def open(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        return io.BufferedWriter(NoRoom(self.code), buffer_size=1024)


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EFBIG, errno.EDQUOT])
@pytest.mark.parametrize("chunk", [100, 10_000])  # buffered (fails at close) or written at once
def test_an_upload_that_finds_no_room_says_the_disk_is_full(
    tmp_path: Path, code: int, chunk: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(FullPath, "code", code)
    upload = ingest.UploadWriter(FullPath(tmp_path / "u.csv"), "", 10**9)
    with pytest.raises(ResourceExhausted) as full:
        upload.write(b"x" * chunk)
        upload.close()
    says_the_disk_is_full(full.value)
    upload.discard()


def test_an_upload_to_dev_full_says_the_disk_is_full() -> None:
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full here")
    upload = ingest.UploadWriter(Path("/dev/full"), "utf-16", 10**9)
    with pytest.raises(ResourceExhausted) as full:
        upload.write("a,b\n".encode("utf-16") * 10_000)
    says_the_disk_is_full(full.value)


def test_other_write_errors_are_not_taken_for_a_full_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(FullPath, "code", errno.EIO)
    upload = ingest.UploadWriter(FullPath(tmp_path / "u.csv"), "", 10**9)
    with pytest.raises(OSError) as failed:
        upload.write(b"x" * 10_000)
    assert failed.value.errno == errno.EIO and not isinstance(failed.value, ResourceExhausted)


def polars_io_error(code: int) -> pl.exceptions.ComputeError:
    # What polars 1.x/2.x says when its Parquet writer's write(2) fails.
    return pl.exceptions.ComputeError(
        f"parquet: File out of specification: underlying IO error: {os.strerror(code)} (os error {code})"
    )


@pytest.fixture
def full_parquet(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[BaseException]]:
    """Parquet writes fail with what the test puts in the list."""
    failure: list[BaseException] = []

    def write_parquet(self: pl.DataFrame, *args: Any, **kwargs: Any) -> None:
        raise failure[0]

    monkeypatch.setattr(pl.DataFrame, "write_parquet", write_parquet)
    yield failure


@pytest.mark.parametrize(
    "failure",
    [
        polars_io_error(errno.ENOSPC),
        polars_io_error(errno.EFBIG),
        polars_io_error(errno.EDQUOT),
        OSError(errno.ENOSPC, "No space left on device"),
    ],
    ids=["polars-ENOSPC", "polars-EFBIG", "polars-EDQUOT", "OSError-ENOSPC"],
)
def test_a_parquet_write_that_finds_no_room_says_the_disk_is_full(
    tmp_path: Path, full_parquet: list[BaseException], failure: BaseException
) -> None:
    store = ParquetDatasetStore(tmp_path / "data")
    upload = store.receive("", 10**9)
    upload.write(CSV)
    upload.close()
    full_parquet.append(failure)
    with pytest.raises(ResourceExhausted) as full:
        store.ingest(DatasetKind.CDR, upload, "d" * 32, BUILTIN_PROFILES["canonical"])
    says_the_disk_is_full(full.value)


def test_other_parquet_errors_are_not_taken_for_a_full_disk(
    tmp_path: Path, full_parquet: list[BaseException]
) -> None:
    store = ParquetDatasetStore(tmp_path / "data")
    upload = store.receive("", 10**9)
    upload.write(CSV)
    upload.close()
    full_parquet.append(polars_io_error(errno.EACCES))
    with pytest.raises(pl.exceptions.ComputeError):
        store.ingest(DatasetKind.CDR, upload, "d" * 32, BUILTIN_PROFILES["canonical"])


async def test_an_import_that_fills_the_disk_answers_resource_exhausted_and_keeps_nothing(
    tmp_path: Path, full_parquet: list[BaseException]
) -> None:
    uow = FakeCommsUnitOfWork()
    store = ParquetDatasetStore(tmp_path / "data")
    deps = handlers.Deps(uow=lambda: uow, store=store, exporter=FakeExporter(), clock=lambda: NOW)  # type: ignore[arg-type,return-value]
    full_parquet.append(polars_io_error(errno.ENOSPC))

    async def chunks() -> AsyncIterator[bytes]:
        yield CSV

    command = commands.ImportFile(
        actor=principal("analyst.emsou", Role.ANALYST),
        kind=DatasetKind.CDR,
        region=Region.EMSOU,
        job="",
        display_name="",
        filename="calls.csv",
        profile="",
        handling=None,
        encoding="",
        declared_size=len(CSV),
        chunks=chunks(),
    )
    with pytest.raises(ResourceExhausted) as full:
        await handlers.import_file(command, deps)
    says_the_disk_is_full(full.value)
    assert not uow.repo.datasets
    assert files_under(tmp_path / "data") == []


# ---------------------------------------------------------------- what killed imports leave


def a_dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def leave_work(store: ParquetDatasetStore, dataset_id: str) -> None:
    """An upload under way and an import's staged part, as a process killed midway leaves them."""
    upload = store.receive("", 10**9)
    upload.write(CSV)
    upload._file.flush()  # still open: the kill came mid-upload
    staged = store.staging(dataset_id)
    staged.mkdir()
    (staged / "rows-00000.parquet").write_bytes(b"PAR1")


def owned_by(store: ParquetDatasetStore) -> list[str]:
    return [name for name in files_under(store.root) if name.split("/")[1].startswith(f"{store.owner}_")]


def test_names_carry_their_owner() -> None:
    me = Owner.this_process()
    assert me.pid == os.getpid() and Owner.of(f"{me}_{'a' * 32}.csv") == me
    assert Owner.of("0123456789abcdef0123456789abcdef.csv") is None
    assert Owner.of("comms-7d9f8-x2v.cluster.local_7_0a1b2c3d_tmpq1w2e3.export") == Owner(
        "comms-7d9f8-x2v.cluster.local", 7, "0a1b2c3d"
    )


def test_at_start_what_this_hosts_earlier_process_left_goes_and_a_live_ones_stays(tmp_path: Path) -> None:
    root = tmp_path / "data"
    me = Owner("comms-0", os.getpid(), "00000001")
    earlier_same_pid = ParquetDatasetStore(root, owner=Owner("comms-0", os.getpid(), "0000000a"))
    earlier_gone = ParquetDatasetStore(root, owner=Owner("comms-0", a_dead_pid(), "0000000b"))
    # Another process on this host sharing the directory (the test runner's parent is alive).
    sibling = ParquetDatasetStore(root, owner=Owner("comms-0", os.getppid(), "0000000c"))
    other_pod = ParquetDatasetStore(root, owner=Owner("comms-1", a_dead_pid(), "0000000d"))
    for n, store in enumerate([earlier_same_pid, earlier_gone, sibling, other_pod]):
        leave_work(store, f"{n:032x}")
    store = ParquetDatasetStore(root, owner=me)
    leave_work(store, "f" * 32)
    before = files_under(root)
    gone = sorted(owned_by(earlier_same_pid) + owned_by(earlier_gone))
    assert len(gone) == 4

    removed = store.sweep(at_start=True)

    assert sorted(str(p.relative_to(root)) for p in removed) == sorted(
        {"/".join(n.split("/")[:2]) for n in gone}
    )
    assert files_under(root) == sorted(set(before) - set(gone))
    # Later sweeps (every hour) leave even an earlier life's fresh files to the age rule.
    leave_work(earlier_gone, "e" * 32)
    assert store.sweep() == [] and len(owned_by(earlier_gone)) == 2


def test_another_process_files_go_only_once_untouched_for_a_day(tmp_path: Path) -> None:
    root = tmp_path / "data"
    store = ParquetDatasetStore(root, owner=Owner("comms-0", os.getpid(), "00000001"), abandoned_after=DAY)
    other = ParquetDatasetStore(root, owner=Owner("comms-1", os.getpid(), "00000002"))
    leave_work(store, "a" * 32)
    leave_work(other, "b" * 32)
    (root / "uploads" / f"{'c' * 32}.csv").write_bytes(b"an upload of a version that named no owner")
    (root / "staging" / ("d" * 32)).mkdir()
    mine = owned_by(store)
    now = time.time()

    for sweep in (store.sweep(now=now), store.sweep(at_start=True, now=now + DAY - 60)):
        assert sweep == [], "a live replica's work is never taken for abandoned"
    removed = store.sweep(now=now + DAY + 60)

    assert files_under(root) == mine, "only this process's own work is left"
    assert len(removed) == 4 and not (root / "staging" / ("d" * 32)).exists()
    # Its own, however old, are this process's to remove.
    assert store.sweep(at_start=True, now=now + 30 * DAY) == [] and files_under(root) == mine


def publish(store: ParquetDatasetStore, dataset_id: str) -> None:
    staged = store.staging(dataset_id)
    staged.mkdir()
    (staged / "rows-00000.parquet").write_bytes(b"PAR1")
    store.publish(dataset_id)


def test_dataset_directories_are_candidates_only_once_untouched_for_a_day(tmp_path: Path) -> None:
    store = ParquetDatasetStore(tmp_path / "data", abandoned_after=DAY)
    publish(store, "a" * 32)
    (store.root / "datasets" / "lost+found").mkdir()  # not a dataset: never touched
    now = time.time()
    assert store.untouched_datasets(now=now + DAY - 60) == []
    assert store.untouched_datasets(now=now + DAY + 60) == ["a" * 32]
    assert store.remove_unlisted(["lost+found", "../uploads"]) == []
    assert (store.root / "datasets" / "lost+found").exists()


async def test_the_sweep_removes_only_old_dataset_directories_the_database_does_not_list(
    tmp_path: Path,
) -> None:
    uow = FakeCommsUnitOfWork()
    root = tmp_path / "data"
    listed, unlisted = "a" * 32, "b" * 32
    old = ParquetDatasetStore(root, abandoned_after=0)
    for dataset_id in (listed, unlisted):
        publish(old, dataset_id)
    uow.repo.datasets[listed] = dataset(listed)  # committed
    # A young directory the database does not list yet: an import between publish and commit.
    young = ParquetDatasetStore(root, abandoned_after=DAY)
    await sweep_data_dir(young, lambda: uow)  # type: ignore[arg-type,return-value]
    assert sorted(p.name for p in (root / "datasets").iterdir()) == [listed, unlisted]

    await sweep_data_dir(old, lambda: uow, at_start=True)  # type: ignore[arg-type,return-value]
    assert [p.name for p in (root / "datasets").iterdir()] == [listed]


def dataset(dataset_id: str) -> Dataset:
    return Dataset(
        id=dataset_id,
        region=Region.EMSOU,
        kind=DatasetKind.CDR,
        job="",
        display_name="calls",
        source_filename="calls.csv",
        content_sha256="0" * 64,
        profile="canonical",
        handling=Handling.C,
        created_by="analyst.emsou",
        created_at=NOW,
        size_bytes=1,
    )
