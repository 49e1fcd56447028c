"""Advert networks: each kind of join, its reason, the indicators and the ranking."""

from __future__ import annotations

from datetime import UTC, datetime

import polars as pl
import pytest
from datasketch import MinHash
from toex_comms.domain.advert_networks import (
    NetworkOptions,
    _text_signatures,
    child_indications,
    find_networks,
    networks_frame,
)

TEMPLATE = (
    "hi gents new in town sexy {name} available now incall outcall discreet clean apartment "
    "friendly and fun no rush service call or text me"
)
OTHER = [
    "completely different words about a garden centre opening on saturday with plants and tea",
    "second hand bicycle for sale good condition new tyres collection only cash please",
    "lost cat black and white answers to tom reward offered please ring if you see him",
    "plumber available for small jobs leaking taps boilers serviced fair prices no call out",
]


def day(d: int) -> datetime:
    return datetime(2025, 3, d, tzinfo=UTC)


def frame(rows: list[dict[str, object]]) -> pl.DataFrame:
    cols = ["advert_id", "number", "text", "image_hash", "location", "posted", "name", "age", "site"]
    return pl.DataFrame(
        {c: [r.get(c) for r in rows] for c in cols},
        schema={
            "advert_id": pl.String,
            "number": pl.Int64,
            "text": pl.String,
            "image_hash": pl.UInt64,
            "location": pl.String,
            "posted": pl.Datetime("us", "UTC"),
            "name": pl.String,
            "age": pl.Int32,
            "site": pl.String,
        },
    )


def test_unrelated_adverts_make_no_network() -> None:
    rows = [{"advert_id": f"x{i}", "number": 447700900100 + i, "text": t} for i, t in enumerate(OTHER)]
    assert find_networks(frame(rows)) == []


def test_shared_text_template_joins_numbers_and_says_why() -> None:
    rows = [
        {"advert_id": "a1", "number": 447700900001, "text": TEMPLATE.format(name="Lola")},
        {"advert_id": "a2", "number": 447700900002, "text": TEMPLATE.format(name="Mia")},
        {"advert_id": "a3", "number": 447700900003, "text": OTHER[0]},
    ]
    [net] = find_networks(frame(rows))
    assert net.adverts == ["a1", "a2"]
    assert net.numbers == [447700900001, 447700900002]
    assert any(r.startswith("text like advert a2") for r in net.reasons["a1"])
    assert "shared_template" in {i.code for i in net.indicators}


def test_text_below_threshold_does_not_join() -> None:
    rows = [
        {"advert_id": "a1", "number": 447700900001, "text": TEMPLATE.format(name="Lola")},
        {"advert_id": "a2", "number": 447700900002, "text": "hi gents " + OTHER[1]},
    ]
    assert find_networks(frame(rows)) == []


def test_signature_estimate_tracks_datasketch_minhash() -> None:
    """Our column-wise signatures estimate the same Jaccard similarity as datasketch's MinHash
    on the same shingles (within the error of 128 slots)."""
    a = TEMPLATE.format(name="Lola")
    b = TEMPLATE.format(name="Mia").replace("discreet", "private")
    opts = NetworkOptions(num_perm=128)
    sig, _, _ = _text_signatures(pl.DataFrame({"doc": [0, 1], "text": [a, b]}), opts)
    sig = sig.sort("doc")
    ours = sum(sig[f"m{i}"][0] == sig[f"m{i}"][1] for i in range(128)) / 128

    def shingles(t: str) -> set[str]:
        w = t.split()
        return {" ".join(w[i : i + 3]) for i in range(len(w) - 2)}

    ma, mb = MinHash(num_perm=128), MinHash(num_perm=128)
    for s in shingles(a):
        ma.update(s.encode())
    for s in shingles(b):
        mb.update(s.encode())
    exact = len(shingles(a) & shingles(b)) / len(shingles(a) | shingles(b))
    assert abs(ours - exact) < 0.15
    assert abs(ma.jaccard(mb) - exact) < 0.15


