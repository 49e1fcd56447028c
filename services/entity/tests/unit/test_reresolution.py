"""Which records re-resolution reads after a model change (service_layer/reresolution.py)."""

from __future__ import annotations

from dataclasses import replace

from toex_entity.domain import matching
from toex_entity.domain.matching import LevelWeights, Thresholds
from toex_entity.domain.records import Address, PersonData
from toex_entity.service_layer import reresolution
from toex_entity.service_layer.handlers import default_model


def _with_levels(name: str, levels: dict[int, LevelWeights]) -> matching.MatchModel:
    model = default_model()
    changed = list(model.levels[name])
    for index, weights in levels.items():
        changed[index] = weights
    return replace(model, version=f"{model.version}-{name}", levels={**model.levels, name: tuple(changed)})


def _features(**ids: str) -> matching.Features:
    person = PersonData(
        given_name="Kayleigh",
        surname="Morris",
        birth_date="2007-11-02",
        addresses=(Address(("3 Station Road",), "Chesterfield", "S40 1AA"),),
    )
    return matching.person_features(person, [f"{k}:{v}" for k, v in ids.items()])


def test_the_same_model_reads_nothing() -> None:
    model = default_model()
    spec = reresolution.selection(model, replace(model, version="copy"))
    assert spec.nothing and not spec.everything


def test_a_changed_identifier_level_reads_only_records_with_an_identifier() -> None:
    old = default_model()
    new = _with_levels("official_id", {2: LevelWeights(0.3, 0.0001)})
    spec = reresolution.selection(old, new)
    assert not spec.everything
    assert spec.columns == ("official_ids",)
    assert dict(spec.changed) == {"official_id": (2,)}
    assert reresolution.selected(spec, _features(PNC="12/345678A"))
    assert not reresolution.selected(spec, _features())


def test_a_changed_prior_or_threshold_reads_everything() -> None:
    old = default_model()
    assert reresolution.selection(old, replace(old, prior=old.prior * 2)).everything
    assert reresolution.selection(old, replace(old, thresholds=Thresholds(0.95, 0.5))).everything


def test_a_level_that_appears_where_there_was_none_reads_everything() -> None:
    # The null level has no parameters; a model giving it some changes every pair missing a value.
    old = default_model()
    new = _with_levels("gender", {0: LevelWeights(0.5, 0.5)})
    assert reresolution.selection(old, new).everything


def test_changed_term_frequencies_change_the_exact_level() -> None:
    old = default_model()
    new = replace(old, term_frequencies={"surname": {"SMITH": 0.01}}, tf_floor={"surname": 0.0001})
    spec = reresolution.selection(old, new)
    assert dict(spec.changed) == {"surname": (matching.EXACT_LEVEL,)}
    assert spec.columns == ("surname",)


def test_unknown_old_model_reads_everything() -> None:
    assert reresolution.selection(None, default_model()).everything
