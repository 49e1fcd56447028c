"""Where the deployment artefacts live in the repository."""

from __future__ import annotations

import os
from pathlib import Path


def _repo_root() -> Path:
    override = os.environ.get("TOEX_REPO_ROOT")
    if override:
        return Path(override)
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "deploy" / "helm").is_dir() and (parent / "pyproject.toml").exists():
            return parent
    return Path.cwd()


ROOT = _repo_root()
CHART = ROOT / "deploy" / "helm" / "toex"
VALUES_DIR = ROOT / "deploy" / "helm" / "values"
NATS_DIR = ROOT / "deploy" / "nats"
NATS_CONF_DIR = NATS_DIR / "conf"
COMPOSE_FILE = ROOT / "docker-compose.yml"
SERVICES_DIR = ROOT / "services"
DOCKER_DIR = ROOT / "docker"

REGIONS = ("emsou", "ersou", "rocuwm", "london", "tarian", "se", "sw", "ne", "nw", "yh")
# The eleven installations: ten regions and the national hub.
INSTALLATIONS = (*REGIONS, "hub")
