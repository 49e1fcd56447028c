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
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import pandas as pd
import splink.comparison_level_library as cll
import splink.comparison_library as cl
from splink import DuckDBAPI, Linker, SettingsCreator, block_on

from toex_entity.domain.matching import (
    COMPARISONS,
    EXACT_LEVEL,
    FEATURE_COLUMNS,
    Features,
    LevelWeights,
    MatchModel,
    Thresholds,
)

if TYPE_CHECKING:
    from toex_entity.service_layer.foreground import Foreground

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
    model = model_from_settings(
        link.misc.save_model_to_json(), thresholds or Thresholds(), source or f"{len(df)} records"
    )
    return with_term_frequencies(model, df)


# Term-frequency adjustments: a value's frequency is floored at the exact level's u divided by
# this, so an exact match on the rarest values weighs at most this many times (2 bits) more than
# the level's average; common values weigh less, down to what their frequency says.
TF_MAX_BOOST = 4.0
# At most this many values are kept per column (the most frequent); the floor rises to the
# frequency of the first value left out, so the adjustment stays the same order as frequency.
TF_MAX_VALUES = 20_000


def with_term_frequencies(model: MatchModel, df: pd.DataFrame) -> MatchModel:
    """The model with term-frequency tables of its records (Splink's definition: a value's
    count over the column's non-null count), each with its floor."""
    tables: dict[str, dict[str, float]] = {}
    floors: dict[str, float] = {}
    for spec in COMPARISONS:
        exact = model.levels[spec.name][EXACT_LEVEL]
        if spec.tf_column is None or exact is None or (exact.m == 1.0 and exact.u == 1.0):
            continue
        frequencies = df[spec.tf_column].dropna().value_counts(normalize=True, sort=True)
        floor = exact.u / TF_MAX_BOOST
        if len(frequencies) > TF_MAX_VALUES:
            floor = max(floor, float(frequencies.iloc[TF_MAX_VALUES]))
        kept = frequencies[frequencies > floor]
        tables[spec.name] = {str(v): float(f) for v, f in kept.items()}
        floors[spec.name] = floor
    return replace(
        model,
        version=model_version(model.prior, model.levels, tables, floors),
        term_frequencies=tables,
        tf_floor=floors,
    )


def model_version(
    prior: float,
    levels: Mapping[str, tuple[LevelWeights | None, ...]],
    tables: Mapping[str, Mapping[str, float]] | None = None,
    floors: Mapping[str, float] | None = None,
) -> str:
    """A model's version: a digest of its parameters (term frequencies included)."""
    content: dict[str, Any] = {
        "prior": prior,
        "levels": {k: [None if w is None else [w.m, w.u] for w in v] for k, v in levels.items()},
    }
    if tables:
        content["term_frequencies"] = tables
        content["tf_floor"] = floors or {}
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:12]


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
    return MatchModel(model_version(prior, levels), prior, levels, thresholds, source)


def settings_with(model: MatchModel, *, retain: bool = False) -> dict[str, Any]:
    """Splink settings carrying this model's parameters (for the batch baseline and the
    agreement test)."""
    built = settings(retain=retain).get_settings("duckdb").as_dict()
    built["probability_two_random_records_match"] = model.prior
    for comparison, spec in zip(built["comparisons"], COMPARISONS, strict=True):
        weights = model.levels[comparison["output_column_name"]]
        for level, w in zip(comparison["comparison_levels"], weights, strict=True):
            if w is not None:
                level["m_probability"] = w.m
                level["u_probability"] = w.u
        if spec.tf_column is not None and spec.name in model.tf_floor:
            exact = comparison["comparison_levels"][EXACT_LEVEL]
            exact["tf_adjustment_column"] = spec.tf_column
            exact["tf_adjustment_weight"] = 1.0
            exact["tf_minimum_u_value"] = model.tf_floor[spec.name]
    return built


def register_term_frequencies(link: Linker, model: MatchModel, df: pd.DataFrame) -> None:
    """Give Splink the model's term-frequency tables (not the ones it would compute from `df`):
    every value of `df`, at its frequency in the model's table, or 0 (so, the floor) if not
    listed there."""
    for spec in COMPARISONS:
        if spec.tf_column is None or spec.name not in model.tf_floor:
            continue
        table = model.term_frequencies.get(spec.name, {})
        values = df[spec.tf_column].dropna().unique()
        lookup = pd.DataFrame(
            {spec.tf_column: values, f"tf_{spec.tf_column}": [table.get(v, 0.0) for v in values]}
        )
        link.table_management.register_term_frequency_lookup(lookup, spec.tf_column)


def predict(model: MatchModel, rows: Sequence[tuple[str, Features]], threshold: float) -> pd.DataFrame:
    """Splink's own batch prediction with this model: every blocked pair at or above
    `threshold`, with its match weight."""
    df = frame(rows)
    link = linker(df, model=model)
    register_term_frequencies(link, model, df)
    return link.inference.predict(threshold_match_probability=threshold).as_pandas_dataframe()


