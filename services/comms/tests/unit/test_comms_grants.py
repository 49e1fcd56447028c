"""Work under a job grant, through the handlers and their fakes: a holder of an open job of
EMSOU reaches the job's comms material with the job as the call's purpose, and nothing else of
EMSOU; everyone else is answered as for another region's material; EMSOU's own people are
decided as before, without a grant lookup."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import timedelta

import polars as pl
import pytest
from toex_common.testing.fakes import FakeGrants, principal
from toex_comms.domain import commands
from toex_comms.domain.commands import ExportFormat, Scope
from toex_comms.domain.model import DatasetKind, WatchlistKind
from toex_comms.service_layer import handlers
from toex_kernel.errors import OutOfScope
from toex_kernel.grants import JobGrant
from toex_kernel.principal import Principal, Role
from toex_kernel.regions import Region

from .fakes import FakeCommsUnitOfWork, FakeDatasetStore, FakeExporter, advert_rows
from .test_handlers import NOW, calls, import_cdr

J = "regions/EMSOU/jobs/j1"
K = "regions/EMSOU/jobs/k2"
OWNER = principal("researcher.emsou", Role.RESEARCHER)
LONDON = principal("researcher.london", Role.RESEARCHER)
ERSOU = principal("researcher.ersou", Role.RESEARCHER)
NC = principal("national_coordinator.national", Role.NATIONAL_COORDINATOR)
T1, T2, SHARED, OTHER, SECRET = 447700900001, 447700900002, 447700900100, 447700900200, 447700900666


class CountingGrants(FakeGrants):
    """FakeGrants that counts its lookups: the region's own people must cause none."""

    def __init__(self) -> None:
        super().__init__()
        self.lookups = 0

    async def of_job(self, job: str) -> JobGrant | None:
        self.lookups += 1
        return await super().of_job(job)

    async def for_purpose(self, purpose: str) -> JobGrant | None:
        self.lookups += 1
        return await super().for_purpose(purpose)


@dataclass
class Emsou:
    """EMSOU's material: a CDR dataset of job J, one of job K, one of no job."""

    uow: FakeCommsUnitOfWork
    store: FakeDatasetStore
    deps: handlers.Deps
    grants: CountingGrants
    job_cdr: str
    other_cdr: str
    loose_cdr: str


def importing(
    actor: Principal, data: bytes, *, job: str = "", purpose: str = "", kind: DatasetKind = DatasetKind.CDR
) -> commands.ImportFile:
    return dataclasses.replace(import_cdr(actor=actor, data=data, job=job), kind=kind, purpose=purpose)


def adverts(*numbers: int) -> pl.DataFrame:
    """Three adverts in Leeds for each number."""
    rows = [
        (n, f"ad-{n}-{i}", "site", NOW - timedelta(hours=i), "Leeds", "", k * 3 + i)
        for k, n in enumerate(numbers)
        for i in range(3)
    ]
    return advert_rows(rows)


@pytest.fixture
async def emsou() -> Emsou:
    uow = FakeCommsUnitOfWork()
    grants = CountingGrants()
    uow.grants = grants
    store = FakeDatasetStore()
    deps = handlers.Deps(uow=lambda: uow, store=store, exporter=FakeExporter(), clock=lambda: NOW)  # type: ignore[arg-type,return-value]
    # EMSOU's watchlists: T1 a registered sex offender; SHARED and SECRET victims.
    for list_id, kind, number in (
        ("rso", WatchlistKind.REGISTERED_SEX_OFFENDER, T1),
        ("victims", WatchlistKind.VICTIM, SHARED),
        ("victims", WatchlistKind.VICTIM, SECRET),
    ):
        if not uow.repo.watchlists.get((Region.EMSOU, list_id)):
            await handlers.create_watchlist(
                commands.CreateWatchlist(OWNER, Region.EMSOU, list_id, "", kind), deps
            )
        await handlers.add_watchlist_numbers(
            commands.AddWatchlistNumbers(OWNER, Region.EMSOU, list_id, [f"+{number}"]), deps
        )
    job = store.readable(b"job calls", calls((T1, SHARED), (T2, SHARED), (SHARED, T2)))
    other = store.readable(b"other calls", calls((T1, OTHER), (T2, OTHER), (T1, SECRET)))
    loose = store.readable(b"loose calls", calls((T1, OTHER)))
    job_cdr = (await handlers.import_file(importing(OWNER, job, job=J), deps)).dataset.id
    other_cdr = (await handlers.import_file(importing(OWNER, other, job=K), deps)).dataset.id
    loose_cdr = (await handlers.import_file(importing(OWNER, loose), deps)).dataset.id
    # EMSOU knows whose SHARED and SECRET are.
    for number in (SHARED, SECRET):
        await handlers.attribute(
            commands.AttributeIdentifier(OWNER, Region.EMSOU, f"+{number}", False, f"ent-{number}", "known"),
            deps,
        )
    grants.grant(J, "researcher.london")
    grants.lookups = 0
    return Emsou(uow, store, deps, grants, job_cdr, other_cdr, loose_cdr)


