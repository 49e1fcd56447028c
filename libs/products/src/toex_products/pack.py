"""The SIO briefing pack: what it holds, and how it is gathered.

`assemble` reads through `Sources` (the services, over gRPC, with the caller's own token and the
job as purpose), so every read is authorised and audited by the service that owns the data. The
job read comes first and any failure of it, or of any later read, is raised: a caller who may not
see part of the pack gets an error, never a partial pack."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

T = TypeVar("T")

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
    image: bytes | None = None  # a PNG shown before the rows (the network picture)

    @property
    def is_empty(self) -> bool:
        return not self.rows and self.image is None


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


class Withheld(Exception):
    """A whole source the caller's role may not read (PERMISSION_DENIED on a list read): the
    section says so in the pack instead of failing it. A refusal on a named item (an entity, the
    job) still fails the pack."""


@dataclass(frozen=True)
class CommsFacts:
    datasets: Sequence[Row]
    common_contacts: Sequence[Row]
    suspects: Sequence[Row]
    picture: bytes | None  # the contact network as PNG, when there are targets and call data
    watchlist_contacts: Sequence[Row] = ()  # contacts between watchlisted numbers, in the job's data
    colocations: Sequence[Row] = ()  # the phone subjects seen on the same cell as another number
    travel: Sequence[Row] = ()  # the vehicle subjects' ANPR travel patterns
    convoys: Sequence[Row] = ()  # vehicles seen together repeatedly, in the job's ANPR data
    sources: Sequence[Row] = ()  # the datasets read, with their grading, for the annex


@dataclass(frozen=True)
class Listing:
    """A list read's rows for its section, and the same items with their grading for the annex."""

    rows: Sequence[Row]
    sources: Sequence[Row] = ()


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

    # `targets` are the job's phone subjects, `vehicles` its vehicle subjects (VRMs).
    def comms(
        self, job: str, region: str, targets: Sequence[str], vehicles: Sequence[str] = ()
    ) -> CommsFacts | None: ...

    # None when the source is not wired in (the section then falls back or says so).
    def referrals(self, job: str, region: str) -> Listing | None: ...

    def pnd(self, job: str, region: str) -> Listing | None: ...


Progress = Callable[[str], None]


def _quiet(_: str) -> None:
    return None


def _withheld(result: Callable[[], T], service: str) -> T | Row:
    try:
        return result()
    except Withheld as exc:
        return Row("Withheld", f"Not shown: the {service} service refused this caller ({exc})")


def assemble(sources: Sources, job_name: str, *, progress: Progress = _quiet, workers: int = 8) -> Pack:
    progress(f"reading job {job_name}")
    job = sources.job(job_name)
    entities: list[EntityFacts] = []
    if job.subject_ids:
        progress(f"reading {len(job.subject_ids)} entities")
        with ThreadPoolExecutor(max_workers=workers) as pool:
            entities = list(pool.map(sources.entity, job.subject_ids))
    # The comms targets are the job's phone subjects; the analyses run over the job's datasets.
    targets = [e.display_name for e in entities if e.kind == "PHONE" and e.display_name]
    vehicles = [e.display_name for e in entities if e.kind == "VEHICLE" and e.display_name]
    region = job.name.split("/")[1] if job.name.startswith("regions/") else ""
    progress("reading comms, safeguarding and PND")
    with ThreadPoolExecutor(max_workers=3) as pool:
        comms_f = pool.submit(sources.comms, job.name, region, targets, vehicles)
        referrals_f = pool.submit(sources.referrals, job.name, region)
        pnd_f = pool.submit(sources.pnd, job.name, region)
        comms = _withheld(comms_f.result, "comms")
        referrals = _withheld(referrals_f.result, "safeguarding")
        pnd = _withheld(pnd_f.result, "pnd")
    comms_facts = None if isinstance(comms, Row) else comms
    referral_rows: Sequence[Row] | None
    if isinstance(referrals, Row):
        # The tasking service's view of the job's referrals (no clocks), and why no more.
        referral_rows = [referrals, *job.referrals]
    else:
        referral_rows = referrals.rows if referrals is not None else None
    # Each subject with its records' provenance and grading, one line per record.
    subjects = [
        Row(
            e.display_name or e.name,
            "\n".join([f"{e.kind}  {e.name}".strip(), *(f"record {r.label}: {r.text}" for r in e.records)]),
        )
        for e in entities
    ]
    deconfliction = [Row(e.display_name or e.name, note) for e in entities for note in e.deconfliction]
    annex = _annex(
        [Row(f"Record {r.label} ({e.display_name or e.name})", r.text) for e in entities for r in e.records],
        comms_facts.sources if comms_facts else (),
        referrals.sources if isinstance(referrals, Listing) else (),
        pnd.sources if isinstance(pnd, Listing) else (),
    )

    def comms_rows(pick: Callable[[CommsFacts], Sequence[Row]]) -> Sequence[Row]:
        # Every comms section states the "Withheld" line when the caller's role refused the comms list.
        if isinstance(comms, Row):
            return [comms]
        return pick(comms_facts) if comms_facts else []

    sections = [
        Section("Job", job.fields, "No job details."),
        Section("Notes", job.notes, "No notes on this job."),
        Section("Researchers", job.researchers, "No researchers assigned."),
        Section("Product", [Row("product", job.product)] if job.product else [], "No product yet."),
        Section("Subjects", subjects, "No subject entities on this job."),
        Section("Deconfliction", deconfliction, "No other region holds these subjects."),
        Section(
            "Comms datasets",
            comms_rows(lambda c: c.datasets),
            "No comms datasets on this job.",
        ),
        Section(
            "Comms: network picture, common contacts",
            comms_rows(lambda c: c.common_contacts),
            "No common contacts (no phone subjects or no call data on this job).",
            image=comms_facts.picture if comms_facts else None,
        ),
        Section(
            "Comms: ranked new numbers, with reasons",
            comms_rows(lambda c: c.suspects),
            "No new numbers tied to the targets.",
        ),
        Section(
            "Comms: watchlist contacts",
            comms_rows(lambda c: c.watchlist_contacts),
            "No contacts between watchlisted numbers in this job's call data.",
        ),
        Section(
            "Comms: co-location",
            comms_rows(lambda c: c.colocations),
            "No co-location: no phone subject shared a cell with another number within 15 minutes "
            "(or no phone subjects, or no call data with cells, on this job).",
        ),
        Section(
            "ANPR: travel patterns",
            comms_rows(lambda c: c.travel),
            "No travel patterns (no vehicle subjects, or no ANPR data, on this job).",
        ),
        Section(
            "ANPR: convoys",
            comms_rows(lambda c: c.convoys),
            "No convoys: no two vehicles read by one camera within 3 minutes on 3 occasions or more "
            "(or no ANPR data on this job).",
        ),
        Section(
            "Safeguarding referrals",
            # From the safeguarding service (state, destinations, statutory clocks) when wired in;
            # else as the tasking service lists them on the job.
            job.referrals if referral_rows is None else referral_rows,
            "No safeguarding referrals linked to this job.",
        ),
        Section(
            "PND submissions",
            [pnd] if isinstance(pnd, Row) else pnd.rows if pnd is not None else [],
            "No records submitted to the PND for this job." if pnd is not None else "PND not read.",
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


def _annex(*groups: Sequence[Row]) -> list[Row]:
    """Every dataset and record the pack used, once each, in the order of the groups (entity
    records, comms datasets, referrals, PND records)."""
    seen: set[str] = set()
    out: list[Row] = []
    for group in groups:
        for row in group:
            if row.label not in seen:
                seen.add(row.label)
                out.append(row)
    return out
