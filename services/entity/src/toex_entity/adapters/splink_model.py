"""Estimating the Fellegi-Sunter parameters with Splink on DuckDB.

Splink is given the same comparison levels the service applies in real time (their SQL
side, see domain/matching.py), estimates the prior by deterministic rules, u by random
sampling and m by expectation maximisation, and its estimates become a MatchModel.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import multiprocessing
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import pandas as pd
import splink.comparison_level_library as cll
import splink.comparison_library as cl
from splink import DuckDBAPI, Linker, SettingsCreator, block_on

from toex_entity.domain.matching import (
    COMPARISONS,
    FEATURE_COLUMNS,
    Features,
    LevelWeights,
    MatchModel,
    Thresholds,
)

log = logging.getLogger(__name__)

# The batch linkage's blocking rules (also used by the benchmark's Splink baseline): the
# same combinations the real-time blocking keys index.
PREDICTION_BLOCKING = (
    block_on("surname_ph", "given_name_ph", "substr(birth_date, 1, 4)"),
    block_on("surname_ph", "birth_date"),
    block_on("given_name_ph", "birth_date"),
    block_on("surname_ph", "postcode"),
    block_on("given_name_ph", "postcode"),
    block_on("birth_date", "postcode"),
    block_on("first_official_id"),
    block_on("street", "town"),
    block_on("street", "postcode"),
    block_on("surname_ph", "town"),
)


def _comparison(spec: Any) -> cl.CustomComparison:
    levels: list[Any] = []
    for level in spec.levels:
        if level.is_null:
            levels.append(
                cll.CustomLevel(level.sql, label_for_charts=level.label).configure(is_null_level=True)
            )
        elif level.sql == "ELSE":
            levels.append(cll.ElseLevel())
        else:
            levels.append(cll.CustomLevel(level.sql, label_for_charts=level.label))
    return cl.CustomComparison(
        output_column_name=spec.name, comparison_levels=levels, comparison_description=spec.description
    )


def settings(*, retain: bool = False) -> SettingsCreator:
    return SettingsCreator(
        link_type="dedupe_only",
        unique_id_column_name="unique_id",
        comparisons=[_comparison(c) for c in COMPARISONS],
        blocking_rules_to_generate_predictions=list(PREDICTION_BLOCKING),
        retain_intermediate_calculation_columns=retain,
        retain_matching_columns=retain,
    )


def frame(rows: Iterable[tuple[str, Features]]) -> pd.DataFrame:
    records = [{"unique_id": uid, **{c: f[c] for c in FEATURE_COLUMNS}} for uid, f in rows]
    return pd.DataFrame.from_records(records, columns=["unique_id", *FEATURE_COLUMNS])


def linker(
    df: pd.DataFrame,
    *,
    retain: bool = False,
    model: MatchModel | None = None,
    db_api: DuckDBAPI | None = None,
) -> Linker:
    db = db_api or DuckDBAPI()
    if model is None:
        return Linker(df, settings(retain=retain), db_api=db)
    return Linker(df, settings_with(model, retain=retain), db_api=db)


def train(
    rows: Iterable[tuple[str, Features]],
    *,
    thresholds: Thresholds | None = None,
    u_max_pairs: float = 2e6,
    seed: int = 7,
    source: str = "",
    db_api: DuckDBAPI | None = None,
) -> MatchModel:
    """Estimate a model from unlabelled person records (at least a few hundred)."""
    df = frame(rows)
    if len(df) < 50:
        raise ValueError(f"need at least 50 person records to estimate a model, got {len(df)}")
    link = linker(df, db_api=db_api)
    link.training.estimate_probability_two_random_records_match(
        [
            block_on("given_name", "surname", "birth_date"),
            block_on("first_official_id"),
        ],
        recall=0.7,
    )
    link.training.estimate_u_using_random_sampling(max_pairs=u_max_pairs, seed=seed)
    # Each session fixes the columns it blocks on, so two sessions cover every comparison.
    link.training.estimate_parameters_using_expectation_maximisation(
        block_on("surname_ph", "given_name_ph"), fix_u_probabilities=True
    )
    link.training.estimate_parameters_using_expectation_maximisation(
        block_on("birth_date"), fix_u_probabilities=True
    )
    return model_from_settings(
        link.misc.save_model_to_json(), thresholds or Thresholds(), source or f"{len(df)} records"
    )


def _probability(value: Any, default: float) -> float:
    if value is None:
        return default
    return min(max(float(value), 1e-9), 1.0)


def model_from_settings(saved: dict[str, Any], thresholds: Thresholds, source: str) -> MatchModel:
    levels: dict[str, tuple[LevelWeights | None, ...]] = {}
    by_name = {c["output_column_name"]: c for c in saved["comparisons"]}
    for spec in COMPARISONS:
        estimated = by_name[spec.name]["comparison_levels"]
        if len(estimated) != len(spec.levels):
            raise ValueError(f"Splink returned {len(estimated)} levels for {spec.name}")
        weights: list[LevelWeights | None] = []
        for level, values in zip(spec.levels, estimated, strict=True):
            if level.is_null:
                weights.append(None)
                continue
            # A level never seen in training stays neutral rather than guessing.
            m = _probability(values.get("m_probability"), 0.0)
            u = _probability(values.get("u_probability"), 0.0)
            weights.append(LevelWeights(m, u) if m > 0 and u > 0 else LevelWeights(1.0, 1.0))
        levels[spec.name] = tuple(weights)
    prior = float(saved["probability_two_random_records_match"])
    body = json.dumps(
        {
            "prior": prior,
            "levels": {k: [None if w is None else [w.m, w.u] for w in v] for k, v in levels.items()},
        },
        sort_keys=True,
    )
    version = hashlib.sha256(body.encode()).hexdigest()[:12]
    return MatchModel(version, prior, levels, thresholds, source)


def settings_with(model: MatchModel, *, retain: bool = False) -> dict[str, Any]:
    """Splink settings carrying this model's parameters (for the batch baseline and the
    agreement test)."""
    built = settings(retain=retain).get_settings("duckdb").as_dict()
    built["probability_two_random_records_match"] = model.prior
    for comparison in built["comparisons"]:
        weights = model.levels[comparison["output_column_name"]]
        for level, w in zip(comparison["comparison_levels"], weights, strict=True):
            if w is not None:
                level["m_probability"] = w.m
                level["u_probability"] = w.u
    return built


def predict(model: MatchModel, rows: Sequence[tuple[str, Features]], threshold: float) -> pd.DataFrame:
    """Splink's own batch prediction with this model: every blocked pair at or above
    `threshold`, with its match weight."""
    link = linker(frame(rows), model=model)
    return link.inference.predict(threshold_match_probability=threshold).as_pandas_dataframe()


def _train_bounded(rows: list[tuple[str, Features]], source: str, memory_limit: str) -> MatchModel:
    """In the estimating process: low priority, one DuckDB thread, bounded memory."""
    import os

    import duckdb

    with contextlib.suppress(OSError):
        os.nice(10)
    logging.getLogger("splink").setLevel(logging.WARNING)
    connection = duckdb.connect(":memory:")
    connection.execute("SET threads = 1")
    connection.execute(f"SET memory_limit = '{memory_limit}'")
    return train(rows, source=source, db_api=DuckDBAPI(connection))


def _sample_and_train(database_url: str, sample_cap: int, memory_limit: str) -> tuple[MatchModel, int]:
    """In the estimating process: read a random sample of the stored person records (so the
    service's process neither decodes nor pickles them) and estimate on it."""
    rows, count = asyncio.run(_sample(database_url, sample_cap))
    model = _train_bounded(rows, f"{len(rows)} of {count} stored person records", memory_limit)
    return model, len(rows)


async def _sample(database_url: str, sample_cap: int) -> tuple[list[tuple[str, Features]], int]:
    from sqlalchemy import func, select, tablesample
    from toex_common.db import create_engine

    from toex_entity.adapters.tables import source_records

    engine = create_engine(database_url, pool_size=1)
    try:
        async with engine.connect() as conn:
            persons = source_records.c.features.is_not(None)
            count = int((await conn.execute(select(func.count()).where(persons))).scalar_one())
            # Block sampling reads a share of the table's pages rather than sorting all of it.
            share = 100.0 * 1.3 * sample_cap / max(count, 1)
            table = source_records if share >= 100.0 else tablesample(source_records, func.system(share))
            result = await conn.execute(
                select(table.c.id, table.c.features).where(table.c.features.is_not(None)).limit(sample_cap)
            )
            return [(r.id, r.features) for r in result], count
    finally:
        await engine.dispose()


async def estimate_from_database(
    database_url: str, sample_cap: int, *, memory_limit: str = "1GB"
) -> tuple[MatchModel, int]:
    """Estimate in a separate process (spawned for the run and gone after it) that reads its
    own sample of the store: the service's event loop and memory are untouched while Splink
    works. Returns the model and how many records it saw."""
    loop = asyncio.get_running_loop()
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return await loop.run_in_executor(pool, _sample_and_train, database_url, sample_cap, memory_limit)