def name(dataset_id: str) -> str:
    return f"regions/EMSOU/datasets/{dataset_id}"


def common(
    actor: Principal, purpose: str, dataset_ids: tuple[str, ...] = (), job: str = ""
) -> commands.FindCommonContacts:
    return commands.FindCommonContacts(
        Scope(actor, Region.EMSOU, dataset_ids, job, purpose=purpose), [T1, T2], 2, False, 10
    )


# ---------------------------------------------------------------- what a holder may do


async def test_a_holder_imports_into_the_jobs_region_attached_to_the_job(emsou: Emsou) -> None:
    data = emsou.store.readable(b"london calls", calls((T1, SHARED)))

    out = await handlers.import_file(importing(LONDON, data, job=J, purpose="EMSOU/j1"), emsou.deps)

    stored = emsou.uow.repo.datasets[out.dataset.id]
    assert (stored.region, stored.job, stored.created_by) == (Region.EMSOU, J, "researcher.london")
    assert out.dataset.name.startswith("regions/EMSOU/datasets/")
    # Checked against EMSOU's watchlists like any import: the finding is about the job's data.
    [contact] = [c for c in emsou.uow.repo.contacts.values() if c.dataset_id == out.dataset.id]
    assert (contact.number_a, contact.number_b) == (T1, SHARED)


async def test_a_holder_reads_lists_and_analyses_the_jobs_datasets_only(emsou: Emsou) -> None:
    deps = emsou.deps
    got = await handlers.get_dataset(commands.GetDataset(LONDON, Region.EMSOU, emsou.job_cdr, J), deps)
    assert got.job == J
    listed, more = await handlers.list_datasets(
        commands.ListDatasets(LONDON, Region.EMSOU, "", None, 50, None, J), deps
    )
    assert [d.id for d in listed] == [emsou.job_cdr] and not more
    # Every dataset of the scope is the job's: OTHER, common to T1 and T2 in job K's data, is not found.
    out = await handlers.find_common_contacts(common(LONDON, J), deps)
    assert [c.number for c in out.found] == [SHARED]
    named = await handlers.find_common_contacts(common(LONDON, J, (emsou.job_cdr,)), deps)
    assert [c.number for c in named.found] == [SHARED]
    owners = await handlers.find_common_contacts(common(OWNER, "Op Kestrel"), deps)
    assert {c.number for c in owners.found} == {SHARED, OTHER}
    page, _ = await handlers.list_phone_index(
        commands.ListPhoneIndex(Scope(LONDON, Region.EMSOU, (), "", purpose=J), 0, 100), deps
    )
    assert {r["number"] for r in page} == {T1, T2, SHARED}
    await handlers.export(
        commands.Export(Scope(LONDON, Region.EMSOU, (), J, purpose=J), ExportFormat.INDEX_CSV, [], 1), deps
    )
    [(_, _, table)] = deps.exporter.written  # type: ignore[attr-defined]
    assert {row[0] for row in table} == {f"+{T1}", f"+{T2}", f"+{SHARED}"}


