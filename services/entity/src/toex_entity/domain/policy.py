"""Who may do what with records and entities: the entity service's one policy module.

- Records belong to one region. A caller sees the records of their own region; the national
  team and the hub's service identity see every region; a region installation's service
  identity sees that region only.
- An entity is visible when at least one of its records is; the caller sees only those
  records. Deconfliction rule: a caller who sees an entity is told which other regions hold
  records on it that they may not see, and whom to contact there, never what those records say.
- Records are submitted by researchers, analysts, supervisors, the national team and
  service accounts, into their own region (the national team and the hub's services: any
  region).
- Review, merge and split change what everybody sees, so they need a caller who may see
  every record involved: a reviewer of the region for a pair within it, the national team
  for pairs and entities that span regions.

Work under a job grant (toex_kernel.grants). A job's material here: the source records
resolved under job J of region R (submitted to R by ResolveRecord or IngestRecords with J as the
call's purpose, by anyone who may submit there; the record keeps J for good, a re-sent record
keeps the job it was first stored with), and the entities touched under J (an entity holding at
least one of J's records, or named as a subject of J when tasking raised it). Someone of another
region whose role allows the call, who holds J (one of its assignees, while J is open) and
states J as the call's purpose may:
- resolve records into R (ResolveRecord, IngestRecords under `regions/R`): stored as R's
  records, attached to J, resolved against everything as R's own are (a link or a merge the
  resolver decides is the resolver's, as for anyone). A record whose source id R already holds
  outside J is refused (`<R> holds ... ask <contact>`), never re-sent over R's record;
- read an entity touched under J (GetEntity, and the entity in the answers below) with J's
  records of it only: names, identifiers and explanations come from the records they may see
  (their own region's and J's), its history says what happened and when but not who decided,
  why or which other entities (as any partial view); other regions, R included when it holds
  records outside J, are named with whom to contact, as deconfliction names them to anyone;
- search (SearchEntities): matched against the records they may see only, so only entities
  touched under J (and their own region's) are found;
- compare records they may see, J's and their own region's (ExplainMatch);
- list R's review tasks both of whose records are J's (ListReviewTasks of `regions/R`), and
  decide them as R's researchers may (DecideReview); confirming merges the two records'
  entities, so it is allowed only when every record of both entities is J's;
- merge and split (MergeEntities, SplitEntity; analysts and supervisors only, as for anyone)
  entities every record of which is J's: all records of every entity named, since a merge moves
  them all and a split or undone merge moves records out of it.
They may not reach R's records outside J nor any entity not touched under J: those calls answer
exactly as for another region's material (not found; refused for a submission or a listing),
and a change that would move any record outside J is refused.

A supervisor of a region collaborating on J (named on the job, `JobGrant.collaborators`;
`covered_for_reading`), with J as the call's purpose while J is open, reads as a holder does:
entities touched under J with J's records only (GetEntity), searches (SearchEntities) and
compares (ExplainMatch) the records they may see. They change nothing: resolving or ingesting
into R is refused as for anyone of another region, R's review tasks are neither listed nor
decided for them (a listing is refused, a decision answers not found), and a merge or split of
an entity they may read is refused (`your region collaborates on job J ...`), not found
otherwise. Other roles of a collaborating region reach nothing under J.

A grant never gives a role, and callers who see the region are decided as before, without
reading grants.
"""

from __future__ import annotations

from collections.abc import Iterable

from toex_kernel.errors import PermissionDenied
from toex_kernel.grants import JobGrant, covered, covered_for_reading, job_of_purpose
from toex_kernel.installation import Served, served_for
from toex_kernel.policy import MethodRule, rules_for, sees_region
from toex_kernel.principal import Principal, Role
from toex_kernel.regions import Region

from toex_entity.domain.records import SourceRecord

SERVICE = "toex.entity.v1.EntityResolutionService"

RES, ANA, SUP, NC = Role.RESEARCHER, Role.ANALYST, Role.SUPERVISOR, Role.NATIONAL_COORDINATOR
SAFE, SVC = Role.SAFEGUARDING_OFFICER, Role.SERVICE

