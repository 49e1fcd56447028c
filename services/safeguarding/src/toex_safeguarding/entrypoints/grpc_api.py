"""gRPC servicer: translate requests to commands, call the handler, translate back."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from grpc import aio
from toex.safeguarding.v1 import safeguarding_pb2 as pb
from toex.safeguarding.v1 import safeguarding_pb2_grpc
from toex_common import pagination
from toex_common.context import current_principal, current_purpose
from toex_common.uow import idempotency_of
from toex_kernel import names
from toex_kernel.errors import InvalidArgument, Violations
from toex_kernel.policy import PURPOSE_METADATA_KEY
from toex_kernel.regions import Region

from toex_safeguarding.adapters import mapping
from toex_safeguarding.domain import commands
from toex_safeguarding.domain.model import Consent, Referral, Subject
from toex_safeguarding.domain.values import Concern, Destination
from toex_safeguarding.service_layer import handlers

REFERRAL = "regions/{region}/referrals/{referral}"
UPDATABLE = {
    "subject.date_of_birth",
    "subject.age_band",
    "subject.local_authority",
    "subject.consent",
    "concerns",
    "risk_level",
    "destinations",
    "evidence",
    "linked_job",
    "handling",
}


def _ref(name: str, field: str = "name") -> tuple[Region, str]:
    parts = names.parse(name, REFERRAL, field)
    region = names.parse_region(parts["region"], field)
    assert region is not None
    return region, parts["referral"]


def _parent(parent: str, *, allow_all: bool) -> Region | None:
    parts = names.parse(parent or ("regions/-" if allow_all else ""), "regions/{region}", "parent")
    return names.parse_region(parts["region"], "parent", allow_all=allow_all)


def _when(request: Any, field: str) -> datetime | None:
    return getattr(request, field).ToDatetime(tzinfo=UTC) if request.HasField(field) else None


def _concerns(values: Any, field: str, problems: Violations) -> list[Concern]:
    found = []
    for index, value in enumerate(values):
        concern = mapping.concern_from_proto(value)
        if concern is None:
            problems.add(f"{field}[{index}]", "choose a concern")
        else:
            found.append(concern)
    return found


def _destinations(values: Any, field: str, problems: Violations) -> list[Destination]:
    found = []
    for index, value in enumerate(values):
        destination = mapping.destination_from_proto(value)
        if destination is None:
            problems.add(f"{field}[{index}]", "choose a destination")
        else:
            found.append(destination)
    return found


def _destination(value: int) -> Destination:
    destination = mapping.destination_from_proto(value)
    if destination is None:
        raise InvalidArgument.field("destination", "choose the destination")
    return destination


def _linked_job(value: str, field: str, problems: Violations) -> str:
    if value.strip():
        try:
            names.parse(value.strip(), "regions/{region}/jobs/{job}", field)
        except InvalidArgument as exc:
            problems.items.extend(exc.violations)
    return value.strip()


class SafeguardingServicer(safeguarding_pb2_grpc.SafeguardingServiceServicer):
    def __init__(self, deps: handlers.Deps) -> None:
        self.deps = deps

    def _out(self, referral: Referral) -> pb.Referral:
        return mapping.referral_to_proto(referral, now=self.deps.clock())

    async def CreateReferral(
        self, request: pb.CreateReferralRequest, context: aio.ServicerContext
    ) -> pb.CreateReferralResponse:
        region = _parent(request.parent, allow_all=False)
        assert region is not None
        r = request.referral
        problems = Violations()
        if not r.subject.entity_id.strip():
            problems.add("referral.subject.entity_id", "name the subject's entity id")
        dob = None
        try:
            dob = mapping.parse_date(r.subject.date_of_birth, "referral.subject.date_of_birth")
        except InvalidArgument as exc:
            problems.items.extend(exc.violations)
        concerns = _concerns(r.concerns, "referral.concerns", problems)
        if not r.concerns:
            problems.add("referral.concerns", "name at least one concern")
        destinations = _destinations(r.destinations, "referral.destinations", problems)
        linked_job = _linked_job(r.linked_job, "referral.linked_job", problems)
        evidence = []
        try:
            evidence = mapping.evidence_from_proto(r.evidence, "referral.evidence")
        except InvalidArgument as exc:
            problems.items.extend(exc.violations)
        problems.raise_if_any()
        consent = mapping.consent_from_proto(r.subject.consent.status)
        actor = current_principal()
        subject = Subject(
            r.subject.entity_id.strip(),
            dob,
            mapping.age_band_from_proto(r.subject.age_band),
            r.subject.local_authority.strip(),
            Consent(consent, actor.username, self.deps.clock())
            if consent.name != "NOT_RECORDED"
            else Consent(),
        )
        created = await handlers.create_referral(
            commands.CreateReferral(
                actor=actor,
                region=region,
                subject=subject,
                concerns=concerns,
                risk_level=mapping.risk_from_proto(r.risk_level),
                evidence=evidence,
                destinations=destinations,
                linked_job=linked_job,
                handling=mapping.handling_from_proto(r.handling),
                idempotency=idempotency_of(request),
                credentials=_credentials(context),
            ),
            self.deps,
        )
        return pb.CreateReferralResponse(referral=self._out(created))

    async def GetReferral(
        self, request: pb.GetReferralRequest, context: aio.ServicerContext
    ) -> pb.GetReferralResponse:
        region, referral_id = _ref(request.name)
        referral = await handlers.get_referral(
            commands.GetReferral(current_principal(), region, referral_id, current_purpose()), self.deps
        )
        return pb.GetReferralResponse(referral=self._out(referral))

    async def ListReferrals(
        self, request: pb.ListReferralsRequest, context: aio.ServicerContext
    ) -> pb.ListReferralsResponse:
        region = _parent(request.parent, allow_all=True)
        states = frozenset(s for s in (mapping.state_from_proto(v) for v in request.states) if s is not None)
        size = pagination.page_size(request.page_size)
        problems = Violations()
        job = _linked_job(request.job, "job", problems)
        problems.raise_if_any()
        principal = current_principal()
        query_key = pagination.fingerprint(
            principal.subject, request.parent, sorted(states), request.overdue_only, size, job
        )
        after = pagination.decode_after(request.page_token, query_key)
        found, more = await handlers.list_referrals(
            commands.ListReferrals(
                principal, region, states, request.overdue_only, size, after, current_purpose(), job
            ),
            self.deps,
        )
        response = pb.ListReferralsResponse(referrals=[self._out(r) for r in found])
        if more and found:
            response.next_page_token = pagination.encode(
                found[-1].created_at.isoformat(), found[-1].id, query_key
            )
        return response

    async def UpdateReferral(
        self, request: pb.UpdateReferralRequest, context: aio.ServicerContext
    ) -> pb.UpdateReferralResponse:
        region, referral_id = _ref(request.referral.name, "referral.name")
        paths = list(request.update_mask.paths)
        problems = Violations()
        if not paths:
            problems.add("update_mask", f"name the fields to change: {', '.join(sorted(UPDATABLE))}")
        for path in paths:
            if path not in UPDATABLE:
                problems.add(
                    "update_mask", f"{path} cannot be changed; changeable: {', '.join(sorted(UPDATABLE))}"
                )
        problems.raise_if_any()
        r = request.referral
        values: dict[str, Any] = {}
        if "subject.date_of_birth" in paths:
            values["date_of_birth"] = mapping.parse_date(
                r.subject.date_of_birth, "referral.subject.date_of_birth"
            )
        if "subject.age_band" in paths:
            values["age_band"] = mapping.age_band_from_proto(r.subject.age_band)
        if "subject.local_authority" in paths:
            values["local_authority"] = r.subject.local_authority
        if "subject.consent" in paths:
            values["consent"] = mapping.consent_from_proto(r.subject.consent.status)
        if "concerns" in paths:
            values["concerns"] = _concerns(r.concerns, "referral.concerns", problems)
        if "risk_level" in paths:
            values["risk_level"] = mapping.risk_from_proto(r.risk_level)
        if "destinations" in paths:
            values["destinations"] = _destinations(r.destinations, "referral.destinations", problems)
        if "linked_job" in paths:
            values["linked_job"] = _linked_job(r.linked_job, "referral.linked_job", problems)
        if "handling" in paths:
            values["handling"] = mapping.handling_from_proto(r.handling)
        if "evidence" in paths:
            values["evidence"] = mapping.evidence_from_proto(r.evidence, "referral.evidence")
        problems.raise_if_any()
        updated = await handlers.update_referral(
            commands.UpdateReferral(
                current_principal(),
                region,
                referral_id,
                commands.Revision(**values),
                idempotency_of(request),
                _credentials(context),
                current_purpose(),
            ),
            self.deps,
        )
        return pb.UpdateReferralResponse(referral=self._out(updated))

    async def SubmitForApproval(
        self, request: pb.SubmitForApprovalRequest, context: aio.ServicerContext
    ) -> pb.SubmitForApprovalResponse:
        region, referral_id = _ref(request.name)
        referral = await handlers.submit_for_approval(
            commands.Transition(
                current_principal(), region, referral_id, idempotency=idempotency_of(request)
            ),
            self.deps,
        )
        return pb.SubmitForApprovalResponse(referral=self._out(referral))

    async def ApproveReferral(
        self, request: pb.ApproveReferralRequest, context: aio.ServicerContext
    ) -> pb.ApproveReferralResponse:
        region, referral_id = _ref(request.name)
        referral = await handlers.approve_referral(
            commands.Transition(
                current_principal(), region, referral_id, idempotency=idempotency_of(request)
            ),
            self.deps,
        )
        return pb.ApproveReferralResponse(referral=self._out(referral))

    async def ReturnReferral(
        self, request: pb.ReturnReferralRequest, context: aio.ServicerContext
    ) -> pb.ReturnReferralResponse:
        region, referral_id = _ref(request.name)
        referral = await handlers.return_referral(
            commands.Transition(
                current_principal(), region, referral_id, request.reason, idempotency_of(request)
            ),
            self.deps,
        )
        return pb.ReturnReferralResponse(referral=self._out(referral))

    async def RecordSubmission(
        self, request: pb.RecordSubmissionRequest, context: aio.ServicerContext
    ) -> pb.RecordSubmissionResponse:
        region, referral_id = _ref(request.name)
        referral = await handlers.record_submission(
            commands.RecordSubmission(
                current_principal(),
                region,
                referral_id,
                _destination(request.destination),
                request.agency_reference,
                _when(request, "submit_time"),
                idempotency_of(request),
            ),
            self.deps,
        )
        return pb.RecordSubmissionResponse(referral=self._out(referral))

    async def RecordAcknowledgement(
        self, request: pb.RecordAcknowledgementRequest, context: aio.ServicerContext
    ) -> pb.RecordAcknowledgementResponse:
        region, referral_id = _ref(request.name)
        referral = await handlers.record_acknowledgement(
            commands.RecordAcknowledgement(
                current_principal(),
                region,
                referral_id,
                _destination(request.destination),
                _when(request, "acknowledge_time"),
                idempotency_of(request),
            ),
            self.deps,
        )
        return pb.RecordAcknowledgementResponse(referral=self._out(referral))

    async def RecordDecision(
        self, request: pb.RecordDecisionRequest, context: aio.ServicerContext
    ) -> pb.RecordDecisionResponse:
        region, referral_id = _ref(request.name)
        problems = Violations()
        kind = mapping.decision_kind_from_proto(request.kind)
        outcome = mapping.outcome_from_proto(request.outcome)
        if kind is None:
            problems.add("kind", "choose which decision this is")
        if outcome is None:
            problems.add("outcome", "choose positive or negative")
        problems.raise_if_any()
        assert kind is not None and outcome is not None
        referral = await handlers.record_decision(
            commands.RecordDecision(
                current_principal(),
                region,
                referral_id,
                _destination(request.destination),
                kind,
                outcome,
                request.detail,
                _when(request, "decision_time"),
                idempotency_of(request),
            ),
            self.deps,
        )
        return pb.RecordDecisionResponse(referral=self._out(referral))

    async def CloseReferral(
        self, request: pb.CloseReferralRequest, context: aio.ServicerContext
    ) -> pb.CloseReferralResponse:
        region, referral_id = _ref(request.name)
        referral = await handlers.close_referral(
            commands.Transition(
                current_principal(), region, referral_id, request.reason, idempotency_of(request)
            ),
            self.deps,
        )
        return pb.CloseReferralResponse(referral=self._out(referral))

    async def ListOverdue(
        self, request: pb.ListOverdueRequest, context: aio.ServicerContext
    ) -> pb.ListOverdueResponse:
        region = _parent(request.parent, allow_all=True)
        size = pagination.page_size(request.page_size)
        principal = current_principal()
        query_key = pagination.fingerprint(principal.subject, request.parent, size, "overdue")
        after = pagination.decode_after(request.page_token, query_key)
        rows, total, more = await handlers.list_overdue(
            commands.ListOverdue(principal, region, size, after), self.deps
        )
        now = self.deps.clock()
        response = pb.ListOverdueResponse(total_size=total)
        for row in rows:
            r = row.referral
            response.items.append(
                pb.OverdueItem(
                    referral=r.name,
                    region=r.region.to_proto(),  # type: ignore[arg-type]
                    clock=mapping.clock_to_proto(row.clock, now),
                    state=mapping.state_to_proto(r.state),  # type: ignore[arg-type]
                    risk_level=mapping.risk_to_proto(r.risk_level),  # type: ignore[arg-type]
                    concerns=[mapping.concern_to_proto(c) for c in r.concerns],  # type: ignore[misc]
                    linked_job=r.linked_job,
                )
            )
        if more and rows:
            last = rows[-1]
            assert last.clock.due_at is not None
            position = last.referral.clocks.index(last.clock)
            response.next_page_token = pagination.encode(
                last.clock.due_at.isoformat(), f"{last.referral.id}:{position}", query_key
            )
        return response


def _credentials(context: aio.ServicerContext) -> tuple[tuple[str, str], ...]:
    """The caller's authorization and purpose, passed on unread to ask tasking on their behalf."""
    return tuple(
        (key, value)
        for key, value in context.invocation_metadata() or ()
        if key in ("authorization", PURPOSE_METADATA_KEY) and isinstance(value, str)
    )