# ---------------------------------------------------------------- what a holder may not do


async def test_the_regions_other_material_is_refused_to_a_holder_as_if_missing(emsou: Emsou) -> None:
    deps = emsou.deps
    for dataset_id in (emsou.other_cdr, emsou.loose_cdr):
        with pytest.raises(OutOfScope) as refused:
            await handlers.get_dataset(commands.GetDataset(LONDON, Region.EMSOU, dataset_id, J), deps)
        assert refused.value.message == f"dataset {name(dataset_id)} not found"
    # An analysis is allowed only if every dataset in it is the job's.
    for chosen in ((emsou.other_cdr,), (emsou.job_cdr, emsou.loose_cdr)):
        with pytest.raises(OutOfScope):
            await handlers.find_common_contacts(common(LONDON, J, chosen), deps)
    with pytest.raises(OutOfScope):
        await handlers.find_common_contacts(common(LONDON, J, job=K), deps)
    with pytest.raises(OutOfScope):
        await handlers.find_convoys(
            commands.FindConvoys(Scope(LONDON, Region.EMSOU, (), K, purpose=J), 180, 3, [], 10), deps
        )
    # A list over the region under the grant holds the job's material only.
    listed, _ = await handlers.list_datasets(
        commands.ListDatasets(LONDON, Region.EMSOU, K, None, 50, None, J), deps
    )
    assert listed == []
    # New material under the grant is the job's: not another job's, not the region's.
    data = emsou.store.readable(b"london calls", calls((T1, SHARED)))
    for job in (K, ""):
        with pytest.raises(OutOfScope) as refused:
            await handlers.import_file(importing(LONDON, data, job=job, purpose=J), deps)
        assert refused.value.message == "regions/EMSOU not found"
    assert {d.job for d in emsou.uow.repo.datasets.values()} == {J, K, ""}
    assert len(emsou.uow.repo.datasets) == 3


async def test_a_holder_never_touches_the_regions_watchlists_attributions_or_profiles(emsou: Emsou) -> None:
    deps = emsou.deps
    refused = [
        handlers.list_watchlists(commands.ListWatchlists(LONDON, Region.EMSOU), deps),
        handlers.create_watchlist(
            commands.CreateWatchlist(LONDON, Region.EMSOU, "mine", "", WatchlistKind.SUSPECT), deps
        ),
        handlers.add_watchlist_numbers(
            commands.AddWatchlistNumbers(LONDON, Region.EMSOU, "rso", [f"+{T2}"]), deps
        ),
        handlers.attribute(
            commands.AttributeIdentifier(LONDON, Region.EMSOU, f"+{T2}", False, "ent-x", ""), deps
        ),
    ]
    for call in refused:
        with pytest.raises(OutOfScope):
            await call
    assert emsou.uow.repo.watchlists[(Region.EMSOU, "rso")].numbers == [T1]
    assert emsou.uow.repo.attributions_in(Region.EMSOU, f"+{T2}") == []


async def test_a_holder_sees_watchlist_findings_about_the_jobs_data_and_no_attributions(
    emsou: Emsou,
) -> None:
    deps = emsou.deps
    # Contacts found in the job's data; not the one in job K's data (T1 with SECRET).
    contacts = await handlers.list_watchlist_contacts(
        commands.ListWatchlistContacts(LONDON, Region.EMSOU, 100, J), deps
    )
    assert [(c.dataset_id, c.number_b) for c in contacts] == [(emsou.job_cdr, SHARED)]
    owners = await handlers.list_watchlist_contacts(
        commands.ListWatchlistContacts(OWNER, Region.EMSOU, 100, "Op Kestrel"), deps
    )
    assert {c.dataset_id for c in owners} == {emsou.job_cdr, emsou.other_cdr}
    # Analyses label the job's numbers with the lists holding them, not with EMSOU's attributions.
    suspects = await handlers.rank_suspects(
        commands.RankSuspects(Scope(LONDON, Region.EMSOU, (), "", purpose=J), [T1, T2], 10, 0), deps
    )
    assert suspects.labels.lists(SHARED) == [("victims", WatchlistKind.VICTIM)]
    assert SECRET not in suspects.labels.watchlists
    assert suspects.labels.attributions == {}
    # A search of the phone index searches the job's data; what EMSOU knows of a number the
    # job's data does not hold stays out.
    hit = await handlers.search_index(commands.SearchPhoneIndex(LONDON, Region.EMSOU, f"+{SHARED}", J), deps)
    assert {e["dataset_id"] for e in hit.entries} == {emsou.job_cdr}
    assert hit.watchlists == [("victims", WatchlistKind.VICTIM)] and hit.attributions == []
    secret = await handlers.search_index(
        commands.SearchPhoneIndex(LONDON, Region.EMSOU, f"+{SECRET}", J), deps
    )
    assert (secret.entries, secret.watchlists, secret.attributions) == ([], [], [])
    owner_hit = await handlers.search_index(
        commands.SearchPhoneIndex(OWNER, Region.EMSOU, f"+{SECRET}", "Op Kestrel"), deps
    )
    assert owner_hit.entries and owner_hit.watchlists and owner_hit.attributions