METHOD_RULES = rules_for(
    SERVICE,
    {
        "ResolveRecord": MethodRule.write(RES, ANA, SUP, NC, SVC, purpose_required=True),
        "IngestRecords": MethodRule.write(RES, ANA, SUP, NC, SVC),
        "GetEntity": MethodRule.read(RES, ANA, SUP, NC, SAFE, SVC),
        "SearchEntities": MethodRule.read(RES, ANA, SUP, NC, SAFE, SVC),
        "ExplainMatch": MethodRule.read(RES, ANA, SUP, NC, SVC),
        "ListReviewTasks": MethodRule.read(RES, ANA, SUP, NC),
        "DecideReview": MethodRule.write(RES, ANA, SUP, NC, purpose_required=True),
        "MergeEntities": MethodRule.write(ANA, SUP, NC, purpose_required=True),
        "SplitEntity": MethodRule.write(ANA, SUP, NC, purpose_required=True),
        # Reads every relation of a region: its analysts and supervisors, the national team.
        "AnalyseMules": MethodRule.read(ANA, SUP, NC, purpose_required=True),
        "RecordRelation": MethodRule.write(RES, ANA, SUP, NC, SVC, purpose_required=True),
        # No personal data: counts and model versions.
        "GetLearningStatus": MethodRule.read(RES, ANA, SUP, NC, SVC, purpose_required=False),
        # As GetEntity: every node is one GetEntity would show the caller.
        "GetNeighbourhood": MethodRule.read(RES, ANA, SUP, NC, SAFE, SVC),
    },
)

# Where each request names the region of the records it reaches: an installation stores and
# serves only its own region's records (toex_kernel.installation). Entities (`entities/{id}`)
# carry no region: an installation finds only those it holds.
_HELD = "entities are named without a region; an installation reaches only those it holds"
SERVED = served_for(
    SERVICE,
    {
        "ResolveRecord": Served.by("parent"),
        "IngestRecords": Served.by("parent"),
        "GetEntity": Served.nowhere(_HELD),
        "SearchEntities": Served.nowhere(_HELD),
        "ExplainMatch": Served.by("record_a", "record_b"),
        "ListReviewTasks": Served.listing_of("parent"),
        "DecideReview": Served.by("name"),
        "MergeEntities": Served.nowhere(_HELD),
        "SplitEntity": Served.by("records"),
        "AnalyseMules": Served.by("parent"),
        "RecordRelation": Served.by("parent"),
        "GetLearningStatus": Served.nowhere("the installation's own model"),
        "GetNeighbourhood": Served.nowhere(_HELD),
    },
)


def sees_all(principal: Principal) -> bool:
    # The national team and the hub's service identity (region NATIONAL); a region
    # installation's service identity sees its own region, as its people do.
    return principal.national


def sees(principal: Principal, region: Region) -> bool:
    return sees_all(principal) or sees_region(principal, region)


# --- job grants -------------------------------------------------------------------------


def grant_job(principal: Principal, purpose: str, regions: Iterable[Region] | None) -> str:
    """The job whose grant could change the answer ("" if none): the purpose names a job of a
    region the caller does not see, one of `regions` (those holding what the call reaches;
    None: any, for an entity, which a job may name as its subject whoever holds its records).
    Only then is a grant read, so callers who see the region pay nothing for grants."""
    job = job_of_purpose(purpose)
    if not job:
        return ""
    region = Region(job.split("/", 2)[1])
    if sees(principal, region) or (regions is not None and region not in set(regions)):
        return ""
    return job


def sees_record(principal: Principal, record: SourceRecord, grant: JobGrant | None = None) -> bool:
    """The caller's region scope, or the record is the job's under a grant they may read it
    under: they hold the job, or supervise a region collaborating on it."""
    return sees(principal, record.region) or covered_for_reading(grant, principal, record.region, record.job)


def works_record(principal: Principal, record: SourceRecord, grant: JobGrant | None = None) -> bool:
    """The caller's region scope, or the record is the job's under a grant they hold (what a
    collaborating region's supervisor reads is not theirs to change)."""
    return sees(principal, record.region) or covered(grant, principal, record.region, record.job)


def reads_under(principal: Principal, grant: JobGrant | None) -> bool:
    """The caller may read the open job's material under the grant: a holder, or a supervisor
    of a region collaborating on it."""
    return grant is not None and grant.admits_reader(principal)


