from alembic import context
from toex_common.migrations import run_env
from toex_oversight.adapters.tables import metadata

run_env(context, metadata)
