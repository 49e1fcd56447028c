"""The toex realm as a single host (docker-compose) imports it: no demo users, no committed secrets.

`realm-toex.json` is the local stack's and the training environment's realm: demo users with
known passwords, the CLI's password grant, and client secrets anyone can read. A single host is
a real installation for a small unit, so `docker-compose.yml` imports the realm this script makes
from it, `realm-toex-single-host.json` (committed, and checked to be current by
`make check-deploy`):

- only the service accounts are kept (people are created by the unit's administrator);
- the CLI logs in with the device authorization grant only (no password grant);
- each confidential client's secret is a placeholder that Keycloak fills from its environment at
  import (`${TOEX_TASKING_CLIENT_SECRET}` for toex-tasking), the same variables compose gives
  the services;
- the production password policy, and TLS required for all but private addresses.

    python deploy/keycloak/single_host_realm.py            # rewrite realm-toex-single-host.json
    python deploy/keycloak/single_host_realm.py --check    # exit 1 if it is out of date
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "realm-toex.json"
TARGET = HERE / "realm-toex-single-host.json"
PASSWORD_POLICY = "length(12) and notUsername and notEmail and passwordHistory(5)"


def secret_variable(client_id: str) -> str:
    """toex-tasking -> TOEX_TASKING_CLIENT_SECRET (the variable compose already uses)."""
    return "TOEX_" + client_id.removeprefix("toex-").upper().replace("-", "_") + "_CLIENT_SECRET"


def single_host(realm: dict[str, Any]) -> dict[str, Any]:
    out = json.loads(json.dumps(realm))
    out["users"] = [u for u in out.get("users", []) if u["username"].startswith("service-account-")]
    for client in out["clients"]:
        if client["clientId"] == "toex-cli":
            client["directAccessGrantsEnabled"] = False
        if "secret" in client:
            client["secret"] = "${" + secret_variable(client["clientId"]) + "}"
    out["passwordPolicy"] = PASSWORD_POLICY
    out["sslRequired"] = "external"
    return out


def render() -> str:
    return json.dumps(single_host(json.loads(SOURCE.read_text())), indent=2) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--check", action="store_true", help="exit 1 if the committed file is out of date")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        if not TARGET.exists() or TARGET.read_text() != text:
            print(
                f"{TARGET.name} is out of date with {SOURCE.name}: run python deploy/keycloak/{Path(__file__).name}",
                file=sys.stderr,
            )
            return 1
        return 0
    TARGET.write_text(text)
    print(f"wrote {TARGET}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
