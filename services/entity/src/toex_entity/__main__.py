"""`python -m toex_entity migrate|serve|seed-demo|train-model`."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

import click
from toex_common.migrations import service_migrations
from toex_common.service_cli import service_cli

from toex_entity.config import Settings


def migrations_dir() -> Path:
    return service_migrations("toex_entity", __file__)


main = service_cli(
    "toex_entity",
    __file__,
    Settings,
    description="The toex entity resolution service: records, entities, links, reviews and events.",
    seed_help="Load demo person records in two regions (safe to repeat).",
)


@main.command(
    "train-model",
    help="Estimate the Fellegi-Sunter parameters with Splink from the stored person records "
    "(or generated ones) and make them the active model.",
)
@click.option("--sample", default=200_000, show_default=True, help="At most this many stored records.")
@click.option("--synthetic", type=int, default=0, help="Train on this many generated records instead.")
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), help="Also write the model here.")
@click.option("--no-activate", is_flag=True, help="Do not store it as the active model.")
def train_model(sample: int, synthetic: int, output: Path | None, no_activate: bool) -> None:
    from toex_entity.training import train_from_store, train_synthetic

    logging.getLogger("splink").setLevel(logging.WARNING)
    settings = Settings()
    if synthetic:
        model = train_synthetic(synthetic)
        if not no_activate:
            asyncio.run(_activate(settings, model))
    else:
        model = asyncio.run(train_from_store(settings, sample, activate=not no_activate))
    if output is not None:
        output.write_text(json.dumps(model.to_json(), indent=1) + "\n")
    click.echo(
        f"model {model.version} estimated on {model.trained_on}; prior match weight {model.prior_weight:.2f}"
    )


async def _activate(settings: Settings, model: object) -> None:
    from toex_entity.training import activate

    await activate(settings, model)  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
