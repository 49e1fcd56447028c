"""In-memory fake of the federation repository (deconfliction across installations)."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime

from toex_entity.domain.fingerprints import KIND_RECORD_TYPE
from toex_entity.domain.model import EntityState
from toex_entity.domain.records import RecordType
from toex_kernel.regions import Region

from .fakes import FakeRepository, FakeUnitOfWork


class FakeFederation:
    def __init__(self, repo: FakeRepository) -> None:
        self.repo = repo
        self.published: dict[tuple[str, str], str] = {}  # (identifier, key id) -> ref
        self.holders: dict[tuple[str, Region], str] = {}  # (identifier, other) -> contact
        self.hub: dict[tuple[str, bytes, Region], str] = {}  # (key id, digest, region) -> ref

    async def claim_identifiers(
        self, key_id: str, identifiers: Sequence[str], at: datetime
    ) -> list[tuple[str, str]]:
        fresh = []
        for identifier in identifiers:
            if (identifier, key_id) not in self.published:
                self.published[(identifier, key_id)] = uuid.uuid4().hex
                fresh.append((identifier, self.published[(identifier, key_id)]))
        return sorted(fresh)

    async def unpublished_identifiers(self, key_id: str, limit: int) -> list[str]:
        kinds = tuple(f"{k}:" for k in KIND_RECORD_TYPE)
        keys = sorted(k for k in self.repo.keys if k.startswith(kinds) and (k, key_id) not in self.published)
        return keys[:limit]

    async def identifier_of_ref(self, ref: str) -> str | None:
        return next((i for (i, _), r in self.published.items() if r == ref), None)

    async def add_remote_holder(
        self, identifier: str, other: Region, contact_role: str, at: datetime
    ) -> bool:
        if (identifier, other) in self.holders:
            return False
        self.holders[(identifier, other)] = contact_role
        return True

    async def remote_holders(self, identifiers: Sequence[str]) -> dict[str, list[tuple[Region, str]]]:
        found: dict[str, list[tuple[Region, str]]] = defaultdict(list)
        for (identifier, other), contact in sorted(self.holders.items()):
            if identifier in identifiers:
                found[identifier].append((other, contact))
        return dict(found)

    async def entities_with(self, identifier: str) -> list[tuple[str, RecordType]]:
        records = [self.repo.records[r] for r in self.repo.keys.get(identifier, ())]
        entities = {
            r.entity_id: self.repo.entities[r.entity_id] for r in records if r.entity_id in self.repo.entities
        }
        return sorted((e.id, e.entity_type) for e in entities.values() if e.state is EntityState.ACTIVE)

    async def add_sightings(
        self, region: Region, key_id: str, fingerprints: Sequence[tuple[bytes, str]], at: datetime
    ) -> list[tuple[bytes, str]]:
        fresh = []
        for digest, ref in dict(fingerprints).items():
            if self.hub.get((key_id, digest, region)) != ref:
                self.hub[(key_id, digest, region)] = ref
                fresh.append((digest, ref))
        return sorted(fresh)

    async def sightings(self, key_id: str, digests: Sequence[bytes]) -> dict[bytes, list[tuple[Region, str]]]:
        found: dict[bytes, list[tuple[Region, str]]] = defaultdict(list)
        for (k, digest, region), ref in sorted(self.hub.items(), key=lambda i: (i[0][1], i[0][2].value)):
            if k == key_id and digest in digests:
                found[digest].append((region, ref))
        return dict(found)


class FederatedUnitOfWork(FakeUnitOfWork):
    def __init__(self, repo: FakeRepository) -> None:
        super().__init__(repo)
        self.federation = FakeFederation(repo)
        self.matching_locks = 0

    async def lock_matching(self) -> None:
        self.matching_locks += 1