async def test_advert_flags_under_a_grant_show_only_the_jobs_evidence(emsou: Emsou) -> None:
    deps = emsou.deps
    # EMSOU's own import of the job's adverts is checked against all EMSOU's call data.
    data = emsou.store.readable(b"job adverts", adverts(SHARED, SECRET))
    job_adverts = await handlers.import_file(importing(OWNER, data, job=J, kind=DatasetKind.ADVERTS), deps)
    full = {f.number: f for f in job_adverts.flags}
    assert full[SECRET].reasons == ["many_adverts", "in_phone_index", "in_contact_network"]
    assert full[SECRET].cdr_datasets == full[SECRET].contact_datasets == [name(emsou.other_cdr)]

    seen = {
        f.number: f
        for f in await handlers.list_flags(commands.ListAdvertFlags(LONDON, Region.EMSOU, "", J), deps)
    }
    # SECRET is flagged for its adverts; what job K's calls showed of it is not the job's.
    assert (seen[SECRET].reasons, seen[SECRET].cdr_datasets, seen[SECRET].contact_datasets) == (
        ["many_adverts"],
        [],
        [],
    )
    assert seen[SHARED].reasons == ["many_adverts", "in_phone_index", "in_contact_network"]
    assert seen[SHARED].cdr_datasets == [name(emsou.job_cdr)]
    # A holder's own import of adverts is checked against the job's call data only.
    mine = emsou.store.readable(b"london adverts", adverts(SECRET))
    out = await handlers.import_file(
        importing(LONDON, mine, job=J, purpose=J, kind=DatasetKind.ADVERTS), deps
    )
    assert [(f.reasons, f.cdr_datasets) for f in out.flags] == [(["many_adverts"], [])]
    # The flags of the region's other advert datasets are not the holder's to list.
    other = emsou.store.readable(b"other adverts", adverts(OTHER))
    other_adverts = await handlers.import_file(importing(OWNER, other, job=K, kind=DatasetKind.ADVERTS), deps)
    with pytest.raises(OutOfScope):
        await handlers.list_flags(
            commands.ListAdvertFlags(LONDON, Region.EMSOU, other_adverts.dataset.id, J), deps
        )
    assert OTHER not in seen


# ---------------------------------------------------------------- who is refused


