"""The local federation's plan, without starting it (tests/federation runs it): each installation's
ports, databases and settings, the hub's configuration on loopback, the CLI's directory."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from toex_cli.directory import parse
from toex_devstack.federation import (
    MEMBERS,
    Federation,
    FederationPorts,
    clashes,
    local_ports,
    loopback_leaf_listener,
    relocate,
)
from toex_devstack.nats import find_nats_server
from toex_devstack.stack import Ports, Stack, find_repo_root, load_services

ROOT = find_repo_root(Path(__file__).parent)
MEMBER = {m.name: m for m in MEMBERS}


def test_each_installation_has_its_own_port_range_as_the_readme_lists() -> None:
    ports = FederationPorts.fixed(local_ports(load_services(ROOT)))

    assert (ports.postgres, ports.keycloak, ports.leaf) == (5432, 8080, 51742)
    for name, n in (("hub", 1), ("EMSOU", 2), ("LONDON", 3)):
        member = ports.members[name]
        assert (member.nats, member.nats_monitor) == (50422 + n * 1000, 50822 + n * 1000)
        assert member.moved[50051] == 50051 + n * 1000  # tasking
        assert member.moved[50063] == 50063 + n * 1000  # the PND simulator
    every = [ports.postgres, ports.keycloak, ports.leaf] + [
        p for m in ports.members.values() for p in (m.nats, m.nats_monitor, *m.moved.values())
    ]
    assert len(every) == len(set(every))
    assert FederationPorts.from_dict(ports.as_dict()) == ports


def test_free_ports_are_all_different() -> None:
    ports = FederationPorts.free(local_ports(load_services(ROOT)))
    every = [ports.postgres, ports.keycloak, ports.leaf] + [
        p for m in ports.members.values() for p in (m.nats, m.nats_monitor, *m.moved.values())
    ]
    assert len(every) == len(set(every))


def test_a_service_moves_into_its_installations_range_with_its_sidecar_and_database() -> None:
    specs = {s.name: s for s in load_services(ROOT)}
    ports = FederationPorts.fixed(local_ports(specs.values()))

    pnd = relocate(specs["pnd"], MEMBER["EMSOU"], ports.members["EMSOU"].moved)

    assert (pnd.port, pnd.database, pnd.module) == (52053, "toex_emsou_pnd", "toex_pnd")
    assert dict(pnd.env)["TOEX_PND_URL"] == "http://127.0.0.1:52063"
    assert pnd.sidecar_args[pnd.sidecar_args.index("--port") + 1] == "52063"
    assert pnd.sidecar_health == "http://127.0.0.1:52063/health"
    hub = relocate(specs["tasking"], MEMBER["hub"], ports.members["hub"].moved)
    assert (hub.port, hub.database) == (51051, "toex_hub_tasking")


def test_the_hub_runs_its_generated_configuration_with_the_leaf_listener_on_loopback(tmp_path: Path) -> None:
    generated = (ROOT / "deploy/nats/conf/hub.conf").read_text()
    conf = tmp_path / "hub.conf"
    conf.write_text(loopback_leaf_listener(generated))

    text = conf.read_text()
    assert 'leafnodes {\n  host: "127.0.0.1"' in text
    assert text.replace('\n  host: "127.0.0.1"', "").endswith(generated)
    federation = Federation(ROOT, state_dir=tmp_path)
    state = {"secrets": federation._new_secrets()}
    env = {
        "TOEX_NATS_SERVER_NAME": "toex-hub",
        "TOEX_NATS_STORE_DIR": str(tmp_path / "store"),
        "TOEX_NATS_LEAF_PORT": "51742",
        **federation._nats_settings(state, ROOT / "deploy/nats/conf/hub.conf"),
    }
    # One password per region's leaf user, as the hub's Secret holds them; nats-server accepts it.
    assert len([k for k in env if k.startswith("TOEX_NATS_LEAF_") and k.endswith("_PASSWORD")]) == 10
    checked = subprocess.run(
        [find_nats_server(), "-t", "-c", str(conf)], env=env, capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_a_configuration_without_one_leafnodes_block_is_refused() -> None:
    with pytest.raises(Exception, match="leafnodes"):
        loopback_leaf_listener("port: 4222\n")


def test_the_directory_names_every_installations_services_and_the_cli_reads_it(tmp_path: Path) -> None:
    federation = Federation(ROOT, state_dir=tmp_path)
    ports = FederationPorts.fixed(local_ports(load_services(ROOT)))
    state = {
        "members": {
            m.name: {
                "services": {
                    s.name: {"port": s.port, "module": s.module, "database": s.database}
                    for s in federation.member_specs(m, ports)
                }
            }
            for m in MEMBERS
        }
    }
    tmp_path.mkdir(exist_ok=True)
    federation._write_directory(state)

    directory = parse(federation.directory_file, federation.directory_file.read_text())
    hub, emsou, london = (directory.named(n) for n in ("hub", "EMSOU", "LONDON"))
    assert hub is not None and emsou is not None and london is not None
    assert hub.address_of("oversight") == "127.0.0.1:51056"
    assert hub.address_of("pnd") is None  # the hub runs no PND service
    assert emsou.address_of("tasking") == "127.0.0.1:52051"
    assert london.address_of("safeguarding") == "127.0.0.1:53055"
    assert [r.value for r in directory.regions()] == ["EMSOU", "LONDON", "NATIONAL"]


def test_the_stack_and_the_federation_clash_only_on_the_same_ports(tmp_path: Path) -> None:
    stack = Stack(tmp_path, ports=Ports())
    assert clashes(stack, Federation(ROOT, state_dir=tmp_path / "fed"))
    free = FederationPorts.free(local_ports(load_services(ROOT)))
    assert not clashes(stack, Federation(ROOT, state_dir=tmp_path / "fed", ports=free))
