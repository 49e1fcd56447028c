"""Estimating and activating models (the `train-model` command)."""

from __future__ import annotations

from toex_common.db import create_engine, session_factory

from toex_entity.adapters import splink_model
from toex_entity.adapters.uow import SqlEntityUnitOfWork
from toex_entity.config import Settings
from toex_entity.domain import matching
from toex_entity.domain.matching import MatchModel
from toex_entity.service_layer import handlers


def train_synthetic(count: int, seed: int = 11) -> MatchModel:
    from toex_entity import synthetic

    rows = [(g.record_id, matching.person_features(g.person)) for g in synthetic.generate(count, seed=seed)]
    return splink_model.train(
        rows, source=f"{count} generated person records (toex_entity.synthetic, seed {seed})"
    )


async def train_from_store(settings: Settings, sample: int, *, activate: bool) -> MatchModel:
    engine = create_engine(settings.database_url, pool_size=2)
    try:
        deps = handlers.Deps(uow=lambda: SqlEntityUnitOfWork(session_factory(engine)))  # type: ignore[arg-type,return-value]
        async with deps.uow() as uow:
            rows = await uow.repo.person_features_sample(sample)
        model = splink_model.train(rows, source=f"{len(rows)} stored person records")
        if activate:
            await handlers.save_model(model, deps)
        return model
    finally:
        await engine.dispose()


async def activate(settings: Settings, model: MatchModel) -> None:
    engine = create_engine(settings.database_url, pool_size=2)
    try:
        deps = handlers.Deps(uow=lambda: SqlEntityUnitOfWork(session_factory(engine)))  # type: ignore[arg-type,return-value]
        await handlers.save_model(model, deps)
    finally:
        await engine.dispose()
