"""`Sources` over gRPC: each read is a call to the owning service with the caller's token and
purpose (the `call` given does that), so authorisation, grants and audit stay in the services."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import grpc
from google.protobuf.message import Message
from toex.comms.v1 import comms_pb2, resources_pb2
from toex.entity.v1 import entity_pb2
from toex.pnd.v1 import pnd_pb2, pole_pb2, sync_pb2
from toex.safeguarding.v1 import safeguarding_pb2
from toex.tasking.v1 import tasking_pb2
from toex.type.v1 import force_pb2, region_pb2, security_pb2, threat_pb2

from toex_products.pack import CommsFacts, EntityFacts, JobFacts, Listing, Row, Withheld

# call(service, stub_method, request) -> response; raises on any failure.
Call = Callable[[str, Callable[..., Any], Message], Any]


def _enum(descriptor: Any, value: int, prefix: str) -> str:
    if not value:
        return ""
    return str(descriptor.values_by_number[value].name).removeprefix(prefix)


def _when(ts: Any) -> str:
    return ts.ToDatetime().strftime("%Y-%m-%d %H:%M") if ts.seconds else ""


def job_facts(job: tasking_pb2.Job) -> JobFacts:
    handling = _enum(security_pb2.HandlingCode.DESCRIPTOR, job.handling, "HANDLING_CODE_")
    fields = [
        Row("State", _enum(tasking_pb2.JobState.DESCRIPTOR, job.state, "JOB_STATE_")),
        Row("Type", _enum(tasking_pb2.JobType.DESCRIPTOR, job.job_type, "JOB_TYPE_")),
        Row("Priority", _enum(tasking_pb2.Priority.DESCRIPTOR, job.priority, "PRIORITY_")),
        Row("Due", _when(job.due_time) + (" OVERDUE" if job.overdue else "")),
        Row("Owning region", _enum(region_pb2.Region.DESCRIPTOR, job.owning_region, "REGION_")),
        Row("Requesting unit", job.requesting_unit),
        Row("Requesting officer", job.requesting_officer),
        Row("Description", job.description),
    ]
    # Shown when the job has them.
    if job.requesting_force:
        fields.append(
            Row(
                "Requesting force",
                _enum(force_pb2.Force.DESCRIPTOR, job.requesting_force, "FORCE_"),
            )
        )
    if job.threat_category:
        fields.append(
            Row(
                "Threat category",
                _enum(threat_pb2.ThreatCategory.DESCRIPTOR, job.threat_category, "THREAT_CATEGORY_"),
            )
        )
    if job.HasField("feedback"):
        fields.append(Row("Feedback", f"{job.feedback.rating}/5 {job.feedback.comment}".strip()))
    referrals = []
    for r in job.linked_referrals:
        # The referral is named, never its subject (an MS1 route carries no identifying details).
        parts = [r.state or "state unknown", ", ".join(c.replace("_", " ").lower() for c in r.concerns)]
        if r.risk_level:
            parts.append(f"risk {r.risk_level.replace('_', ' ').lower()}")
        if r.update_time.seconds:
            parts.append(f"updated {_when(r.update_time)}")
        referrals.append(Row(r.referral, "  ".join(p for p in parts if p)))
    return JobFacts(
        name=job.name,
        operation=job.operation_name,
        handling=handling,
        fields=[f for f in fields if f.text],
        notes=[Row(f"{_when(n.create_time)} {n.author}", n.text) for n in job.notes],
        researchers=[
            Row(
                a.username,
                _enum(region_pb2.Region.DESCRIPTOR, a.region, "REGION_")
                + (f", since {_when(a.assign_time)}" if a.assign_time.seconds else ""),
            )
            for a in job.assignees
        ],
        product=job.product,
        referrals=referrals,
        subject_ids=list(job.subject_entity_ids),
    )


def grading_code(grading: Any) -> str:
    """The 3x5x2 code as an analyst writes it, e.g. "1/B/P", with the conditions of a C.

    Source evaluation 1-3, intelligence assessment A-E, handling code P or C; an unset part shows
    as "?" (an unset handling code is treated as C, as the contracts say). Takes the entity's or
    the PND's `Grading` (the same fields)."""
    fields = grading.DESCRIPTOR.fields_by_name
    evaluation = _enum(fields["source_evaluation"].enum_type, grading.source_evaluation, "SOURCE_EVALUATION_")
    assessment = _enum(
        fields["intelligence_assessment"].enum_type,
        grading.intelligence_assessment,
        "INTELLIGENCE_ASSESSMENT_",
    )
    handling = _enum(security_pb2.HandlingCode.DESCRIPTOR, grading.handling, "HANDLING_CODE_") or "C"
    code = f"{evaluation or '?'}/{assessment or '?'}/{handling}"
    if handling == "C" and grading.handling_conditions:
        code += f" (conditions: {grading.handling_conditions})"
    return code


