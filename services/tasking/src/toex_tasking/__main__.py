"""`python -m toex_tasking migrate|serve|seed-demo`."""

from __future__ import annotations

from pathlib import Path

from toex_common.migrations import service_migrations
from toex_common.service_cli import service_cli

from toex_tasking.config import Settings


def migrations_dir() -> Path:
    return service_migrations("toex_tasking", __file__)


main = service_cli(
    "toex_tasking",
    __file__,
    Settings,
    description="The toex tasking service: intelligence jobs, their lifecycle and events.",
    seed_help="Raise a few demo jobs (safe to repeat).",
)


if __name__ == "__main__":
    main()
