"""Commands the handlers carry out."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from toex_common.principal import Principal
from toex_common.regions import Region

from toex_comms.domain.model import DatasetKind, Handling


@dataclass(frozen=True)
class ImportFile:
    actor: Principal
    kind: DatasetKind
    region: Region
    job: str
    display_name: str
    filename: str
    profile: str
    handling: Handling | None
    upload: Path
    content_sha256: str
    size_bytes: int


@dataclass(frozen=True)
class Scope:
    """Which datasets an analysis reads, and the time window."""

    actor: Principal
    region: Region
    dataset_ids: tuple[str, ...]
    job: str
    start: object = None  # datetime | None
    end: object = None  # datetime | None