def sees_as_subject(principal: Principal, grant: JobGrant | None, named: bool) -> bool:
    """An entity named as a subject of the grant's job (`named`) is touched under it: whoever
    reads under the grant may read it, with none of the region's records but the job's."""
    return named and reads_under(principal, grant)


def works_under(principal: Principal, region: Region, grant: JobGrant | None) -> bool:
    """The caller holds the grant's open job, which is of `region`."""
    return grant is not None and grant.covers(principal, region, grant.job)


# --- rules ------------------------------------------------------------------------------


def ensure_can_submit(principal: Principal, region: Region, grant: JobGrant | None = None) -> None:
    if sees(principal, region) or works_under(principal, region, grant):
        return
    raise PermissionDenied(f"you may submit records to {principal.region.value} only")


def held_outside_job(stored: SourceRecord, grant: JobGrant | None, contact: str) -> str:
    """Why a record re-sent by someone who may not see the stored one (under a grant, one outside
    the job) is refused: a re-sent record is returned, or updated when its content changed, so
    it would reach the stored one. Names only what the caller sent, and whom to ask."""
    return (
        f"{stored.region.value} already holds source record {stored.source_system}/"
        f"{stored.source_record_id}" + (f" outside job {grant.job}" if grant else "") + f"; ask {contact}"
    )


def may_decide(principal: Principal, a: SourceRecord, b: SourceRecord, grant: JobGrant | None) -> bool:
    """A review decision: the caller sees both records' regions, or both are the job's under a
    grant they hold (not their own region's record paired with one of the job's: that pair spans
    regions, which the national team decides)."""
    if sees(principal, a.region) and sees(principal, b.region):
        return True
    return covered(grant, principal, a.region, a.job) and covered(grant, principal, b.region, b.job)


def ensure_sees_every(principal: Principal, regions: Iterable[Region], what: str) -> None:
    hidden = sorted({r.value for r in regions if not sees(principal, r)})
    if hidden:
        raise PermissionDenied(
            f"{what} involves records of {', '.join(hidden)}, which you may not see; "
            "ask a national coordinator"
        )


def ensure_may_change(
    principal: Principal, records: Iterable[SourceRecord], what: str, grant: JobGrant | None = None
) -> None:
    """Merge, split and review confirmations move records between entities: the caller must see
    every record involved, or, under a grant, every one must be the job's."""
    involved = list(records)
    if all(sees(principal, r.region) for r in involved):
        return
    if grant is not None and grant.admits(principal):
        if all(covered(grant, principal, r.region, r.job) for r in involved):
            return
        raise PermissionDenied(
            f"{what} involves records outside job {grant.job}; under the job you may change only "
            f"what is all the job's: ask {contact_role(grant.region)}"
        )
    if grant is not None and grant.admits_reader(principal):
        raise PermissionDenied(
            f"your region collaborates on job {grant.job}: you may read its material here, not "
            f"change it; ask {contact_role(grant.region)}"
        )
    ensure_sees_every(principal, (r.region for r in involved), what)


def review_regions(principal: Principal, requested: Region | None) -> frozenset[Region] | None:
    """Regions whose review tasks the caller may list (None: all)."""
    if sees_all(principal):
        return frozenset({requested}) if requested else None
    if requested is not None and requested is not principal.region:
        raise PermissionDenied(f"you may list review tasks of {principal.region.value} only")
    return frozenset({principal.region})


def review_listing(
    principal: Principal, requested: Region | None, grant: JobGrant | None = None
) -> tuple[frozenset[Region] | None, str]:
    """The regions whose review tasks a listing shows (None: all) and the job both records of
    each must be attached to ("": any): a holder of `grant` listing the grant's region sees the
    tasks of the job's records alone."""
    if (
        requested is not None
        and grant is not None
        and not sees(principal, requested)
        and works_under(principal, requested, grant)
    ):
        return frozenset({requested}), grant.job
    return review_regions(principal, requested), ""


def contact_role(region: Region) -> str:
    """Whom another region should contact about a deconfliction."""
    if region is Region.NATIONAL:
        return "National coordination team: duty national coordinator"
    return f"{region.value} ROCU: intelligence supervisor (deconfliction)"
