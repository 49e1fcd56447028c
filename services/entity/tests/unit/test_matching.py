"""Normal forms, comparison levels, blocking and scoring, and agreement with Splink."""

from __future__ import annotations

import logging
import math

import pytest
from toex_entity import febrl
from toex_entity.adapters import splink_model
from toex_entity.domain import matching, normalise
from toex_entity.domain.records import Address, PersonData, RecordType, identifiers_of


def test_normal_forms() -> None:
    assert normalise.phone_e164("07700 900123") == "+447700900123"
    assert normalise.phone_e164("+44 (0)7700-900123") == "+447700900123"
    assert normalise.postcode("de12ab") == "DE1 2AB"
    assert normalise.postcode(" sw1a  1aa ") == "SW1A 1AA"
    assert normalise.vrm("ab12 cde") == "AB12CDE"
    assert normalise.handle("Instagram", "@Some.One") == "instagram:some.one"
    assert normalise.birth_date("19940312") == "1994-03-12"
    assert normalise.name_key("O'Brien-Smith") == "obriensmith"
    assert normalise.name_key("Zoë") == "zoe"
    with pytest.raises(normalise.NormaliseError):
        normalise.phone_e164("not a number")
    with pytest.raises(normalise.NormaliseError):
        normalise.birth_date("12 March 1994")


def test_handles_take_the_one_normal_form_of_online_accounts() -> None:
    # As comms keeps an advert's account and PND searches one: aliases, URLs and case alike.
    assert normalise.handle("Insta", "https://www.instagram.com/Some.One/") == "instagram:some.one"
    assert normalise.handle("twitter", "@Some_One") == "x:some_one"
    assert normalise.handle("Facebook", "some.one") == "facebook:someone"
    with pytest.raises(normalise.NormaliseError, match="instagram handle"):
        normalise.handle("instagram", "two words")
    with pytest.raises(normalise.NormaliseError, match="platform"):
        normalise.handle("", "someone")


def test_person_identifiers_are_normalised_and_persons_link_on_official_ids_only() -> None:
    person = PersonData(
        given_name="Dan",
        surname="Smith",
        phone_numbers=("07700 900123", "+447700900123"),
        identifiers=(("pnc", "12/345 a"),),
    )
    ids = identifiers_of(RecordType.PERSON, person)
    assert ids.e164_numbers == ("+447700900123",)
    assert ids.official_ids == ("PNC:12/345A",)
    assert ids.keys() == ["tel:+447700900123", "id:PNC:12/345A"]


def _features(**fields: object) -> matching.Features:
    return matching.person_features(PersonData(**fields))  # type: ignore[arg-type]


def test_levels_tolerate_transposed_dates_and_phonetic_names() -> None:
    a = _features(given_name="Catherine", surname="Smith", birth_date="1994-03-12")
    b = _features(given_name="Kathryn", surname="Smyth", birth_date="1994-03-21")
    dob = next(c for c in matching.COMPARISONS if c.name == "birth_date")
    assert dob.levels[dob.level_of(a, b)].label == "one digit wrong or two transposed"
    swapped = _features(given_name="Catherine", surname="Smith", birth_date="1994-12-03")
    assert dob.levels[dob.level_of(a, swapped)].label == "day and month swapped"
    surname = next(c for c in matching.COMPARISONS if c.name == "surname")
    assert surname.levels[surname.level_of(a, b)].label.startswith("Jaro-Winkler")
    missing = _features(given_name="Catherine", surname="Smith")
    assert dob.levels[dob.level_of(a, missing)].is_null


def test_blocking_meets_a_record_with_any_single_error() -> None:
    base = dict(
        given_name="Daniel",
        surname="Harrington",
        birth_date="1994-03-12",
        addresses=(Address(("14 Mill Lane",), "Derby", "DE1 2AB"),),
    )
    original = set(matching.blocking_keys(_features(**base)))
    asked = set(matching.query_keys(_features(**base)))
    for change in (
        {"surname": "Haringtonn"},
        {"given_name": "Danial"},
        {"birth_date": "1994-03-21"},
        {"addresses": (Address((), "", "DE1 2AX"),)},
        {"given_name": "Harrington", "surname": "Daniel"},  # swapped
        {"birth_date": "", "addresses": ()},  # only the names left
    ):
        changed = _features(**{**base, **change})
        assert original & set(matching.query_keys(changed)), change  # the new record meets the stored one
        assert asked & set(matching.blocking_keys(changed)), change  # and the other way round