def _train_bounded(rows: list[tuple[str, Features]], source: str, memory_limit: str) -> MatchModel:
    """In the estimating process: one DuckDB thread, bounded memory."""
    import duckdb

    logging.getLogger("splink").setLevel(logging.WARNING)
    connection = duckdb.connect(":memory:")
    connection.execute("SET threads = 1")
    connection.execute(f"SET memory_limit = '{memory_limit}'")
    return train(rows, source=source, db_api=DuckDBAPI(connection))


def _sample_and_train(database_url: str, sample_cap: int, memory_limit: str) -> tuple[MatchModel, int]:
    """In the estimating process: read the person sample (so the service's process neither
    decodes nor pickles it) and estimate on it."""
    rows, count = asyncio.run(_sample(database_url, sample_cap))
    model = _train_bounded(rows, f"{len(rows)} of about {count} stored records", memory_limit)
    return model, len(rows)


# Rows fetched from the database at a time: the estimating process (idle priority) asks for the
# next chunk only when the CPU has time, so the database's work for it comes in small pieces.
SAMPLE_FETCH = 2_000


async def _sample(database_url: str, sample_cap: int) -> tuple[list[tuple[str, Features]], int]:
    """The person sample kept as records are written (domain/sample.py, `person_sample`): its
    `sample_cap` smallest keys, read in key order by its index. The records table is not read:
    at a million records, the database reading it for a sample slowed resolution threefold.
    With how many person records the store holds, about (the sample's size over its
    threshold: exact while the sample holds every record)."""
    from sqlalchemy import select
    from toex_common.db import create_engine

    from toex_entity.adapters.tables import person_sample, person_sample_state

    engine = create_engine(database_url, pool_size=1)
    try:
        async with engine.connect() as conn:
            state = (
                await conn.execute(
                    select(person_sample_state.c.threshold, person_sample_state.c.size).where(
                        person_sample_state.c.name == "persons"
                    )
                )
            ).one()
            result = await conn.stream(
                select(person_sample.c.record_id, person_sample.c.features)
                .order_by(person_sample.c.sample_key)
                .limit(sample_cap)
            )
            rows: list[tuple[str, Features]] = []
            async for chunk in result.partitions(SAMPLE_FETCH):
                rows.extend((r.record_id, r.features) for r in chunk)
            about = int(state.size / state.threshold) if state.threshold > 0 else len(rows)
            return rows, max(about, len(rows))
    finally:
        await engine.dispose()


def _estimate_main() -> None:
    """`python -m toex_entity.adapters.splink_model`: the estimating process. Reads its job
    (database URL, sample cap, memory limit) as JSON on stdin (not argv: the URL may carry a
    password), writes the model and how many records it saw as JSON on stdout."""
    import os
    import sys

    job = json.loads(sys.stdin.read())
    # The answer goes to the original stdout; anything else printed goes to stderr.
    answer = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    sys.stdout.flush()
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    logging.basicConfig(level=logging.WARNING)
    model, seen = _sample_and_train(job["database_url"], int(job["sample_cap"]), job["memory_limit"])
    answer.write(json.dumps({"model": model.to_json(), "seen": seen}))
    answer.close()


_ESTIMATING_PROCESS = (
    "import os, runpy\n"
    # Killed with the service (PR_SET_PDEATHSIG): never left behind, stopped or running.
    "try:\n    import ctypes, signal\n"
    "    ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))\n"
    "except (OSError, AttributeError):\n    pass\n"
    "try:\n    os.nice(19)\nexcept (OSError, AttributeError):\n    pass\n"
    "try:\n    os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))\n"
    "except (OSError, AttributeError):\n    pass\n"
    "runpy.run_module('toex_entity.adapters.splink_model', run_name='__main__')\n"
)


async def estimate_from_database(
    database_url: str, sample_cap: int, *, memory_limit: str = "1GB", foreground: Foreground | None = None
) -> tuple[MatchModel, int]:
    """Estimate in a separate process (started for the run, gone after it) that reads the person
    sample itself. The process runs at idle priority from its first statement (so even
    its imports yield to resolution), with one DuckDB thread and a DuckDB memory limit, and
    holds no lock the service takes; with `foreground`, it is also stopped while a resolution
    is in flight (service_layer/foreground.py). Returns the model and how many records it saw."""
    import sys

    job = json.dumps({"database_url": database_url, "sample_cap": sample_cap, "memory_limit": memory_limit})
    # The child lowers its own priority before it imports anything (not in a `preexec_fn`: Python
    # code between fork and exec is unsafe in a process with other threads, as gRPC's).
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _ESTIMATING_PROCESS,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    if foreground is not None:
        foreground.attach(process.pid)
    try:
        out, err = await process.communicate(job.encode())
    except BaseException:  # cancelled (the service is stopping): the estimate goes with it
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
        raise
    finally:
        if foreground is not None:
            foreground.detach(process.pid)
    if process.returncode != 0:
        tail = err.decode(errors="replace").strip().splitlines()[-1:] or ["no message"]
        raise RuntimeError(f"the estimating process exited with {process.returncode}: {tail[0]}")
    answer = json.loads(out)
    return MatchModel.from_json(answer["model"]), int(answer["seen"])


if __name__ == "__main__":
    _estimate_main()
