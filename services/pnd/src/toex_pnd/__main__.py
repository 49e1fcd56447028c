"""`python -m toex_pnd migrate|serve|seed-demo`."""

from __future__ import annotations

from pathlib import Path

from toex_common.migrations import service_migrations
from toex_common.service_cli import service_cli

from toex_pnd.config import Settings


def migrations_dir() -> Path:
    return service_migrations("toex_pnd", __file__)


main = service_cli(
    "toex_pnd",
    __file__,
    Settings,
    description="The toex PND sync service: keeps the Police National Database complete and current.",
    serve_help="Serve gRPC on TOEX_GRPC_HOST:TOEX_GRPC_PORT until SIGTERM; the PND at TOEX_PND_URL.",
    seed_help="Record a few demo intelligence records (safe to repeat).",
)


if __name__ == "__main__":
    main()