def test_explanation_adds_up() -> None:
    model = _trained()
    a = _features(given_name="Daniel", surname="Harrington", birth_date="1994-03-12")
    b = _features(given_name="Danial", surname="Harrington", birth_date="1994-03-12")
    s = matching.score(model, a, b)
    assert s.weight == pytest.approx(s.prior_weight + sum(c.weight for c in s.contributions))
    assert matching.fast_weight(matching.weight_table(model), model.prior_weight, a, b) == pytest.approx(
        s.weight
    )
    text = matching.explain_text(s, "linked")
    assert "surname: exact ('harrington' vs 'harrington')" in text
    assert text.index("surname") < text.index("postcode")  # strongest evidence first


_MODEL: list[matching.MatchModel] = []


def _trained() -> matching.MatchModel:
    if not _MODEL:
        logging.getLogger("splink").setLevel(logging.ERROR)
        records, _ = febrl.load("febrl1")
        _MODEL.append(splink_model.train(_rows(records), source="febrl1"))
    return _MODEL[0]


def _rows(records: list[tuple[str, PersonData]]) -> list[tuple[str, matching.Features]]:
    rows = []
    for rec_id, person in records:
        ids = identifiers_of(RecordType.PERSON, person)
        rows.append((rec_id, matching.person_features(person, ids.official_ids, ids.e164_numbers)))
    return rows


def test_real_time_weights_equal_splinks_own_predictions() -> None:
    """The Python levels pick the same level as Splink's SQL for every blocked pair, so the
    match weight applied in real time is the one Splink computes in batch."""
    from toex_entity import synthetic

    model = _trained()
    records, _ = febrl.load("febrl1")
    generated = [(g.record_id, g.person) for g in synthetic.generate(3000, seed=5)]
    checked = adjusted = 0
    for rows in (_rows(records), _rows(generated)):
        features = dict(rows)
        predicted = splink_model.predict(model, rows, threshold=0.0)
        table = matching.weight_table(model)
        for row in predicted.itertuples():
            a, b = features[row.unique_id_l], features[row.unique_id_r]
            ours = matching.fast_weight(table, model.prior_weight, a, b)
            assert ours == pytest.approx(row.match_weight, abs=1e-6), (row.unique_id_l, row.unique_id_r)
            checked += 1
            adjusted += any(
                c.level == "exact" and c.comparison in model.tf_floor
                for c in matching.score(model, a, b, detail=False).contributions
            )
    assert checked > 1000
    assert adjusted > 100  # term-frequency adjustments were part of what agreed


def test_pairwise_scores_count_pairs_within_clusters() -> None:
    truth = {frozenset(("a", "b")), frozenset(("c", "d"))}
    scores = febrl.pairwise({"a": "1", "b": "1", "c": "2", "d": "3", "e": "1"}, truth)
    assert (scores.true_positives, scores.false_positives, scores.false_negatives) == (1, 2, 1)
    assert scores.f1 == pytest.approx(2 * (1 / 3) * 0.5 / (1 / 3 + 0.5))


def _with_ids(*ids: str) -> matching.Features:
    return matching.person_features(PersonData(given_name="Dan", surname="Smith"), ids)


def test_official_identifiers_compare_exactly_then_one_transposition_then_two_edits() -> None:
    official = next(c for c in matching.COMPARISONS if c.name == "official_id")
    stored = _with_ids("PNC:12/345678A")

    def label(*ids: str) -> str:
        return official.levels[official.level_of(stored, _with_ids(*ids))].label

    assert label("PNC:12/345678A") == "same identifier"
    assert label("PNC:12/354678A") == "one character wrong or two transposed"  # 4 and 5 swapped
    assert label("PNC:12/345679A") == "one character wrong or two transposed"
    assert label("PNC:12/345699A") == "Levenshtein <= 2"  # two digits wrong
    assert label("PNC:98/765432Z") == "all other"


def test_a_model_stored_before_the_transposition_level_scores_as_it_did() -> None:
    data = matching.MatchModel(
        "old",
        0.001,
        {
            c.name: tuple(None if lv.is_null else matching.LevelWeights(0.5, 0.01) for lv in c.levels)
            for c in matching.COMPARISONS
        },
    ).to_json()
    data["levels"]["official_id"] = [
        None,
        [0.9, 0.001],
        [0.05, 0.002],
        [0.05, 0.99],
    ]  # four levels, as stored before
    model = matching.MatchModel.from_json(data)
    assert model.levels["official_id"] == (
        None,
        matching.LevelWeights(0.9, 0.001),
        matching.LevelWeights(0.05, 0.002),  # the new level takes the weights its pairs had
        matching.LevelWeights(0.05, 0.002),
        matching.LevelWeights(0.05, 0.99),
    )


