"""`python -m toex_safeguarding migrate|serve|seed-demo`."""

from __future__ import annotations

from pathlib import Path

from toex_common.migrations import service_migrations
from toex_common.service_cli import service_cli

from toex_safeguarding.config import Settings


def migrations_dir() -> Path:
    return service_migrations("toex_safeguarding", __file__)


main = service_cli(
    "toex_safeguarding",
    __file__,
    Settings,
    description="The toex safeguarding service: referrals of potential victims, on statutory time.",
    seed_help="Draft a demo referral for EMSOU (safe to repeat).",
)


if __name__ == "__main__":
    main()
