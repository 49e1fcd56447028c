"""A federation on one machine, behind `make up-federation`: the national hub and two region
installations, EMSOU and LONDON, on loopback.

- Three nats-servers run the generated configurations (deploy/nats/conf/hub.conf, emsou.conf,
  london.conf) with the `TOEX_NATS_*` settings the chart gives them, joined as leaf nodes; then
  the stream jobs the chart runs: deploy/nats/hub_streams.py at the hub, region_streams.py in
  each region.
- One PostgreSQL holds every installation's databases (`toex_<installation>_<service>`, e.g.
  `toex_emsou_tasking`), one Keycloak signs for the whole federation (as the hub's does).
- Each installation's services run with TOEX_INSTALLATION and TOEX_REGION set, on a port range
  of its own; the regions' entity services hold the deconfliction key (generated into the state
  directory), the hub none.
- `installations.toml` there is the CLI's directory of the three installations.

State, data and logs live in `.devstack/federation/` (the local stack's are in `.devstack/`); the
two share PostgreSQL's and Keycloak's ports, so one of them runs at a time.
"""

from __future__ import annotations

import base64
import os
import re
import secrets
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx

from ._proc import (
    LOOPBACK,
    DevstackError,
    ensure_port_free,
    free_port,
    port_open,
    tail,
    terminate_groups,
    wait_until,
)
from .keycloak import DEMO_PASSWORD, Keycloak
from .nats import NatsServer
from .postgres import Postgres, ServiceDatabase
from .relay import LinkProxy
from .stack import (
    ComponentStatus,
    Echo,
    Place,
    Ports,
    ServiceSpec,
    Settings,
    Stack,
    load_services,
    service_environment,
)

HUB = "hub"
NATS_CONF_DIR = Path("deploy/nats/conf")
NATS_JOBS_DIR = Path("deploy/nats")
DIRECTORY_FILE = "installations.toml"
KEY_FILE = "deconfliction-keys"
# The services that a region installation starts only once the region's HUB stream exists: entity
# binds to it by name (it is the region stream job's, which sources the hub's consumer).
AFTER_STREAM_JOBS = frozenset({"entity"})
LEAF_TIMEOUT = 30.0
JOB_TIMEOUT = 120.0
# Services started at once: the machine has two cores, and each start is mostly Python imports.
START_WORKERS = 4
_NATS_VARIABLE = re.compile(r"\$(TOEX_NATS_[A-Z0-9_]+)")
_LOOPBACK_PORT = re.compile(r"127\.0\.0\.1:(\d+)")


@dataclass(frozen=True)
class Member:
    """One installation of the federation, named as the CLI's directory and a WRONG_INSTALLATION
    answer name it: `hub`, or the region's code."""

    name: str
    services: tuple[str, ...]
    # Its port range: 5<index>xxx (the local stack's 50xxx moved by 1000 per index).
    index: int

    @property
    def is_hub(self) -> bool:
        return self.name == HUB

    @property
    def kind(self) -> str:
        """TOEX_INSTALLATION."""
        return HUB if self.is_hub else "region"

    @property
    def region(self) -> str:
        """TOEX_REGION."""
        return "NATIONAL" if self.is_hub else self.name

    @property
    def token(self) -> str:
        """Its NATS configuration's name and JetStream domain, and its databases' prefix."""
        return self.name.lower()


# Each region's oversight service only reports (the value-free copies the hub's figures are
# built from: nothing else of a region's crosses to the hub).
REGION_SERVICES = ("tasking", "entity", "pnd", "comms", "safeguarding", "oversight")
# The hub runs what the federation needs of it: tasking (the national team's own jobs), entity
# (the fingerprint matcher), safeguarding (the national team's referrals: and none drafted for a
# region's findings, which never reach it) and oversight (every region's figures). Not pnd or
# comms: the national team's PND submissions and call data are not what the federation shows.
MEMBERS = (
    Member(HUB, ("tasking", "entity", "safeguarding", "oversight"), 1),
    Member("EMSOU", REGION_SERVICES, 2),
    Member("LONDON", REGION_SERVICES, 3),
)