def test_term_frequencies_make_a_common_name_weigh_less_than_a_rare_one() -> None:
    model = _trained()
    surnames = model.term_frequencies["surname"]
    assert surnames and model.tf_floor["surname"] > 0
    common = max(surnames, key=lambda v: surnames[v])
    rare = "zzyzxquorth"  # in no table: frequency taken as the floor
    exact = model.levels["surname"][matching.EXACT_LEVEL]
    assert exact is not None
    assert model.tf_weight("surname", common) < 0 < model.tf_weight("surname", rare)
    assert model.tf_weight("surname", rare) == pytest.approx(math.log2(exact.u / model.tf_floor["surname"]))
    table = matching.weight_table(model)
    for surname in (common, rare):
        a = _features(given_name="Dan", surname=surname, birth_date="1990-01-02")
        b = _features(given_name="Dan", surname=surname, birth_date="1990-01-02")
        full = matching.score(model, a, b)
        assert matching.fast_weight(table, model.prior_weight, a, b) == pytest.approx(full.weight)
        shown = next(c for c in full.contributions if c.comparison == "surname")
        assert shown.weight == pytest.approx(exact.weight + model.tf_weight("surname", surname))
    # A model without tables (as shipped) is not adjusted.
    plain = matching.MatchModel("plain", model.prior, model.levels)
    assert plain.tf_weight("surname", common) == 0.0


@pytest.mark.parametrize("trained", [False, True], ids=["shipped model", "trained with term frequencies"])
def test_a_pair_is_dropped_early_only_when_it_cannot_reach_the_floor(trained: bool) -> None:
    """Bulk resolution's bounded weight: every pair it keeps has exactly `fast_weight`'s weight,
    every pair it drops weighs less than the floor, and it drops nearly all of the others."""
    from toex_entity import synthetic
    from toex_entity.service_layer.handlers import default_model

    model = _trained() if trained else default_model()
    table = matching.weight_table(model)
    people = [g.person for g in synthetic.generate(3000, seed=11)]
    features = [matching.person_features(p) for p in people]
    blocks: dict[str, list[int]] = {}
    for i, f in enumerate(features):
        for key in matching.blocking_keys(f):
            blocks.setdefault(key, []).append(i)
    pairs = {(a, b) for members in blocks.values() for a in members for b in members if a < b}
    assert len(pairs) > 1000
    floor = matching.review_floor(model.thresholds.review)
    dropped = under = 0
    for a, b in sorted(pairs):
        full = matching.fast_weight(table, model.prior_weight, features[a], features[b])
        bounded = matching.weight_at_least(table, model.prior_weight, features[a], features[b], floor)
        under += full < floor
        if bounded is None:
            assert full < floor, (a, b)
            dropped += 1
        else:
            assert bounded == full, (a, b)  # the same sum, not merely close
        assert (
            matching.weight_at_least(table, model.prior_weight, features[a], features[b], -math.inf) == full
        )
    # Half the pairs here are the generator's duplicates; of the others, nearly all are dropped.
    assert under > 300
    assert dropped >= 0.9 * under
    assert matching.review_floor(0.5) == pytest.approx(0.0, abs=1e-5)
    assert matching.review_floor(0.0) == matching.review_floor(1.0) == -math.inf


def test_identifier_keys_are_worked_out_once_and_handed_out_as_copies() -> None:
    person = PersonData(surname="Ruiz", phone_numbers=("07700 900123",), vrms=("ab12 cde",))
    identifiers = identifiers_of(RecordType.PERSON, person)
    first = identifiers.keys()
    assert first == ["tel:+447700900123", "vrm:AB12CDE"]
    first.append("tel:+440000000000")  # a caller's list is its own
    assert identifiers.keys() == ["tel:+447700900123", "vrm:AB12CDE"]
    assert identifiers == identifiers_of(RecordType.PERSON, person)  # the kept keys are not a field
    assert hash(identifiers) == hash(identifiers_of(RecordType.PERSON, person))


def test_postcodes_normalise_the_same_from_the_cache() -> None:
    for _ in range(2):
        assert normalise.postcode(" de1\t2ab ") == "DE1 2AB"
        assert normalise.postcode("sw1a 1aa") == "SW1A 1AA"
        assert normalise.postcode("75008") == "75008"
        assert normalise.postcode(None) == ""
