"""The SIO briefing pack: what it holds, and how it is gathered.

`assemble` reads through `Sources` (the services, over gRPC, with the caller's own token and the
job as purpose), so every read is authorised and audited by the service that owns the data. The
job read comes first and any failure of it, or of any later read, is raised: a caller who may not
see part of the pack gets an error, never a partial pack."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol

CLASSIFICATION = "OFFICIAL-SENSITIVE"


@dataclass(frozen=True)
class Row:
    label: str
    text: str


@dataclass(frozen=True)
class Section:
    title: str
    rows: Sequence[Row]
    empty: str

    @property
    def is_empty(self) -> bool:
        return not self.rows


@dataclass(frozen=True)
class JobFacts:
    name: str
    operation: str
    handling: str
    fields: Sequence[Row]
    notes: Sequence[Row]
    researchers: Sequence[Row]
    product: str
    referrals: Sequence[Row]
    subject_ids: Sequence[str]


@dataclass(frozen=True)
class EntityFacts:
    name: str
    display_name: str
    kind: str
    records: Sequence[Row]  # one per source record: where it came from and its grading
    deconfliction: Sequence[str] = field(default_factory=tuple)


@dataclass(frozen=True)
class Pack:
    job: str
    operation: str
    classification: str
    handling: str
    cover: Sequence[Row]
    sections: Sequence[Section]


class Sources(Protocol):
    def job(self, name: str) -> JobFacts: ...

    def entity(self, name: str) -> EntityFacts: ...


Progress = Callable[[str], None]


def _quiet(_: str) -> None:
    return None


def assemble(sources: Sources, job_name: str, *, progress: Progress = _quiet, workers: int = 8) -> Pack:
    progress(f"reading job {job_name}")
    job = sources.job(job_name)
    entities: list[EntityFacts] = []
    if job.subject_ids:
        progress(f"reading {len(job.subject_ids)} entities")
        with ThreadPoolExecutor(max_workers=workers) as pool:
            entities = list(pool.map(sources.entity, job.subject_ids))
    subjects = [Row(e.display_name or e.name, f"{e.kind}  {e.name}") for e in entities]
    deconfliction = [Row(e.display_name or e.name, note) for e in entities for note in e.deconfliction]
    annex = [Row(f"{e.display_name or e.name}: {r.label}", r.text) for e in entities for r in e.records]
    sections = [
        Section("Job", job.fields, "No job details."),
        Section("Notes", job.notes, "No notes on this job."),
        Section("Researchers", job.researchers, "No researchers assigned."),
        Section("Product", [Row("product", job.product)] if job.product else [], "No product yet."),
        Section("Subjects", subjects, "No subject entities on this job."),
        Section("Deconfliction", deconfliction, "No other region holds these subjects."),
        Section(
            "Safeguarding referrals",
            job.referrals,
            "No safeguarding referrals linked to this job.",
        ),
        Section(
            "Annex: records used, with grading",
            annex,
            "No records used.",
        ),
    ]
    cover = [
        Row("Job", job.name),
        Row("Operation", job.operation or "(none)"),
        Row("Classification", CLASSIFICATION),
        Row("Handling", job.handling or "(not set)"),
    ]
    progress("assembled")
    return Pack(job.name, job.operation, CLASSIFICATION, job.handling, cover, sections)