def test_same_and_near_same_image_join_but_far_does_not() -> None:
    base = 0x0F0F_F0F0_1234_5678
    rows = [
        {"advert_id": "i1", "number": 447700900001, "image_hash": base},
        {"advert_id": "i2", "number": 447700900002, "image_hash": base},  # same
        {"advert_id": "i3", "number": 447700900003, "image_hash": base ^ 0b101},  # 2 bits
        {"advert_id": "i4", "number": 447700900004, "image_hash": base ^ 0xFF},  # 8 bits
    ]
    [net] = find_networks(frame(rows))
    assert net.adverts == ["i1", "i2", "i3"]
    assert "same image as advert i1" in net.reasons["i2"]
    assert any("2 bits apart" in r for r in net.reasons["i3"])


def test_near_image_found_whichever_band_agrees() -> None:
    """Differences spread over every band but one still join (pigeonhole on 4 bands)."""
    base = 0xAAAA_BBBB_CCCC_DDDD
    for flips in ([1, 17, 33], [17, 33, 49], [1, 33, 49], [1, 17, 49]):
        other = base
        for f in flips:
            other ^= 1 << f
        rows = [
            {"advert_id": "p", "number": 447700900001, "image_hash": base},
            {"advert_id": "q", "number": 447700900002, "image_hash": other},
        ]
        [net] = find_networks(frame(rows))
        assert any("3 bits apart" in r for r in net.reasons["q"])


def test_controller_joins_numbers_within_fanout_only() -> None:
    numbers = [447700900001, 447700900002, 447700900003]
    rows = [{"advert_id": f"c{i}", "number": n, "text": OTHER[i]} for i, n in enumerate(numbers)]
    controller = 447999000001
    contacts = pl.DataFrame({"a": numbers, "b": [controller] * 3, "contacts": [5, 9, 2]})
    [net] = find_networks(frame(rows), contacts=contacts)
    assert net.numbers == numbers
    assert any("in contact with +447999000001" in r for r in net.reasons["c1"])
    # Too few contacts on one pair: only two numbers left under the controller: no join.
    weak = contacts.with_columns(contacts=pl.Series([5, 9, 1]))
    assert find_networks(frame(rows), contacts=weak) == []
    # A number in contact with more advert numbers than the fan-out limit joins nothing.
    assert (
        find_networks(frame(rows), contacts=contacts, options=NetworkOptions(max_controller_fanout=2)) == []
    )


def test_indicators_movement_workers_watchlists_and_minor_first() -> None:
    rows = [
        {
            "advert_id": f"m{i}",
            "number": 447700900001,
            "name": name,
            "location": town,
            "posted": day(i + 1),
            "text": TEMPLATE.format(name=name),
            "age": 23,
        }
        for i, (name, town) in enumerate(
            [("Lola", "Derby"), ("Mia", "Derby"), ("Ana", "Leicester"), ("Eva", "Lincoln"), ("Zoe", "Derby")]
        )
    ]
    rows.append({"advert_id": "m9", "number": 447700900009, "text": TEMPLATE.format(name="Kat"), "age": 22})
    child = [
        {"advert_id": "k1", "number": 447700900050, "text": OTHER[2] + " schoolgirl", "image_hash": 1},
        {"advert_id": "k2", "number": 447700900051, "text": OTHER[3], "image_hash": 1},
    ]
    nets = find_networks(
        frame(rows + child),
        watchlists={447700900009: ["suspect"]},
        watch_contacts={447700900001: [447700111222]},
    )
    assert [n.adverts[0] for n in nets] == ["k1", "m0"]
    minor, adult = nets
    assert minor.minor and "words in text: schoolgirl" in minor.minor_reasons[0]
    assert minor.indicators[0].code == "child"
    codes = {i.code for i in adult.indicators}
    assert codes == {"many_workers", "movement", "shared_template", "watchlist", "watchlist_contact"}
    assert adult.towns == ["Derby", "Leicester", "Lincoln"]
    assert [t for _, t in adult.movements] == ["Derby", "Leicester", "Lincoln", "Derby"]
    assert not adult.minor
    table = networks_frame(nets)
    assert table["rank"].to_list() == [1, 2]
    assert table["minor"].to_list() == [True, False]