def _words(descriptor: Any, value: int, prefix: str) -> str:
    return _enum(descriptor, value, prefix).replace("_", " ").lower()


MS1 = safeguarding_pb2.DESTINATION_DUTY_TO_NOTIFY


def referral_row(r: safeguarding_pb2.Referral) -> Row:
    """A referral linked to the job: its state, destinations, risk and statutory clocks. Never
    its subject, evidence or free text; a referral routed as an MS1 (Duty to Notify, anonymous
    by law) shows only its notification reference, concerns and state."""
    state = _enum(safeguarding_pb2.ReferralState.DESCRIPTOR, r.state, "REFERRAL_STATE_") or "state unknown"
    concerns = ", ".join(_words(safeguarding_pb2.Concern.DESCRIPTOR, c, "CONCERN_") for c in r.concerns)
    if MS1 in r.destinations or r.HasField("duty_to_notify"):
        reference = r.duty_to_notify.reference or "not yet prepared"
        return Row(
            "MS1 Duty to Notify (anonymous)", f"{state}  {concerns}  notification reference {reference}"
        )
    parts = [
        state,
        concerns,
        f"risk {_words(safeguarding_pb2.RiskLevel.DESCRIPTOR, r.risk_level, 'RISK_LEVEL_')}"
        if r.risk_level
        else "",
        "to "
        + ", ".join(
            _words(safeguarding_pb2.Destination.DESCRIPTOR, d, "DESTINATION_") for d in r.destinations
        )
        if r.destinations
        else "",
    ]
    for clock in r.clocks:
        kind = _words(safeguarding_pb2.ClockKind.DESCRIPTOR, clock.kind, "CLOCK_KIND_")
        if clock.satisfied_time.seconds:
            status = f"met {_when(clock.satisfied_time)}"
        elif clock.due_time.seconds:
            status = f"due {_when(clock.due_time)}" + (" OVERDUE" if clock.overdue else "")
        else:
            status = f"not before {_when(clock.not_before_time)}"
        parts.append(f"clock {kind}: {status}")
    return Row(r.name, "  ".join(p for p in parts if p))


def pnd_row(record: pnd_pb2.IntelligenceRecord) -> Row:
    """A record submitted to the PND for the job, with where it stands."""
    state = _enum(sync_pb2.SyncState.DESCRIPTOR, record.sync_state, "SYNC_STATE_") or "state unknown"
    parts = [
        _enum(pole_pb2.PoleKind.DESCRIPTOR, record.kind, "POLE_KIND_"),
        f"version {record.version}",
        state + (f" (PND {record.pnd_id} v{record.pnd_version})" if record.pnd_id else ""),
        f"grading {grading_code(record.grading)}" if record.HasField("grading") else "",
        "deleted" if record.delete_time.seconds else "",
    ]
    if record.rejection_reasons:
        parts.append(
            "rejected: "
            + "; ".join(f"{x.code} {x.field} {x.description}".strip() for x in record.rejection_reasons)
        )
    return Row(record.name, "  ".join(p for p in parts if p))


def referral_source(r: safeguarding_pb2.Referral) -> Row:
    """A referral in the annex. An MS1 route is named by its notification reference only."""
    handling = _enum(security_pb2.HandlingCode.DESCRIPTOR, r.handling, "HANDLING_CODE_") or "C"
    grading = f"grading: ?/?/{handling} (a referral is graded by its handling code only)"
    if MS1 in r.destinations or r.HasField("duty_to_notify"):
        reference = r.duty_to_notify.reference or "not yet prepared"
        return Row(f"MS1 Duty to Notify (anonymous), reference {reference}", grading)
    where = _enum(region_pb2.Region.DESCRIPTOR, r.region, "REGION_")
    return Row(f"Referral {r.name}", "  ".join(p for p in (where, grading) if p))


def pnd_source(record: pnd_pb2.IntelligenceRecord) -> Row:
    """A PND record in the annex, with its 3x5x2 grading."""
    grading = grading_code(record.grading) if record.HasField("grading") else ""
    parts = [
        _enum(region_pb2.Region.DESCRIPTOR, record.region, "REGION_"),
        _enum(pole_pb2.PoleKind.DESCRIPTOR, record.kind, "POLE_KIND_"),
        f"grading: {grading or 'not graded'}",
    ]
    return Row(f"PND record {record.name}", "  ".join(p for p in parts if p))