@pytest.mark.parametrize(
    ("case", "actor", "purpose"),
    [
        ("the job is closed", LONDON, J),
        ("they were taken off the job", LONDON, J),
        ("someone who does not hold the job", ERSOU, J),
        ("the purpose names no job", LONDON, "Op Kestrel"),
        ("the purpose names another job they hold", LONDON, K),
        ("the purpose names a job of another region they hold", LONDON, "regions/ERSOU/jobs/e1"),
    ],
)
async def test_without_an_open_grant_of_the_jobs_region_named_by_the_purpose_all_is_refused(
    emsou: Emsou, case: str, actor: Principal, purpose: str
) -> None:
    grants = emsou.grants
    if case == "the job is closed":
        grants.grant(J, "researcher.london", open=False)
    if case == "they were taken off the job":
        grants.grant(J, "researcher.ersou")
    grants.grant(K, "researcher.london")
    grants.grant("regions/ERSOU/jobs/e1", "researcher.london")
    if case == "the purpose names another job they hold":
        # Holding K reaches K's material, never J's.
        await handlers.get_dataset(
            commands.GetDataset(actor, Region.EMSOU, emsou.other_cdr, purpose), emsou.deps
        )
    deps = emsou.deps
    data = emsou.store.readable(b"london calls", calls((T1, SHARED)))
    refused = [
        handlers.get_dataset(commands.GetDataset(actor, Region.EMSOU, emsou.job_cdr, purpose), deps),
        handlers.find_common_contacts(common(actor, purpose, (emsou.job_cdr,)), deps),
        handlers.find_common_contacts(common(actor, purpose, job=J), deps),
        handlers.import_file(importing(actor, data, job=J, purpose=purpose), deps),
    ]
    if case != "the purpose names another job they hold":  # which lists that job's material
        refused += [
            handlers.list_datasets(
                commands.ListDatasets(actor, Region.EMSOU, "", None, 50, None, purpose), deps
            ),
            handlers.list_watchlist_contacts(
                commands.ListWatchlistContacts(actor, Region.EMSOU, 10, purpose), deps
            ),
            handlers.search_index(
                commands.SearchPhoneIndex(actor, Region.EMSOU, f"+{SHARED}", purpose), deps
            ),
            handlers.list_flags(commands.ListAdvertFlags(actor, Region.EMSOU, "", purpose), deps),
        ]
    for call in refused:
        with pytest.raises(OutOfScope):
            await call
    assert {d.job for d in emsou.uow.repo.datasets.values()} == {J, K, ""}
    assert len(emsou.uow.repo.datasets) == 3


# ---------------------------------------------------------------- the region's own people


@pytest.mark.parametrize("actor", [OWNER, NC], ids=["EMSOU researcher", "national coordinator"])
async def test_the_regions_own_people_are_decided_as_before_without_a_grant_lookup(
    emsou: Emsou, actor: Principal
) -> None:
    deps = emsou.deps
    # Whatever the purpose says, even a job they do not hold.
    for purpose in ("Op Kestrel", J):
        for dataset_id in (emsou.job_cdr, emsou.other_cdr, emsou.loose_cdr):
            await handlers.get_dataset(commands.GetDataset(actor, Region.EMSOU, dataset_id, purpose), deps)
        listed, _ = await handlers.list_datasets(
            commands.ListDatasets(actor, Region.EMSOU, "", None, 50, None, purpose), deps
        )
        assert len(listed) == 3
        out = await handlers.find_common_contacts(common(actor, purpose), deps)
        assert {c.number for c in out.found} == {SHARED, OTHER}
        assert out.labels.of(f"+{SHARED}")
        await handlers.list_watchlists(commands.ListWatchlists(actor, Region.EMSOU), deps)
        await handlers.list_flags(commands.ListAdvertFlags(actor, Region.EMSOU, "", purpose), deps)
        await handlers.search_index(
            commands.SearchPhoneIndex(actor, Region.EMSOU, f"+{SHARED}", purpose), deps
        )
    data = emsou.store.readable(b"own calls", calls((T1, SHARED)))
    await handlers.import_file(importing(actor, data, job=K, purpose="Op Kestrel"), deps)
    assert emsou.grants.lookups == 0
    # The counter counts: a holder's call looks the grant up.
    await handlers.get_dataset(commands.GetDataset(LONDON, Region.EMSOU, emsou.job_cdr, J), deps)
    assert emsou.grants.lookups == 1


# ---------------------------------------------------------------- advert networks
# The region's people see every network of the region's adverts, a grant holder only those of
# the job's adverts (and watchlist findings only from the job's data), anyone else nothing.


