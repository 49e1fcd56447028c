"""Write services/<name>/Dockerfile (and its .dockerignore) for every service in the workspace.

    python docker/render.py            # write them
    python docker/render.py --check    # fail if one is missing or stale

The services, their modules and ports come from deploy/devstack/services.toml, the one list the
local stack also uses; a service is rendered once its directory exists under services/.
"""

from __future__ import annotations

import argparse
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HERE = ROOT / "docker"


def services() -> list[dict[str, object]]:
    with (ROOT / "deploy" / "devstack" / "services.toml").open("rb") as handle:
        listed = tomllib.load(handle)["service"]
    return [s for s in listed if (ROOT / "services" / str(s["name"]) / "pyproject.toml").exists()]


def render(service: dict[str, object]) -> dict[Path, str]:
    def fill(template: str) -> str:
        return (
            template.replace("@NAME@", str(service["name"]))
            .replace("@MODULE@", str(service["module"]))
            .replace("@PORT@", str(service["port"]))
        )

    base = ROOT / "services" / str(service["name"])
    return {
        base / "Dockerfile": fill((HERE / "service.Dockerfile.in").read_text()),
        base / "Dockerfile.dockerignore": fill((HERE / "service.dockerignore.in").read_text()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args(argv)
    stale = []
    for service in services():
        for path, text in render(service).items():
            if args.check:
                if not path.exists() or path.read_text() != text:
                    stale.append(str(path.relative_to(ROOT)))
            else:
                path.write_text(text)
    if stale:
        print("missing or stale (run python docker/render.py):", *stale, sep="\n  ", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