def entity_facts(entity: entity_pb2.Entity) -> EntityFacts:
    records = []
    for rec in entity.records:
        grading = grading_code(rec.grading) if rec.HasField("grading") else ""
        source = f"{rec.ref.source_system} {rec.ref.source_record_id}".strip()
        stored = f"{rec.ingest_time.ToDatetime():%Y-%m-%d}" if rec.HasField("ingest_time") else ""
        parts = [
            _enum(region_pb2.Region.DESCRIPTOR, rec.region, "REGION_"),
            f"source {source}" if source else "",
            f"stored {stored}" if stored else "",
            f"by {rec.ingested_by}" if rec.ingested_by else "",
            f"grading: {grading or 'not graded'}",
        ]
        records.append(Row(rec.name, "  ".join(p for p in parts if p)))
    deconfliction = [
        f"Another region holds this ({_enum(region_pb2.Region.DESCRIPTOR, d.region, 'REGION_')}), "
        f"ask {d.contact_role or 'its duty officer'}"
        for d in entity.other_regions
    ]
    return EntityFacts(
        name=entity.name,
        display_name=entity.display_name,
        kind=_enum(entity_pb2.RecordType.DESCRIPTOR, entity.entity_type, "RECORD_TYPE_"),
        records=records,
        deconfliction=deconfliction,
    )


def _list(method: Callable[..., Any]) -> Callable[..., Any]:
    """A list read whose refusal for the caller's role withholds the section (`Withheld`)."""

    def call(request: Any, **options: Any) -> Any:
        try:
            return method(request, **options)
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.PERMISSION_DENIED:
                raise Withheld(exc.details() or "permission denied") from None
            raise

    return call


def collect_export(chunks: Iterable[comms_pb2.ExportResponse]) -> bytes:
    """The file a comms `Export` streams, whole (any failure while streaming is raised)."""
    return b"".join(c.chunk for c in chunks)


def _withheld_rows(rows: Callable[[], list[Row]]) -> list[Row]:
    """The section's rows, or the "Withheld" line when the caller's role may not make the read."""
    try:
        return rows()
    except Withheld as exc:
        return [Row("Withheld", f"Not shown: the comms service refused this caller ({exc})")]


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


def _cut(items: Sequence[str], most: int = 5) -> str:
    shown = ", ".join(items[:most])
    return shown + (f" and {len(items) - most} more" if len(items) > most else "")


def _span(first: Any, last: Any) -> str:
    return f"{_when(first)} to {_when(last)}" if first.seconds else ""


def colocation_row(c: comms_pb2.Colocation) -> Row:
    """A phone subject seen on the same cell as another number, close in time."""
    parts = [
        f"{_n(c.occasion_count, 'occasion')} on {_n(len(c.cells), 'cell')} ({_cut(list(c.cells))})",
        _span(c.first_time, c.last_time),
        "also in direct contact" if c.in_contact else "no direct contact in the data",
    ]
    return Row(f"{c.number_a} with {c.number_b}", "  ".join(p for p in parts if p))


def convoy_row(c: comms_pb2.Convoy) -> Row:
    """Two vehicles read by one camera close together, again and again."""
    parts = [
        f"{_n(c.occasion_count, 'joint sighting')} on {_n(c.day_count, 'day')} at "
        f"{_n(len(c.cameras), 'camera')} ({_cut(list(c.cameras))})",
        f"median gap {c.median_gap_seconds} s",
        _span(c.first_seen_time, c.last_seen_time),
    ]
    return Row(f"{c.vrm_a} with {c.vrm_b}", "  ".join(p for p in parts if p))


WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


