"""What a dataset shows without being asked: contacts between numbers of different
watchlists, advert numbers worth a look, and the identifiers it holds. Runs in a worker thread
(polars work)."""

from __future__ import annotations

from datetime import datetime

import polars as pl

from toex_comms.domain import analysis
from toex_comms.domain.model import (
    IN_CONTACT_NETWORK,
    IN_PHONE_INDEX,
    AdvertFlag,
    Dataset,
    DatasetIdentifiers,
    DatasetKind,
    WatchlistContact,
    new_id,
)
from toex_comms.service_layer.ports import DatasetStore, Members

# A handset IMEI once spaces and hyphens are dropped: 14 digits (without the check digit), 15,
# or 16 (IMEISV). Anything else in the column is not passed on as one.
IMEI = r"^[0-9]{14,16}$"
# An advert number is flagged from this many adverts, or this many locations.
ADVERT_MIN_ADVERTS = 3
ADVERT_MIN_LOCATIONS = 2


def watchlist_contacts(
    rows: pl.LazyFrame, dataset: Dataset, members: Members, now: datetime
) -> list[WatchlistContact]:
    """Contacts in the dataset's call `rows` between numbers of two different watchlists."""
    names = {n: [wid for wid, _ in lists] for n, lists in members.items()}
    kinds = {wid: kind for lists in members.values() for wid, kind in lists}
    found = analysis.watchlist_contacts(rows, names)
    return [
        WatchlistContact(
            id=new_id(),
            region=dataset.region,
            dataset_id=dataset.id,
            list_a=r["list_a"],
            kind_a=kinds[r["list_a"]],
            number_a=r["number_a"],
            list_b=r["list_b"],
            kind_b=kinds[r["list_b"]],
            number_b=r["number_b"],
            first=r["first"],
            last=r["last"],
            contacts=r["contacts"],
            calls=r["calls"],
            sms=r["sms"],
            duration=r["duration"],
            detected_at=now,
        )
        for r in found.iter_rows(named=True)
    ]


def identifiers(dataset: Dataset, store: DatasetStore) -> DatasetIdentifiers:
    """The distinct identifiers of a published dataset: the numbers of call data (its phone
    index) or adverts, and the IMEIs of call data; the vehicles of ANPR reads. One column is
    read for each, so this costs a small part of the import."""
    ids = [dataset.id]
    if dataset.kind is DatasetKind.ANPR:
        vrms = store.rows(ids, DatasetKind.ANPR).select(pl.col("vrm").drop_nulls().unique().sort())
        return DatasetIdentifiers(vrms=tuple(vrms.collect().to_series().to_list()))
    keys = store.numbers(ids) if dataset.kind is DatasetKind.CDR else store.rows(ids, DatasetKind.ADVERTS)
    numbers = keys.select(pl.col("number").drop_nulls().unique().sort()).select(
        pl.concat_str(pl.lit("+"), pl.col("number").cast(pl.String))
    )
    if dataset.kind is not DatasetKind.CDR:
        return DatasetIdentifiers(numbers=tuple(numbers.collect().to_series().to_list()))
    imeis = (
        store.rows(ids)
        .select(pl.col("imei").drop_nulls().unique().str.replace_all(r"[\s-]", ""))
        .filter(pl.col("imei").str.contains(IMEI))
        .select(pl.col("imei").unique().sort())
    )
    found_numbers, found_imeis = pl.collect_all([numbers, imeis])
    return DatasetIdentifiers(
        numbers=tuple(found_numbers.to_series().to_list()), imeis=tuple(found_imeis.to_series().to_list())
    )


def flag_adverts(
    rows: pl.LazyFrame,
    dataset: Dataset,
    store: DatasetStore,
    region_cdr: list[str],
    members: Members,
) -> list[AdvertFlag]:
    """The advert numbers of the dataset's `rows` in many adverts or locations, in the phone
    index of the region's call data (`region_cdr`), or in contact with a watchlist number."""
    summary = analysis.advert_summary(rows)
    numbers = summary["number"].to_list()
    seen_in: dict[int, list[str]] = {}
    # number -> the call datasets in which it was in contact with a watchlist number
    in_contact: dict[int, list[str]] = {}

    def name(dataset_id: str) -> str:
        return f"regions/{dataset.region.value}/datasets/{dataset_id}"

    if region_cdr and numbers:
        hits = (
            store.numbers(region_cdr)
            .filter(pl.col("number").is_in(numbers))
            .select("number", "dataset_id")
            .collect()
        )
        for number, dataset_id in hits.iter_rows():
            seen_in.setdefault(number, []).append(name(dataset_id))
        watched = list(members)
        # Only the datasets holding an advert number can hold its contact with a watched one.
        holding = sorted({d for _, d in hits.iter_rows()})
        if watched and holding:
            cdr = pl.concat([store.rows([d]).with_columns(dataset_id=pl.lit(d)) for d in holding])
            linked = (
                cdr.filter(
                    (pl.col("a").is_in(numbers) & pl.col("b").is_in(watched))
                    | (pl.col("b").is_in(numbers) & pl.col("a").is_in(watched))
                )
                .select(pl.when(pl.col("a").is_in(numbers)).then("a").otherwise("b").alias("n"), "dataset_id")
                .unique()
                .collect()
            )
            for number, dataset_id in linked.iter_rows():
                in_contact.setdefault(number, []).append(name(dataset_id))
    flags: list[AdvertFlag] = []
    for r in summary.iter_rows(named=True):
        reasons = []
        if r["adverts"] >= ADVERT_MIN_ADVERTS:
            reasons.append("many_adverts")
        if len(r["locations"]) >= ADVERT_MIN_LOCATIONS:
            reasons.append("many_locations")
        if r["number"] in seen_in:
            reasons.append(IN_PHONE_INDEX)
        if r["number"] in in_contact:
            reasons.append(IN_CONTACT_NETWORK)
        if reasons:
            flags.append(
                AdvertFlag(
                    dataset.id,
                    dataset.region,
                    r["number"],
                    reasons,
                    r["adverts"],
                    r["locations"],
                    r["sites"],
                    sorted(seen_in.get(r["number"], [])),
                    r["first"],
                    r["last"],
                    sorted(in_contact.get(r["number"], [])),
                )
            )
    return flags