@pytest.mark.parametrize(
    ("text", "age", "expected"),
    [
        (None, 16, ["claimed age 16"]),
        ("new girl 17 years old", None, ["age in text: 17 years old"]),
        ("Barely Legal fun", 19, ["words in text: barely legal"]),
        ("mature lady 45", 45, []),
        ("call me on 07700 900123", None, []),
    ],
)
def test_child_indications(text: str | None, age: int | None, expected: list[str]) -> None:
    assert child_indications(text, age) == expected


def test_network_id_is_stable_and_scoped() -> None:
    rows = [
        {"advert_id": "a1", "number": 447700900001, "image_hash": 7},
        {"advert_id": "a2", "number": 447700900002, "image_hash": 7},
    ]
    one = find_networks(frame(rows), scope="regions/EMSOU")[0].network_id
    assert one == find_networks(frame(list(reversed(rows))), scope="regions/EMSOU")[0].network_id
    assert one != find_networks(frame(rows), scope="regions/WMROCU")[0].network_id


def test_missing_required_columns_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="number"):
        find_networks(pl.DataFrame({"advert_id": ["a"]}))


def test_a_shared_account_joins_adverts_and_says_which() -> None:
    rows = frame(
        [
            {"advert_id": "a1", "number": 447700900001, "text": OTHER[0]},
            {"advert_id": "a2", "number": 447700900002, "text": OTHER[1]},
            {"advert_id": "a3", "number": 447700900003, "text": OTHER[2]},
            {"advert_id": "a4", "number": 447700900004, "text": OTHER[3]},
        ]
    ).with_columns(
        account=pl.Series(["instagram:some.name", None, "instagram:some.name", "instagram:other.name"])
    )
    [net] = find_networks(rows)
    assert net.adverts == ["a1", "a3"]
    assert net.reasons["a1"] == ["shares account instagram:some.name with advert a3"]
    assert net.reasons["a3"] == ["shares account instagram:some.name with advert a1"]
    assert net.accounts == ["instagram:some.name"]
    assert networks_frame([net])["accounts"].to_list() == ["instagram:some.name"]
    # without the column, nothing joins them
    assert find_networks(rows.drop("account")) == []


def test_an_account_on_a_watchlist_is_an_indicator_naming_the_list() -> None:
    rows = frame(
        [
            {"advert_id": "a1", "number": 447700900001, "text": OTHER[0]},
            {"advert_id": "a2", "number": 447700900002, "text": OTHER[1]},
        ]
    ).with_columns(account=pl.Series(["instagram:some.name", "instagram:some.name"]))
    [plain] = find_networks(rows)
    [net] = find_networks(rows, account_watchlists={"instagram:some.name": ["suspects", "rso"]})
    assert [i.text for i in net.indicators] == ["account instagram:some.name is on rso, suspects"]
    assert net.score == plain.score + 30


def test_advert_network_exports_share_the_link_chart_and_neutralise_cells() -> None:
    import io

    import networkx as nx
    from toex_comms.adapters.exports import advert_networks_csv, advert_networks_graphml, advert_networks_i2

    rows = frame(
        [
            {"advert_id": "=1+1", "number": 447700900001, "image_hash": 7},
            {"advert_id": "a2", "number": 447700900002, "image_hash": 7},
            {"advert_id": "a3", "number": 447700900002},
        ]
    )
    [net] = find_networks(rows, scope="regions/EMSOU")
    graph = nx.read_graphml(io.BytesIO(advert_networks_graphml([net])))
    assert graph.edges["advert:a2", "advert:=1+1"]["link"] == "Same or Near-same Image"
    assert graph.edges["advert:a3", "advert:a2"]["detail"] == "+447700900002"
    assert graph.has_edge("advert:a3", f"network:{net.network_id}")
    i2 = advert_networks_i2([net]).decode("utf-8-sig")
    assert "'=1+1" in i2 and ",=1+1" not in i2
    flat = pl.read_csv(io.BytesIO(advert_networks_csv([net])))
    assert flat["network_id"].to_list() == [net.network_id]
    assert flat["numbers"].to_list() == ["'+447700900001 +447700900002"]
