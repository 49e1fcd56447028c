"""`python -m toex_oversight migrate|serve`."""

from __future__ import annotations

from pathlib import Path

from toex_common.migrations import service_migrations
from toex_common.service_cli import service_cli

from toex_oversight.config import Settings


def migrations_dir() -> Path:
    return service_migrations("toex_oversight", __file__)


main = service_cli(
    "toex_oversight",
    __file__,
    Settings,
    description="The toex national oversight service: every region's work in figures, at the hub.",
)


if __name__ == "__main__":
    main()
