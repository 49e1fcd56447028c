"""gRPC servicer: translate requests to commands, call the handler, translate back."""

from __future__ import annotations

from typing import Any

from grpc import aio
from toex.tasking.v1 import tasking_pb2 as pb
from toex.tasking.v1 import tasking_pb2_grpc
from toex_common import pagination
from toex_common.context import current_principal, current_principal_or_none
from toex_common.uow import idempotency_of
from toex_kernel import names
from toex_kernel.errors import InvalidArgument, Violations
from toex_kernel.timestamps import to_datetime

from toex_tasking.adapters import mapping
from toex_tasking.domain import commands
from toex_tasking.domain.model import JobChanges
from toex_tasking.service_layer import handlers


class TaskingServicer(tasking_pb2_grpc.TaskingServiceServicer):
    def __init__(self, deps: handlers.Deps) -> None:
        self.deps = deps

    def _job(self, job: object) -> pb.Job:
        return mapping.job_to_proto(job, now=self.deps.clock())  # type: ignore[arg-type]

    async def CreateJob(
        self, request: pb.CreateJobRequest, context: aio.ServicerContext
    ) -> pb.CreateJobResponse:
        parts = names.parse(request.parent, "regions/{region}", "parent")
        region = names.parse_region(parts["region"], "parent")
        assert region is not None
        job = request.job
        job_type = mapping.job_type_from_proto(job.job_type)
        if job_type is None:
            raise InvalidArgument.field("job.job_type", "choose a job type")
        if not job.HasField("due_time"):
            raise InvalidArgument.field("job.due_time", "set when the product is due")
        problems = Violations()
        collaborating = mapping.regions_from_proto(
            job.collaborating_regions, "job.collaborating_regions", problems
        ) + mapping.regions_from_proto(request.collaborating_regions, "collaborating_regions", problems)
        force = mapping.force_from_proto(job.requesting_force, "job.requesting_force", problems)
        threat = mapping.threat_from_proto(job.threat_category, "job.threat_category", problems)
        problems.raise_if_any()
        created = await handlers.create_job(
            commands.CreateJob(
                actor=current_principal(),
                region=region,
                requesting_unit=job.requesting_unit,
                requesting_officer=job.requesting_officer,
                operation_name=job.operation_name,
                job_type=job_type,
                priority=mapping.priority_from_proto(job.priority),
                due_at=to_datetime(job.due_time),
                description=job.description,
                handling=mapping.handling_from_proto(job.handling),
                subject_entity_ids=list(job.subject_entity_ids),
                idempotency=idempotency_of(request),
                collaborating_regions=collaborating,
                requesting_force=force,
                threat_category=threat,
            ),
            self.deps,
        )
        return pb.CreateJobResponse(job=self._job(created))

    async def GetJob(self, request: pb.GetJobRequest, context: aio.ServicerContext) -> pb.GetJobResponse:
        region, job_id = mapping.job_ref(request.name)
        job = await handlers.get_job(commands.GetJob(current_principal(), region, job_id), self.deps)
        return pb.GetJobResponse(job=self._job(job))

    async def ListJobs(
        self, request: pb.ListJobsRequest, context: aio.ServicerContext
    ) -> pb.ListJobsResponse:
        parts = names.parse(request.parent or "regions/-", "regions/{region}", "parent")
        region = names.parse_region(parts["region"], "parent", allow_all=True)
        states = frozenset(s for s in (mapping.state_from_proto(v) for v in request.states) if s is not None)
        due_before = to_datetime(request.due_before) if request.HasField("due_before") else None
        size = pagination.page_size(request.page_size)
        problems = Violations()
        force = mapping.force_from_proto(request.requesting_force, "requesting_force", problems)
        threat = mapping.threat_from_proto(request.threat_category, "threat_category", problems)
        problems.raise_if_any()
        principal = current_principal()
        query_key = pagination.fingerprint(
            principal.subject,
            request.parent,
            sorted(states),
            request.assignee,
            due_before,
            size,
            force,
            threat,
        )
        after = pagination.decode_after(request.page_token, query_key)
        jobs, more = await handlers.list_jobs(
            commands.ListJobs(
                principal, region, states, request.assignee.strip(), due_before, size, after, force, threat
            ),
            self.deps,
        )
        now = self.deps.clock()
        response = pb.ListJobsResponse(
            jobs=[mapping.job_to_proto(j, now=now, with_notes=False) for j in jobs]
        )
        if more and jobs:
            response.next_page_token = pagination.encode(
                jobs[-1].created_at.isoformat(), jobs[-1].id, query_key
            )
        return response

    async def UpdateJob(
        self, request: pb.UpdateJobRequest, context: aio.ServicerContext
    ) -> pb.UpdateJobResponse:
        region, job_id = mapping.job_ref(request.job.name, "job.name")
        changes = job_changes(request)
        job = await handlers.update_job(
            commands.UpdateJob(current_principal(), region, job_id, changes, idempotency_of(request)),
            self.deps,
        )
        return pb.UpdateJobResponse(job=self._job(job))

    async def AssignJob(
        self, request: pb.AssignJobRequest, context: aio.ServicerContext
    ) -> pb.AssignJobResponse:
        region, job_id = mapping.job_ref(request.name)
        job = await handlers.assign_job(
            commands.AssignJob(
                current_principal(), region, job_id, list(request.assignees), idempotency_of(request)
            ),
            self.deps,
        )
        return pb.AssignJobResponse(job=self._job(job))

    async def ReassignJob(
        self, request: pb.ReassignJobRequest, context: aio.ServicerContext
    ) -> pb.ReassignJobResponse:
        region, job_id = mapping.job_ref(request.name)
        job = await handlers.reassign_job(
            commands.ReassignJob(
                current_principal(), region, job_id, request.assignee, request.reason, idempotency_of(request)
            ),
            self.deps,
        )
        return pb.ReassignJobResponse(job=self._job(job))

    async def UpdateJobStatus(
        self, request: pb.UpdateJobStatusRequest, context: aio.ServicerContext
    ) -> pb.UpdateJobStatusResponse:
        region, job_id = mapping.job_ref(request.name)
        state = mapping.state_from_proto(request.state)
        if state is None:
            raise InvalidArgument.field("state", "choose the state to move to")
        job = await handlers.update_job_status(
            commands.UpdateJobStatus(
                current_principal(),
                region,
                job_id,
                state,
                request.reason,
                request.product,
                idempotency_of(request),
            ),
            self.deps,
        )
        response = pb.UpdateJobStatusResponse(job=self._job(job))
        if job.issued_feedback_token and job.feedback_token_expires_at is not None:
            response.feedback_token = job.issued_feedback_token
            response.feedback_token_expire_time.FromDatetime(job.feedback_token_expires_at)
        return response

    async def AddJobNote(
        self, request: pb.AddJobNoteRequest, context: aio.ServicerContext
    ) -> pb.AddJobNoteResponse:
        region, job_id = mapping.job_ref(request.parent, "parent")
        job, note_id = await handlers.add_job_note(
            commands.AddJobNote(current_principal(), region, job_id, request.text, idempotency_of(request)),
            self.deps,
        )
        note = next(n for n in job.notes if n.id == note_id)
        return pb.AddJobNoteResponse(note=mapping.note_to_proto(job, note))

    async def RecordFeedback(
        self, request: pb.RecordFeedbackRequest, context: aio.ServicerContext
    ) -> pb.RecordFeedbackResponse:
        region, job_id = mapping.job_ref(request.name)
        # Without a bearer token (toex_kernel.policy.TOKEN_CREDENTIAL_METHODS) there is no
        # principal: the one-time token in the request is the credential.
        principal = current_principal_or_none()
        job = await handlers.record_feedback(
            commands.RecordFeedback(
                principal,
                region,
                job_id,
                request.rating,
                request.comment,
                idempotency_of(request) if principal else None,
                token=request.token,
                officer_name=request.officer_name,
            ),
            self.deps,
        )
        if principal is None:
            # The officer holds no account: nothing of the job but its name.
            return pb.RecordFeedbackResponse(name=job.name)
        return pb.RecordFeedbackResponse(job=self._job(job), name=job.name)

    async def GetRegionCapacity(
        self, request: pb.GetRegionCapacityRequest, context: aio.ServicerContext
    ) -> pb.GetRegionCapacityResponse:
        parts = names.parse(request.name, "regions/{region}/capacity", "name")
        region = names.parse_region(parts["region"], "name")
        assert region is not None
        counts, unassigned, open_jobs = await handlers.get_region_capacity(
            commands.GetRegionCapacity(current_principal(), region), self.deps
        )
        return pb.GetRegionCapacityResponse(
            name=request.name,
            researchers=[
                pb.ResearcherLoad(
                    username=c.username,
                    region=c.region.to_proto(),  # type: ignore[arg-type]
                    open_jobs=c.open_jobs,
                    overdue_jobs=c.overdue_jobs,
                )
                for c in counts
            ],
            unassigned_jobs=unassigned,
            open_jobs=open_jobs,
        )