def travel_rows(patterns: Sequence[comms_pb2.GetTravelPatternResponse]) -> list[Row]:
    """One row per vehicle read in the job's ANPR data: where it is usually seen, when, and the
    hops it makes; the vehicles never read are named in one row."""
    rows = []
    unseen = []
    for p in patterns:
        if not p.read_count:
            unseen.append(p.vrm)
            continue
        places = [
            f"{v.location or v.camera} ({_n(v.read_count, 'read')}, usually {v.usual_hour:02d}:00)"
            for v in p.locations[:3]
        ]
        parts = [_n(p.read_count, "read"), "seen at " + "; ".join(places)]
        if any(p.by_hour):
            hour = max(range(len(p.by_hour)), key=lambda h: p.by_hour[h])
            parts.append(f"busiest hour {hour:02d}:00")
        if any(p.by_weekday):
            day = max(range(len(p.by_weekday)), key=lambda d: p.by_weekday[d])
            parts.append(f"busiest day {WEEKDAYS[day] if day < len(WEEKDAYS) else day}")
        if p.routes:
            parts.append(
                "routes "
                + "; ".join(
                    f"{r.from_camera} to {r.to_camera} x{r.count} (median {round(r.median_seconds / 60)} min)"
                    for r in p.routes[:3]
                )
            )
        rows.append(Row(p.vrm, "  ".join(parts)))
    if unseen:
        rows.append(Row("Not read", "No reads in this job's ANPR data: " + ", ".join(unseen)))
    return rows


def dataset_source(d: Any) -> Row:
    """A comms dataset in the annex: a dataset carries its handling code only (the 2 of 3x5x2)."""
    handling = _enum(security_pb2.HandlingCode.DESCRIPTOR, d.handling, "HANDLING_CODE_") or "C"
    parts = [
        _enum(region_pb2.Region.DESCRIPTOR, d.region, "REGION_"),
        _enum(resources_pb2.DatasetKind.DESCRIPTOR, d.kind, "DATASET_KIND_"),
        f"{d.rows_accepted or d.rows_read} rows",
        f"file {d.source_filename}" if d.source_filename else "",
        f"sha256 {d.content_sha256[:16]}" if d.content_sha256 else "",
        f"grading: ?/?/{handling} (a dataset is graded by its handling code only)",
    ]
    return Row(f"Dataset {d.display_name or d.name} ({d.name})", "  ".join(p for p in parts if p))


