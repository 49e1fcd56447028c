"""RecordRelation: a relation as one source record says it, checked and stored once."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import date, datetime

from toex_kernel.errors import InvalidArgument, OutOfScope, Violations
from toex_kernel.principal import Principal
from toex_kernel.regions import Region

from toex_entity.domain import accounts, normalise, policy
from toex_entity.domain.events import RelationRecorded
from toex_entity.domain.records import Grading
from toex_entity.domain.relations import Relation, RelationKind, address_key
from toex_entity.service_layer.ports import EntityUnitOfWork

# Targets that are keys, not entities.
_KEYED = {RelationKind.HOLDS_ACCOUNT, RelationKind.LIVES_AT}


@dataclass(frozen=True)
class RelationInput:
    region: Region
    kind: RelationKind | None
    subject: str
    target: str  # an entity id, for the kinds whose target is an entity
    source_system: str
    source_record_id: str
    grading: Grading
    valid_from: str = ""
    valid_to: str = ""
    sort_code: str = ""
    account_number: str = ""
    iban: str = ""
    postcode: str = ""
    premises: str = ""


@dataclass(frozen=True)
class Recorded:
    relation: Relation
    created: bool
    account_checked: bool


def _day(text: str, field: str, problems: Violations) -> date | None:
    if not text:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        problems.add(field, "a date as YYYY-MM-DD")
        return None


def build(item: RelationInput, table: tuple[accounts.WeightRow, ...] = ()) -> tuple[Relation, bool]:
    """The relation in normal form (and whether an account's modulus check could be made);
    InvalidArgument names every bad field."""
    problems = Violations()
    if item.kind is None:
        problems.add("relation.kind", "say what the relation is")
    target, checked = item.target, False
    if item.kind == RelationKind.HOLDS_ACCOUNT:
        try:
            if item.iban:
                account = accounts.iban_account(item.iban, table)
            else:
                account = accounts.uk_account(item.sort_code, item.account_number, table)
                checked = accounts.modulus_check(account.sort_code, account.account_number, table).checked
            target = account.key
        except InvalidArgument as exc:
            for v in exc.violations:
                problems.add(f"relation.account.{v.field}", v.description)
    elif item.kind == RelationKind.LIVES_AT:
        try:
            target = address_key(item.postcode, item.premises)
        except normalise.NormaliseError as exc:
            problems.add("relation.address", str(exc))
    elif not item.target:
        problems.add("relation.target", "the entity at the other end (entities/{id})")
    valid_from = _day(item.valid_from, "relation.valid_from", problems)
    valid_to = _day(item.valid_to, "relation.valid_to", problems)
    problems.raise_if_any()
    assert item.kind is not None
    relation = Relation(
        item.region.value,
        item.kind,
        item.subject,
        target,
        item.source_system.strip(),
        item.source_record_id.strip(),
        item.grading,
        valid_from,
        valid_to,
    )
    try:
        relation.validate()
    except InvalidArgument as exc:
        raise InvalidArgument(
            exc.message, [replace(v, field=f"relation.{v.field}") for v in exc.violations]
        ) from None
    return relation, checked


async def record_relation(
    principal: Principal,
    item: RelationInput,
    uow: Callable[[], EntityUnitOfWork],
    now: datetime,
    table: tuple[accounts.WeightRow, ...] = (),
) -> Recorded:
    """Whoever may submit records to the region (its own people, the national team); both
    entities must hold records of the region, or the answer is NOT_FOUND as for a missing one."""
    policy.ensure_can_submit(principal, item.region)
    relation, checked = build(item, table)
    entities = [relation.subject] + ([] if relation.kind in _KEYED else [relation.target])
    async with uow() as work:
        held = await work.repo.regions_of(entities)
        for entity_id in entities:
            if item.region not in held.get(entity_id, set()):
                raise OutOfScope(f"entities/{entity_id} not found")
        created = await work.relations.add_relations([relation], principal.username, now) == 1
        if created:
            work.record(RelationRecorded(relation))
        await work.commit()
    return Recorded(relation, created, checked)