# What UpdateJob may change, by the update mask's paths (fields of Job).
UPDATABLE = (
    "due_time",
    "priority",
    "subject_entity_ids",
    "description",
    "collaborating_regions",
    "requesting_force",
    "threat_category",
)


def job_changes(request: pb.UpdateJobRequest) -> JobChanges:
    """The changes an UpdateJob request asks for: the fields its mask names, with their values."""
    paths = list(request.update_mask.paths)
    problems = Violations()
    if not paths:
        problems.add("update_mask", f"name the fields to change: {', '.join(UPDATABLE)}")
    for path in paths:
        if path not in UPDATABLE:
            problems.add("update_mask", f"{path} cannot be changed; changeable: {', '.join(UPDATABLE)}")
    job = request.job
    values: dict[str, Any] = {}
    if "due_time" in paths:
        if job.HasField("due_time"):
            values["due_at"] = to_datetime(job.due_time)
        else:
            problems.add("job.due_time", "set the new due time")
    if "priority" in paths:
        if job.priority == pb.PRIORITY_UNSPECIFIED:
            problems.add("job.priority", "choose a priority")
        else:
            values["priority"] = mapping.priority_from_proto(job.priority)
    if "subject_entity_ids" in paths:
        values["subject_entity_ids"] = list(job.subject_entity_ids)
    if "description" in paths:
        values["description"] = job.description
    if "collaborating_regions" in paths:
        values["collaborating_regions"] = mapping.regions_from_proto(
            job.collaborating_regions, "job.collaborating_regions", problems
        )
    if "requesting_force" in paths:
        if job.requesting_force == 0:
            problems.add("job.requesting_force", "choose a force")
        else:
            values["requesting_force"] = mapping.force_from_proto(
                job.requesting_force, "job.requesting_force", problems
            )
    if "threat_category" in paths:
        if job.threat_category == 0:
            problems.add("job.threat_category", "choose a threat category")
        else:
            values["threat_category"] = mapping.threat_from_proto(
                job.threat_category, "job.threat_category", problems
            )
    problems.raise_if_any()
    return JobChanges(**values)