class GrpcSources:
    """`tasking`, `entity` and `comms` make the services' stubs; a stub is made only when first
    needed. Without `comms` the pack has no comms sections' content."""

    def __init__(
        self,
        call: Call,
        tasking: Callable[[], Any],
        entity: Callable[[], Any],
        comms: Callable[[], Any] | None = None,
        safeguarding: Callable[[], Any] | None = None,
        pnd: Callable[[], Any] | None = None,
    ) -> None:
        self._call = call
        self._tasking = tasking
        self._entity = entity
        self._comms = comms
        self._safeguarding = safeguarding
        self._pnd = pnd

    def _pages(self, service: str, method: Callable[..., Any], request: Any, items: str) -> list[Any]:
        out: list[Any] = []
        while True:
            page = self._call(service, method, request)
            out.extend(getattr(page, items))
            if not page.next_page_token:
                return out
            request.page_token = page.next_page_token

    def referrals(self, job: str, region: str) -> Listing | None:
        """The referrals linked to the job that the caller may see (the safeguarding service's
        job filter), with their clocks; and each, for the annex, with its handling code."""
        if self._safeguarding is None or not region:
            return None
        stub = self._safeguarding()
        request = safeguarding_pb2.ListReferralsRequest(parent=f"regions/{region}", job=job, page_size=500)
        found = self._pages("safeguarding", _list(stub.ListReferrals), request, "referrals")
        # The service filters; the check stays so that a service without the filter adds nothing.
        mine = [r for r in found if r.linked_job == job]
        return Listing([referral_row(r) for r in mine], [referral_source(r) for r in mine])

    def pnd(self, job: str, region: str) -> Listing | None:
        """The records submitted to the PND for the job that the caller may see, deleted ones
        too (the PND service's job filter); for the annex, each with its 3x5x2 grading."""
        if self._pnd is None or not region:
            return None
        stub = self._pnd()
        request = pnd_pb2.ListIntelligenceRequest(
            parent=f"regions/{region}", job=job, show_deleted=True, page_size=500
        )
        found = self._pages("pnd", _list(stub.ListIntelligence), request, "records")
        mine = [r for r in found if r.job == job]
        return Listing([pnd_row(r) for r in mine], [pnd_source(r) for r in mine])

    def comms(
        self, job: str, region: str, targets: Sequence[str], vehicles: Sequence[str] = ()
    ) -> CommsFacts | None:
        if self._comms is None or not region:
            return None
        stub = self._comms()
        request = comms_pb2.ListDatasetsRequest(parent=f"regions/{region}", job=job, page_size=500)
        datasets = self._pages("comms", _list(stub.ListDatasets), request, "datasets")
        dataset_rows = [
            Row(
                d.display_name or d.name,
                f"{_enum(resources_pb2.DatasetKind.DESCRIPTOR, d.kind, 'DATASET_KIND_')}  {d.rows_read} rows  "
                f"{d.source_filename}".strip(),
            )
            for d in datasets
        ]
        sources = [dataset_source(d) for d in datasets]
        kinds = {d.kind for d in datasets}
        calls = bool(targets) and resources_pb2.DATASET_KIND_CDR in kinds
        anpr = resources_pb2.DATASET_KIND_ANPR in kinds
        if not calls and not anpr:
            # No call data with targets and no ANPR data: no analysis is called.
            return CommsFacts(dataset_rows, [], [], None, sources=sources)
        scope = comms_pb2.AnalysisScope(parent=f"regions/{region}", job=job)
        anpr_scope = comms_pb2.AnprScope(parent=f"regions/{region}", job=job)

        def export(request: comms_pb2.ExportRequest, **options: Any) -> bytes:
            return collect_export(stub.Export(request, **options))

        def ask(method: Callable[..., Any], request: Message) -> Future[Any]:
            return pool.submit(self._call, "comms", method, request)

        def analysis(method: Callable[..., Any], request: Message) -> Future[Any]:
            # The analyses added with co-location and ANPR: a role refusal withholds the section.
            return pool.submit(self._call, "comms", _list(method), request)

        # The analyses are independent: run them at once, each a call with the job as purpose.
        with ThreadPoolExecutor(max_workers=8) as pool:
            if calls:
                # No job filter on watchlist contacts: the region's, kept when in the job's datasets.
                watch_f = ask(
                    stub.ListWatchlistContacts,
                    comms_pb2.ListWatchlistContactsRequest(parent=f"regions/{region}", limit=1000),
                )
                common_f = ask(
                    stub.FindCommonContacts, comms_pb2.FindCommonContactsRequest(scope=scope, targets=targets)
                )
                suspects_f = ask(
                    stub.RankSuspects, comms_pb2.RankSuspectsRequest(scope=scope, targets=targets)
                )
                picture_f = ask(
                    export,
                    comms_pb2.ExportRequest(format=comms_pb2.EXPORT_FORMAT_PNG, scope=scope, targets=targets),
                )
                colocations_f = analysis(
                    stub.FindColocations, comms_pb2.FindColocationsRequest(scope=scope, targets=targets)
                )
            if anpr:
                # Convoys of the vehicle subjects; without any, every convoy in the job's ANPR data.
                convoys_f = analysis(
                    stub.FindConvoys, comms_pb2.FindConvoysRequest(scope=anpr_scope, vrms=vehicles)
                )
                travel_fs = [
                    analysis(
                        stub.GetTravelPattern, comms_pb2.GetTravelPatternRequest(scope=anpr_scope, vrm=v)
                    )
                    for v in vehicles
                ]
            facts = CommsFacts(dataset_rows, [], [], None, sources=sources)
            if calls:
                common, suspects, picture = common_f.result(), suspects_f.result(), picture_f.result()
                names = {d.name for d in datasets}
                facts = dataclasses.replace(
                    facts,
                    common_contacts=[
                        Row(
                            c.number + (" (target)" if c.target else ""),
                            f"{c.target_count} targets, {c.contact_count} contacts",
                        )
                        for c in common.contacts
                    ],
                    suspects=[Row(f"{x.number}  score {x.score:.1f}", x.reason) for x in suspects.suspects],
                    picture=picture or None,
                    watchlist_contacts=[
                        Row(
                            f"{w.number_a} - {w.number_b}",
                            f"{w.contact_count} contacts ({w.list_a.name} / {w.list_b.name})  "
                            f"{_span(w.first_contact_time, w.last_contact_time)}".strip(),
                        )
                        for w in watch_f.result().contacts
                        if w.dataset in names
                    ],
                    colocations=_withheld_rows(
                        lambda: [colocation_row(c) for c in colocations_f.result().colocations]
                    ),
                )
            if anpr:
                facts = dataclasses.replace(
                    facts,
                    convoys=_withheld_rows(lambda: [convoy_row(c) for c in convoys_f.result().convoys]),
                    travel=_withheld_rows(lambda: travel_rows([f.result() for f in travel_fs])),
                )
        return facts

    def job(self, name: str) -> JobFacts:
        response = self._call("tasking", self._tasking().GetJob, tasking_pb2.GetJobRequest(name=name))
        return job_facts(response.job)

    def entity(self, name: str) -> EntityFacts:
        response = self._call("entity", self._entity().GetEntity, entity_pb2.GetEntityRequest(name=name))
        return entity_facts(response.entity)