def image_adverts(prefix: str, image: int, *numbers: int) -> bytes:
    """Two adverts per number, all with the same image."""
    rows = [
        (n, f"{prefix}-{n}-{i}", "site", NOW - timedelta(hours=i), "Leeds", "", k * 2 + i)
        for k, n in enumerate(numbers)
        for i in range(2)
    ]
    return advert_rows(rows).with_columns(image_hash=image)  # type: ignore[return-value]


def query(actor: object, purpose: str = "", dataset_ids: tuple[str, ...] = ()) -> commands.FindAdvertNetworks:
    return commands.FindAdvertNetworks(Scope(actor, Region.EMSOU, dataset_ids, "", purpose=purpose))  # type: ignore[arg-type]


async def _adverts(emsou: Emsou) -> tuple[str, str]:
    deps = emsou.deps
    job = emsou.store.readable(b"job adverts", image_adverts("j", 11, T2, SHARED))
    other = emsou.store.readable(b"other adverts", image_adverts("k", 22, OTHER, SECRET))
    job_id = (
        await handlers.import_file(importing(OWNER, job, job=J, kind=DatasetKind.ADVERTS), deps)
    ).dataset.id
    other_id = (
        await handlers.import_file(importing(OWNER, other, job=K, kind=DatasetKind.ADVERTS), deps)
    ).dataset.id
    return job_id, other_id


async def test_the_regions_people_see_every_network_with_watchlist_indicators(emsou: Emsou) -> None:
    await _adverts(emsou)
    nets = await handlers.find_advert_networks(query(OWNER), emsou.deps)
    assert sorted(n.numbers for n in nets) == [sorted([T2, SHARED]), sorted([OTHER, SECRET])]
    by = {tuple(n.numbers): n for n in nets}
    job_net = by[tuple(sorted([T2, SHARED]))]
    texts = [i.text for i in job_net.indicators]
    assert any(t.startswith(f"number +{SHARED} is on victims") for t in texts)
    # T2 and SHARED are in contact in the job's calls; SHARED is on the victims list.
    assert any(t.startswith(f"number +{T2} in contact with +{SHARED}") for t in texts)
    other_net = by[tuple(sorted([OTHER, SECRET]))]
    texts = [i.text for i in other_net.indicators]
    assert any(t.startswith(f"number +{SECRET} is on victims") for t in texts)
    # OTHER is in contact with T1 (registered sex offenders) in job K's calls.
    assert any(t.startswith(f"number +{OTHER} in contact with +{T1}") for t in texts)
    # One call each from T1 to SHARED, OTHER and SECRET: too few contacts to make T1 a controller.
    reasons = [r for n in nets for rs in n.reasons.values() for r in rs]
    assert not any(r.startswith("number in contact with") for r in reasons)


async def test_a_holder_sees_only_the_jobs_networks_and_findings(emsou: Emsou) -> None:
    job_id, other_id = await _adverts(emsou)
    nets = await handlers.find_advert_networks(query(LONDON, J), emsou.deps)
    # Only the job's adverts and calls: nothing of job K's (its adverts, SECRET's victim
    # listing, OTHER's contact with T1) shows.
    [net] = nets
    assert net.numbers == sorted([T2, SHARED])
    assert not any(str(SECRET) in i.text or str(OTHER) in i.text for i in net.indicators)
    assert not any("advert k-" in r for rs in net.reasons.values() for r in rs)
    # Found from the job's own data only: the same answer as naming the job's dataset.
    named = await handlers.find_advert_networks(query(LONDON, J, (job_id,)), emsou.deps)
    assert [n.network_id for n in named] == [n.network_id for n in nets]
    with pytest.raises(OutOfScope):
        await handlers.find_advert_networks(query(LONDON, J, (other_id,)), emsou.deps)


@pytest.mark.parametrize(("actor", "purpose"), [(LONDON, ""), (LONDON, K), (ERSOU, J), (ERSOU, "")])
async def test_anyone_else_is_refused(emsou: Emsou, actor: object, purpose: str) -> None:
    await _adverts(emsou)
    with pytest.raises(OutOfScope):
        await handlers.find_advert_networks(query(actor, purpose), emsou.deps)