@dataclass(frozen=True)
class MemberPorts:
    nats: int
    nats_monitor: int
    # Every loopback port services.toml names (services, sidecars) -> this installation's.
    moved: dict[int, int]


@dataclass(frozen=True)
class FederationPorts:
    postgres: int
    keycloak: int
    leaf: int  # the hub's leaf-node port
    members: dict[str, MemberPorts]

    @classmethod
    def fixed(cls, local: Iterable[int]) -> FederationPorts:
        """`make up-federation`'s: PostgreSQL and Keycloak as `make up`; per installation n (hub 1,
        EMSOU 2, LONDON 3), NATS 5n422 (monitoring 5n822) and the local stack's ports moved by
        n x 1000 (tasking 50051 -> 5n051, the PND simulator 50063 -> 5n063); the hub's leaf port
        51742."""
        local = sorted(set(local))
        return cls(
            postgres=5432,
            keycloak=8080,
            leaf=51742,
            members={
                m.name: MemberPorts(
                    nats=50422 + 1000 * m.index,
                    nats_monitor=50822 + 1000 * m.index,
                    moved={port: port + 1000 * m.index for port in local},
                )
                for m in MEMBERS
            },
        )

    @classmethod
    def free(cls, local: Iterable[int]) -> FederationPorts:
        """Free loopback ports for everything (tests); PostgreSQL's and Keycloak's too."""
        local = sorted(set(local))
        taken: set[int] = set()

        def pick() -> int:
            while (port := free_port()) in taken:
                pass
            taken.add(port)
            return port

        return cls(
            postgres=pick(),
            keycloak=pick(),
            leaf=pick(),
            members={m.name: MemberPorts(pick(), pick(), {port: pick() for port in local}) for m in MEMBERS},
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "postgres": self.postgres,
            "keycloak": self.keycloak,
            "leaf": self.leaf,
            "members": {
                name: {
                    "nats": mp.nats,
                    "nats_monitor": mp.nats_monitor,
                    "moved": {str(k): v for k, v in mp.moved.items()},
                }
                for name, mp in self.members.items()
            },
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FederationPorts:
        return cls(
            postgres=int(data["postgres"]),
            keycloak=int(data["keycloak"]),
            leaf=int(data["leaf"]),
            members={
                name: MemberPorts(
                    int(mp["nats"]), int(mp["nats_monitor"]), {int(k): int(v) for k, v in mp["moved"].items()}
                )
                for name, mp in data["members"].items()
            },
        )


def local_ports(specs: Iterable[ServiceSpec]) -> set[int]:
    """Every loopback port services.toml names: each service's, and those in its settings and
    sidecar (`127.0.0.1:PORT`)."""
    ports: set[int] = set()
    for spec in specs:
        ports.add(spec.port)
        for text in (spec.sidecar_health, *(value for _, value in spec.env)):
            ports.update(int(port) for port in _LOOPBACK_PORT.findall(text))
    return ports


def relocate(spec: ServiceSpec, member: Member, moved: Mapping[int, int]) -> ServiceSpec:
    """The service as `member` runs it: its ports moved into the installation's range (in its
    settings and sidecar too), its database named after the installation."""

    def move(text: str) -> str:
        return _LOOPBACK_PORT.sub(lambda m: f"{LOOPBACK}:{moved.get(int(m[1]), int(m[1]))}", text)

    def move_arg(arg: str) -> str:
        return str(moved[int(arg)]) if arg.isdigit() and int(arg) in moved else move(arg)

    return replace(
        spec,
        port=moved[spec.port],
        database=f"toex_{member.token}_{spec.database.removeprefix('toex_')}",
        env=tuple((key, move(value)) for key, value in spec.env),
        sidecar_args=tuple(move_arg(arg) for arg in spec.sidecar_args),
        sidecar_health=move(spec.sidecar_health),
    )


def loopback_leaf_listener(conf: str) -> str:
    """The hub's generated configuration with its leaf listener bound to 127.0.0.1 (the file's
    own listens on every interface, as a hub's must for the regions to reach it)."""
    if conf.count("leafnodes {") != 1:
        raise DevstackError(
            f"{NATS_CONF_DIR}/hub.conf has no single `leafnodes {{` block to bind to loopback"
        )
    return (
        f"# {NATS_CONF_DIR}/hub.conf with its leaf listener on {LOOPBACK} only (toex-devstack).\n"
        + conf.replace("leafnodes {", f'leafnodes {{\n  host: "{LOOPBACK}"', 1)
    )


def clashes(stack: Stack, federation: Federation) -> bool:
    """Whether the local stack (by its state) and the federation want the same PostgreSQL or
    Keycloak port (the tests' federation, on free ports, runs beside `make up`)."""
    theirs = stack._ports_from(stack.load_state())
    ours = federation._ports_from(federation.load_state())
    keycloak = theirs.keycloak == ours.keycloak and not federation.keycloak_url
    return theirs.postgres == ours.postgres or keycloak


class Federation(Stack):
    """Start, stop and report the local federation of one repository checkout."""

    def __init__(
        self,
        root: Path,
        *,
        ports: FederationPorts | None = None,
        state_dir: Path | None = None,
        keycloak_url: str | None = None,
        cuttable: Iterable[str] = (),
        extra_env: Mapping[str, str] | None = None,
        fsync: bool = True,
        echo: Echo = print,
    ) -> None:
        super().__init__(root, echo=echo)
        self.dir = state_dir or root / ".devstack" / "federation"
        self.logs = self.dir / "logs"
        self.state_file = self.dir / "state.json"
        self.fsync = fsync
        self._requested_ports = ports
        # A Keycloak that runs already (the tests', or one given to `up-federation`): used, never
        # started or stopped here. Kept in the state, so that `status` and `down` know it.
        keycloak_url = keycloak_url or self.load_state().get("keycloak_url")
        self.keycloak_url = keycloak_url.rstrip("/") if keycloak_url else None
        # Regions whose leaf link runs through a relay in this process, for a test to cut.
        self.cuttable = tuple(cuttable)
        self.links: dict[str, LinkProxy] = {}
        # Settings for every service (e.g. quicker outbox polls in tests).
        self.extra_env = dict(extra_env or {})

    # -- where things are ----------------------------------------------------------------------

    def federation_ports(self, state: Mapping[str, Any] | None = None) -> FederationPorts:
        saved = (state if state is not None else self.load_state()).get("federation_ports")
        if saved:
            return FederationPorts.from_dict(saved)
        return self._requested_ports or FederationPorts.fixed(local_ports(load_services(self.root)))

    def _infra(self, fed: FederationPorts) -> Ports:
        hub = fed.members[HUB]
        return Ports(
            nats=hub.nats, nats_monitor=hub.nats_monitor, postgres=fed.postgres, keycloak=fed.keycloak
        )

    def _ports_from(self, state: dict[str, Any]) -> Ports:
        return self._infra(self.federation_ports(state))

    @property
    def directory_file(self) -> Path:
        """The CLI's directory of the federation's installations (TOEX_INSTALLATIONS)."""
        return self.dir / DIRECTORY_FILE

    @property
    def key_file(self) -> Path:
        return self.dir / KEY_FILE

    def issuer(self, ports: Ports) -> str:
        return f"{self.keycloak_url or f'http://{LOOPBACK}:{ports.keycloak}'}/realms/toex"

    def nats_url(self, member: str, user: str = "services", state: Mapping[str, Any] | None = None) -> str:
        """`nats://user:password@127.0.0.1:port` of an installation's server (`services`, `admin`)."""
        state = state if state is not None else self.load_state()
        password = state["secrets"][user]
        return f"nats://{user}:{password}@{LOOPBACK}:{self.federation_ports(state).members[member].nats}"

    def service_address(self, member: str, service: str, state: Mapping[str, Any] | None = None) -> str:
        state = state if state is not None else self.load_state()
        entry = state["members"][member]["services"][service]
        return f"{LOOPBACK}:{entry['port']}"

    def member_specs(self, member: Member, fed: FederationPorts) -> list[ServiceSpec]:
        specs = {spec.name: spec for spec in load_services(self.root)}
        return [relocate(specs[name], member, fed.members[member.name].moved) for name in member.services]

    def _keycloak(self, ports: Ports) -> Keycloak:
        if self.keycloak_url:
            return Keycloak.external(self.keycloak_url)
        return super()._keycloak(ports)

    def _start_keycloak(self, state: dict[str, Any], ports: Ports) -> Keycloak | None:
        if self.keycloak_url:
            self._keycloak(ports).start()  # checks that it answers
            return None
        return super()._start_keycloak(state, ports)

    # -- up ----------------------------------------------------------------------------------------

    def up(self) -> int:
        if self._other_running():
            return 1
        state = self.load_state()
        fed = self.federation_ports(state)
        ports = self._infra(fed)
        if state and not self.cuttable and self._all_up(state):
            self.echo("The local federation is already running.")
            self._print_endpoints(state)
            return 0
        state.update(
            root=str(self.root),
            ports=ports.__dict__,
            federation_ports=fed.as_dict(),
            keycloak_url=self.keycloak_url or "",
        )
        state.setdefault("secrets", self._new_secrets())
        state.setdefault("nats", {})
        state.setdefault("members", {})
        for member in MEMBERS:
            state["members"].setdefault(member.name, {}).setdefault("services", {})
        self.logs.mkdir(parents=True, exist_ok=True)
        self._save_state(state)

        postgres = self._start_shared(state, ports, lambda: self._start_brokers(state, fed))
        if postgres is None:
            return 1
        self._write_key_file()

        started = time.monotonic()
        # A hub stream's source of a region stream that does not exist yet is retried with a
        # growing backoff: the regions' services make their streams first, then the hub's stream
        # job adds its sources, then the regions' stream jobs make their HUB streams (which source
        # the hub's consumers), which the regions' entity services bind to.
        first = [(m, s) for m in MEMBERS for s in self.member_specs(m, fed) if not self._after_jobs(m, s)]
        later = [(m, s) for m in MEMBERS for s in self.member_specs(m, fed) if self._after_jobs(m, s)]
        failures = self._start_services(state, postgres, ports, first)
        try:
            self._stream_jobs(state, fed)
        except DevstackError as exc:
            self.echo(f"ERROR: {exc}")
            return 1
        failures += self._start_services(state, postgres, ports, later)
        self.echo(f"Services started in {time.monotonic() - started:.0f} s")
        self._write_directory(state)
        self._print_endpoints(state)
        if failures:
            self.echo(f"{failures} service(s) did not start; see the messages above.")
            return 1
        return 0

    def _other_running(self) -> bool:
        stack = Stack(self.root)
        if clashes(stack, self) and stack.running():
            self.echo(
                "The local stack (`make up`) is running and holds PostgreSQL's and Keycloak's ports: "
                "stop it with `make down` first."
            )
            return True
        return False

    @staticmethod
    def _after_jobs(member: Member, spec: ServiceSpec) -> bool:
        return not member.is_hub and spec.name in AFTER_STREAM_JOBS

    def _new_secrets(self) -> dict[str, Any]:
        """Passwords of the NATS users (as the installation's Secret holds them), made once. Each
        starts with a letter: nats-server reads a `$VARIABLE`'s value as a configuration token, so
        one starting with a digit or `-` is taken for a number and refused."""
        return {user: "p" + secrets.token_urlsafe(18) for user in ("sys", "admin", "services", "leaf")}

    def _nats_settings(self, state: Mapping[str, Any], conf: Path) -> dict[str, str]:
        """Every TOEX_NATS_* variable the configuration reads that is a password, from the state
        (the hub's reads one per region of the ten: each leaf-<region> user gets its own)."""
        values = {
            "TOEX_NATS_SYS_PASSWORD": state["secrets"]["sys"],
            "TOEX_NATS_ADMIN_PASSWORD": state["secrets"]["admin"],
            "TOEX_NATS_SERVICES_PASSWORD": state["secrets"]["services"],
        }
        for name in _NATS_VARIABLE.findall(conf.read_text()):
            if name.startswith("TOEX_NATS_LEAF_") and name.endswith("_PASSWORD"):
                values[name] = self._leaf_password(state, name.split("_")[3].lower())
        return values

    @staticmethod
    def _leaf_password(state: Mapping[str, Any], region: str) -> str:
        return f"{state['secrets']['leaf']}-{region}"

    def _start_brokers(self, state: dict[str, Any], fed: FederationPorts) -> None:
        """The hub, then each region joined to it as a leaf node; then wait for the links."""
        for member in MEMBERS:
            self._start_broker(state, member, fed)
        hub = fed.members[HUB]
        regions = len(MEMBERS) - 1
        wait_until(
            lambda: self.leaf_links(hub.nats_monitor) >= regions,
            timeout=LEAF_TIMEOUT,
            what=f"{regions} leaf-node links at the hub",
            log=self.logs / "nats-hub.log",
            progress=self.echo,
            interval=0.2,
        )

    @staticmethod
    def leaf_links(monitor_port: int) -> int:
        """How many leaf-node links the server with this monitoring port has (the hub: one a region)."""
        try:
            with httpx.Client(trust_env=False, timeout=2) as client:
                return int(client.get(f"http://{LOOPBACK}:{monitor_port}/leafz").json().get("leafnodes", 0))
        except (httpx.HTTPError, ValueError):
            return 0

    def _start_broker(self, state: dict[str, Any], member: Member, fed: FederationPorts) -> None:
        ports = fed.members[member.name]
        entry = state["nats"].get(member.name)
        if self._ours(entry, "nats-server") and port_open(ports.nats):
            self.echo(f"NATS of {member.name} already running on nats://{LOOPBACK}:{ports.nats}")
            return
        ensure_port_free(ports.nats, f"NATS of {member.name}")
        ensure_port_free(ports.nats_monitor, f"NATS monitoring of {member.name}")
        generated = self.root / NATS_CONF_DIR / f"{member.token}.conf"
        store = self.dir / "nats" / member.token
        env = {
            "TOEX_NATS_SERVER_NAME": f"toex-{member.token}",
            "TOEX_NATS_STORE_DIR": str(store),
            **self._nats_settings(state, generated),
        }
        conf = generated
        if member.is_hub:
            ensure_port_free(fed.leaf, "the hub's leaf-node port")
            conf = self.dir / "nats" / "hub.conf"
            conf.parent.mkdir(parents=True, exist_ok=True)
            conf.write_text(loopback_leaf_listener(generated.read_text()))
            env["TOEX_NATS_LEAF_PORT"] = str(fed.leaf)
        else:
            port = fed.leaf
            if member.name in self.cuttable:
                self.links[member.name] = LinkProxy(fed.leaf)
                port = self.links[member.name].port
            password = self._leaf_password(state, member.token)
            env["TOEX_NATS_HUB_URL"] = f"nats-leaf://leaf-{member.token}:{password}@{LOOPBACK}:{port}"
        server = NatsServer(
            port=ports.nats,
            store_dir=store,
            monitor_port=ports.nats_monitor,
            log_file=self.logs / f"nats-{member.token}.log",
            config=conf,
            env=env,
        )
        self.echo(f"Starting NATS of {member.name} ({conf.name}) on nats://{LOOPBACK}:{ports.nats} ...")
        server.start(progress=self.echo)
        self._remember(
            state,
            state["nats"],
            member.name,
            {"pid": server.pid, "port": server.port, "config": str(conf), "log": str(server.log_file)},
        )

    def _stream_jobs(self, state: Mapping[str, Any], fed: FederationPorts) -> None:
        """What the chart's Jobs run after an install: the hub's, then each region's."""
        regions = [m for m in MEMBERS if not m.is_hub]
        self._job(
            "hub-streams",
            "hub_streams.py",
            "--url",
            self.nats_url(HUB, "admin", state),
            "--regions",
            ",".join(m.token for m in regions),
        )
        for member in regions:
            self._job(
                f"{member.token}-streams",
                "region_streams.py",
                "--url",
                self.nats_url(member.name, "admin", state),
                "--region",
                member.token,
            )

    def _job(self, name: str, script: str, *args: str) -> None:
        log = self.logs / f"{name}.log"
        self.echo(f"Running {NATS_JOBS_DIR / script} ({name}) ...")
        result = subprocess.run(
            [sys.executable, str(self.root / NATS_JOBS_DIR / script), *args],
            cwd=self.root,
            capture_output=True,
            text=True,
            check=False,
            stdin=subprocess.DEVNULL,
            timeout=JOB_TIMEOUT,
        )
        log.write_text(result.stdout + result.stderr)
        if result.returncode != 0:
            raise DevstackError(f"{script} ({name}) failed (exit {result.returncode}):\n{tail(log)}")

    def _write_key_file(self) -> None:
        """The regions' deconfliction key (one key, as every region holds the same), made once."""
        if self.key_file.exists():
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        key = base64.b64encode(secrets.token_bytes(32)).decode()
        fd = os.open(self.key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write("# The local federation's deconfliction key (toex-devstack); gone at `down`.\n")
            handle.write(f"devstack-1 {key}\n")

    def _settings(
        self,
        member: Member,
        spec: ServiceSpec,
        siblings: list[ServiceSpec],
        state: Mapping[str, Any],
        ports: Ports,
    ) -> Settings:
        def settings(database: ServiceDatabase) -> dict[str, str]:
            env = service_environment(
                spec,
                database_url=database.runtime_url,
                migration_database_url=database.migration_url,
                nats_url=self.nats_url(member.name, "services", state),
                oidc_issuer=self.issuer(ports),
            )
            env.update(TOEX_INSTALLATION=member.kind, TOEX_REGION=member.region)
            # Where the installation's other services answer (safeguarding calls its tasking).
            env.update({f"TOEX_{s.name.upper()}_ADDRESS": f"{LOOPBACK}:{s.port}" for s in siblings})
            if not member.is_hub and spec.name == "entity":
                env["TOEX_DECONFLICTION_KEY_FILE"] = str(self.key_file)
            env.update(self.extra_env)
            return env

        return settings

    def _start_services(
        self,
        state: dict[str, Any],
        postgres: Postgres,
        ports: Ports,
        services: list[tuple[Member, ServiceSpec]],
    ) -> int:
        """Start services a few at a time; how many failed."""
        fed = self.federation_ports(state)

        def start(item: tuple[Member, ServiceSpec]) -> bool:
            member, spec = item
            siblings = self.member_specs(member, fed)
            place = Place(
                state["members"][member.name]["services"],
                self.logs / member.token,
                self.dir / member.token,
                label=f"{member.name}/",
            )
            settings = self._settings(member, spec, siblings, state, ports)
            return self._launch(state, place, spec, postgres, settings, seed=False)

        with ThreadPoolExecutor(max_workers=START_WORKERS) as pool:
            return sum(0 if ok else 1 for ok in pool.map(start, services))

    def _write_directory(self, state: Mapping[str, Any]) -> None:
        lines = [
            "# The local federation's installations (toex-devstack up-federation), for the CLI:",
            f"#   TOEX_INSTALLATIONS={self.directory_file} toex jobs list --region -",
            "",
        ]
        for member in MEMBERS:
            entries = state["members"][member.name]["services"]
            lines.append(f"[installations.{member.name}]")
            lines += [
                f'{name} = "{LOOPBACK}:{entries[name]["port"]}"'
                for name in member.services
                if name in entries
            ]
            lines.append("")
        self.directory_file.write_text("\n".join(lines))

    # -- down ------------------------------------------------------------------------------------

    def down(self) -> int:
        state = self.load_state()
        if not state:
            self.echo(f"The local federation is not running (no {self.state_file}).")
            return 0
        ports = self._ports_from(state)
        everything = {
            f"{member}/{name}": entry
            for member, held in state.get("members", {}).items()
            for name, entry in held.get("services", {}).items()
        }
        self._stop_services(everything)
        self._stop_shared(state, ports)
        pids = []
        for member, entry in state.get("nats", {}).items():
            pid = self._ours(entry, "nats-server")
            if pid:
                self.echo(f"Stopping NATS of {member} (pid {pid}) ...")
                pids.append(pid)
        terminate_groups(pids, timeout=15)
        for link in self.links.values():
            link.cut()
        self._remove_data(
            state,
            [
                self.dir / "nats",
                self.dir / "pg",
                *(self.dir / m.token for m in MEMBERS),
            ],
        )
        for path in (self.key_file, self.directory_file):
            path.unlink(missing_ok=True)
        self.echo(f"The local federation is stopped and its data removed (logs kept in {self.logs}).")
        return 0

    # -- status ----------------------------------------------------------------------------------

    def status(self) -> list[ComponentStatus]:
        state = self.load_state()
        fed = self.federation_ports(state)
        ports = self._infra(fed)
        result = []
        for member in MEMBERS:
            mp = fed.members[member.name]
            pid = self._ours(state.get("nats", {}).get(member.name), "nats-server")
            up = bool(pid) and port_open(mp.nats)
            note = f"leaf links: {self.leaf_links(mp.nats_monitor)}" if up and member.is_hub else ""
            result.append(
                ComponentStatus(f"nats/{member.name}", up, pid, f"nats://{LOOPBACK}:{mp.nats}", note)
            )
        shared, _ = self._shared_status(state, ports)
        if self.keycloak_url:
            keycloak = self._keycloak(ports)
            shared[-1] = ComponentStatus("keycloak", keycloak.ready(), None, keycloak.base_url, "not ours")
        result += shared
        for member in MEMBERS:
            entries = state.get("members", {}).get(member.name, {}).get("services", {})
            for spec in self.member_specs(member, fed):
                result.append(
                    self._service_status(
                        state, ports, spec, entries.get(spec.name), f"{member.name}/{spec.name}"
                    )
                )
        return result

    def _all_up(self, state: dict[str, Any], specs: list[ServiceSpec] | None = None) -> bool:
        return all(item.up for item in self.status())

    def _print_endpoints(self, state: dict[str, Any], specs: list[ServiceSpec] | None = None) -> None:
        fed = self.federation_ports(state)
        ports = self._infra(fed)
        self.echo("")
        self.echo("toex local federation (loopback only):")
        for member in MEMBERS:
            mp = fed.members[member.name]
            what = "the national hub" if member.is_hub else f"region installation {member.name}"
            self.echo(
                f"  {member.name:<7} {what}: NATS nats://{LOOPBACK}:{mp.nats} (monitoring :{mp.nats_monitor})"
            )
            for spec in self.member_specs(member, fed):
                running = spec.name in state["members"][member.name]["services"]
                self.echo(
                    f"          {spec.name:<13} {LOOPBACK}:{spec.port}  database {spec.database}"
                    + ("" if running else "  [not started]")
                )
        self.echo(f"  hub leaf-node port {LOOPBACK}:{fed.leaf}")
        self.echo(f"  PostgreSQL       postgresql://toex:toex@{LOOPBACK}:{ports.postgres}/postgres")
        self.echo(f"  Keycloak         issuer {self.issuer(ports)}")
        self.echo(f"  logs             {self.logs}")
        self.echo("")
        self.echo(f"The CLI's directory of these installations: {self.directory_file}")
        self.echo(f"  export TOEX_INSTALLATIONS={self.directory_file}")
        self.echo(f"  toex login --username national_coordinator.national   # password {DEMO_PASSWORD}")
        self.echo('  toex --purpose "weekly return" jobs list --region -     # asks every installation')
        self.echo("  toex jobs show EMSOU/<id>                               # goes to EMSOU's installation")
        self.echo('  toex --purpose "weekly review" national overview       # the hub\'s oversight')
        self.echo("Stop it with `make down` (or `uv run toex-devstack down`).")
