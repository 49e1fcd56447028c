"""The deployment checks catch what they claim to, and the chart renders what the issue asks for."""

from __future__ import annotations

import copy
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from toex_deploycheck import checks
from toex_deploycheck.natsfed import check_config
from toex_deploycheck.paths import CHART, NATS_CONF_DIR, VALUES_DIR

GOOD_DOCKERFILE = """\
ARG BASE=python:3.11.14-slim-bookworm
FROM ${BASE} AS build
RUN pip install --no-cache-dir uv==0.13.9
FROM ${BASE}
COPY --from=build /opt/toex /opt/toex
USER 10001:10001
CMD ["python", "-m", "toex_x", "serve"]
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "Dockerfile"
    path.write_text(text)
    return path


def test_a_good_dockerfile_passes(tmp_path: Path) -> None:
    assert checks.dockerfile_rules(_write(tmp_path, GOOD_DOCKERFILE)) == []


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda t: t.replace("FROM ${BASE}\nCOPY", "COPY"), "not multi-stage"),
        (lambda t: t.replace("python:3.11.14-slim-bookworm", "python:latest"), "not pinned"),
        (lambda t: t.replace("python:3.11.14-slim-bookworm", "python"), "not pinned"),
        (lambda t: t.replace("USER 10001:10001\n", ""), "sets no USER"),
        (lambda t: t.replace("USER 10001:10001", "USER root"), "runs as root"),
        (lambda t: t.replace("USER 10001", "RUN apt-get install -y gcc\nUSER 10001"), "build tooling"),
    ],
)
def test_dockerfile_rules_catch_each_violation(tmp_path: Path, change: Any, expected: str) -> None:
    problems = checks.dockerfile_rules(_write(tmp_path, change(GOOD_DOCKERFILE)))
    assert any(expected in p for p in problems), problems


def test_every_service_dockerfile_passes_the_rules() -> None:
    report = checks.check_dockerfiles()
    assert report.ok, report.problems
    assert any("services/tasking/Dockerfile" in note for note in report.notes)


def test_the_compose_file_is_valid_and_an_invalid_one_is_not(tmp_path: Path) -> None:
    assert checks.check_compose().ok
    data = yaml.safe_load(checks.COMPOSE_FILE.read_text())
    data["services"]["nats"]["volumes"] = "nats-data-as-a-string"
    data["services"]["postgres"]["healthcheck"]["intervall"] = "5s"
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(yaml.safe_dump(data))
    problems = checks.check_compose(broken).problems
    assert any("nats-data-as-a-string" in p for p in problems) and any("intervall" in p for p in problems), (
        problems
    )


def test_nats_server_rejects_a_broken_config(tmp_path: Path) -> None:
    good = (NATS_CONF_DIR / "emsou.conf").read_text()
    bad = tmp_path / "emsou.conf"
    bad.write_text(good.replace("jetstream {", "jetstream { max_memory_store: lots"))
    assert check_config(NATS_CONF_DIR / "emsou.conf").returncode == 0
    assert check_config(bad).returncode != 0


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict[str, Any]]]:
    report, docs = checks.check_helm()
    assert report.ok, report.problems
    return docs


def test_the_schema_check_catches_a_wrong_field(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = copy.deepcopy(rendered["emsou"])
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["grpcc"] = {}
    cluster = next(d for d in docs if d["kind"] == "Cluster")
    cluster["spec"]["storage"]["sise"] = "1Gi"
    problems = checks.validate_manifests({"emsou": docs}).problems
    assert any("grpcc" in p for p in problems) and any("sise" in p for p in problems), problems
    assert checks.validate_manifests({"emsou": rendered["emsou"]}).ok


def _pod_specs(docs: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    return [
        (f"{d['kind']}/{d['metadata']['name']}", d["spec"]["template"]["spec"])
        for d in docs
        if d["kind"] in {"Deployment", "StatefulSet", "Job"}
    ]


@pytest.mark.parametrize("installation", ["emsou", "london", "hub"])
def test_every_container_is_hardened(rendered: dict[str, list[dict[str, Any]]], installation: str) -> None:
    for where, pod in _pod_specs(rendered[installation]):
        assert pod["securityContext"]["runAsNonRoot"] is True, where
        for container in pod.get("initContainers", []) + pod["containers"]:
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True, where
            assert context["allowPrivilegeEscalation"] is False, where
            assert context["capabilities"]["drop"] == ["ALL"], where


def is_console(doc: dict[str, Any]) -> bool:
    return bool(doc["metadata"].get("labels", {}).get("app.kubernetes.io/component") == "console")


def test_console_is_one_web_pod_behind_the_ingress_with_its_secret_in_a_file(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    docs = rendered["emsou"]
    (deployment,) = [d for d in docs if d["kind"] == "Deployment" and is_console(d)]
    pod = deployment["spec"]["template"]["spec"]
    (serve,) = pod["containers"]
    env = {e["name"]: e.get("value") for e in serve["env"]}
    assert deployment["spec"]["replicas"] == 1 and serve["args"][-1] == "serve"
    assert serve["readinessProbe"]["httpGet"]["path"] == "/healthz"
    assert env["TOEX_CONSOLE_CLIENT_SECRET_FILE"] == "/etc/toex/console/client-secret"
    assert "TOEX_CONSOLE_CLIENT_SECRET" not in env and "TOEX_DATABASE_URL" not in env
    assert env["TOEX_PUBLIC_URL"].startswith("https://") and env["TOEX_COOKIE_SECURE"] == "true"
    assert env["TOEX_TASKING_ADDR"] == "toex-emsou-tasking:50051"
    assert (
        env["TOEX_ENTITY_ADDR"] == "toex-emsou-entity:50052"
        and env["TOEX_PND_ADDR"] == "toex-emsou-pnd:50053"
    )
    assert env["TOEX_OVERSIGHT_ADDR"] == "toex-emsou-oversight:50056"
    (policy,) = [d for d in docs if d["kind"] == "NetworkPolicy" and is_console(d)]
    # Browsers reach it through the ingress gateway only.
    assert all("podSelector" not in peer for peer in policy["spec"]["ingress"][0]["from"])
    (ingress,) = [d for d in docs if d["kind"] == "Ingress"]
    assert (
        ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["name"] == "toex-emsou-console"
    )


def test_services_have_grpc_probes_a_grpc_port_and_migrate_first(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    docs = rendered["emsou"]
    # The gRPC services (the web console has its own test below).
    deployments = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment" and not is_console(d)}
    assert sorted(deployments) == [
        f"toex-emsou-{s}" for s in sorted(["tasking", "entity", "pnd", "comms", "safeguarding", "oversight"])
    ]
    for name, deployment in deployments.items():
        pod = deployment["spec"]["template"]["spec"]
        serve = pod["containers"][0]
        port = serve["ports"][0]["containerPort"]
        assert serve["args"][-1] == "serve" and pod["initContainers"][0]["args"][-1] == "migrate", name
        # The service's port requires a client certificate; the kubelet probes the plaintext
        # health-only port instead.
        health = next(int(e["value"]) for e in serve["env"] if e["name"] == "TOEX_GRPC_HEALTH_PORT")
        assert health != port
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert serve[probe]["grpc"]["port"] == health, (name, probe)
        env = {e["name"] for e in serve["env"]}
        assert {"TOEX_DATABASE_URL", "TOEX_NATS_URL", "TOEX_OIDC_ISSUER"} <= env
        # Every service that calls another has a client of its own; oversight calls none.
        assert ("TOEX_SERVICE_CLIENT_SECRET" in env) != name.endswith("-oversight"), name
    services = [d for d in docs if d["kind"] == "Service" and d["metadata"]["name"] in deployments]
    assert services and all(s["spec"]["ports"][0]["name"] == "grpc" for s in services)


def test_services_run_as_the_runtime_role_over_verified_tls(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    docs = rendered["emsou"]
    for deployment in (d for d in docs if d["kind"] == "Deployment" and not is_console(d)):
        pod = deployment["spec"]["template"]["spec"]
        serve, migrate = pod["containers"][0], pod["initContainers"][0]
        serve_env = {e["name"]: e for e in serve["env"]}
        migrate_env = {e["name"]: e for e in migrate["env"]}
        name = deployment["metadata"]["name"]
        # The owner's credentials only where the migration runs.
        assert (
            "TOEX_MIGRATION_DATABASE_URL" in migrate_env and "TOEX_MIGRATION_DATABASE_URL" not in serve_env
        ), name
        assert not any(
            e.get("valueFrom", {}).get("secretKeyRef", {}).get("name", "").endswith("-db-app")
            for e in serve["env"]
        ), name
        assert serve_env["TOEX_DB_USER"]["valueFrom"]["secretKeyRef"]["name"].endswith("-db-runtime"), name
        assert serve_env["TOEX_DATABASE_URL"]["value"].endswith("?ssl=verify-full"), name
        assert serve_env["PGSSLROOTCERT"]["value"] == "/etc/toex/tls/ca.crt"
        for setting in ("CERT_FILE", "KEY_FILE", "CA_FILE"):
            assert f"TOEX_GRPC_TLS_{setting}" in serve_env and f"TOEX_NATS_TLS_{setting}" in serve_env, name
        assert "TOEX_GRPC_TLS_CLIENT_CA_FILE" in serve_env, name
        assert serve_env["TOEX_NATS_URL"]["value"].startswith("tls://"), name
        assert {"name": "tls", "mountPath": "/etc/toex/tls", "readOnly": True} in serve["volumeMounts"], name
    clusters = [d for d in docs if d["kind"] == "Cluster"]
    assert clusters and all(
        c["spec"]["managed"]["roles"][0]["name"] == c["spec"]["bootstrap"]["initdb"]["owner"] + "_app"
        and c["spec"]["certificates"]["serverTLSSecret"].endswith("-server-tls")
        for c in clusters
    )
    certificates = {d["metadata"]["name"]: d["spec"] for d in docs if d["kind"] == "Certificate"}
    assert "toex-emsou-tasking-tls" in certificates and "toex-emsou-tasking-db-server-tls" in certificates
    assert "toex-emsou-tasking" in certificates["toex-emsou-tasking-tls"]["dnsNames"]
    hub_nats = next(
        d["spec"]
        for d in rendered["hub"]
        if d["kind"] == "Certificate" and d["metadata"]["name"].endswith("nats-tls")
    )
    assert "nats.hub.toex.invalid" in hub_nats["dnsNames"]


def test_regions_join_the_hub_and_the_hub_sources_them(rendered: dict[str, list[dict[str, Any]]]) -> None:
    def nats_conf(installation: str) -> str:
        config = next(
            d
            for d in rendered[installation]
            if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-nats-config")
        )
        return str(config["data"]["nats.conf"])

    assert "domain: emsou" in nats_conf("emsou") and "TOEX_NATS_HUB_URL" in nats_conf("emsou")
    # The -tls twin: every connection and the leaf link with certificates of the national CA.
    assert "verify: true" in nats_conf("emsou") and "verify: true" in nats_conf("hub")
    assert '"toex.emsou.>"' in nats_conf("emsou") and '"toex.ersou.>"' not in nats_conf("emsou")
    assert "leaf-yh" in nats_conf("hub")
    job = next(d for d in rendered["hub"] if d["kind"] == "Job")
    assert (
        "--regions=emsou,ersou,rocuwm,london,tarian,se,sw,ne,nw,yh"
        in job["spec"]["template"]["spec"]["containers"][0]["args"]
    )
    # A region's one Job makes its HUB stream, sourcing what the hub addresses to it.
    [region_job] = [d for d in rendered["emsou"] if d["kind"] == "Job"]
    args = region_job["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[:2] == ["python", "/scripts/region_streams.py"] and "--region=emsou" in args
    [script] = [
        d["data"]
        for d in rendered["emsou"]
        if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-region-streams")
    ]
    assert "def region_hub_stream_config" in script["region_streams.py"]


def test_a_regions_entity_service_holds_the_deconfliction_keys_and_the_hubs_does_not(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    def entity(installation: str) -> dict[str, Any]:
        return next(
            d["spec"]["template"]["spec"]
            for d in rendered[installation]
            if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("-entity")
        )

    region = entity("emsou")
    env = {e["name"]: e.get("value") for e in region["containers"][0]["env"]}
    assert env["TOEX_DECONFLICTION_KEY_FILE"] == "/etc/toex/deconfliction/keys"
    [volume] = [v for v in region["volumes"] if v["name"] == "deconfliction-keys"]
    assert volume["secret"]["items"] == [{"key": "deconfliction-keys", "path": "keys"}]
    hub = entity("hub")
    assert "TOEX_DECONFLICTION_KEY_FILE" not in {e["name"] for e in hub["containers"][0]["env"]}
    assert not [v for v in hub["volumes"] if v["name"] == "deconfliction-keys"]
    # No other service of a region holds them.
    for d in rendered["emsou"]:
        if d["kind"] == "Deployment" and not d["metadata"]["name"].endswith("-entity"):
            assert not [
                v for v in d["spec"]["template"]["spec"]["volumes"] if v["name"] == "deconfliction-keys"
            ]


def test_the_realm_import_takes_client_secrets_from_the_secret(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    realm_import = next(d for d in rendered["hub"] if d["kind"] == "KeycloakRealmImport")
    secrets = {c["clientId"]: c.get("secret") for c in realm_import["spec"]["realm"]["clients"]}
    assert secrets["toex-tasking"] == "${TOEX_TASKING_SECRET}"
    assert not any(s and "local-secret" in s for s in secrets.values())
    assert (
        realm_import["spec"]["placeholders"]["TOEX_TASKING_SECRET"]["secret"]["key"]
        == "tasking-client-secret"
    )


def test_network_policies_admit_only_the_declared_callers(rendered: dict[str, list[dict[str, Any]]]) -> None:
    policies = {d["metadata"]["name"]: d["spec"] for d in rendered["emsou"] if d["kind"] == "NetworkPolicy"}
    callers_of = {
        name.removeprefix("toex-emsou-"): [
            peer["podSelector"]["matchLabels"]["toex.police.uk/service"]
            for peer in spec["ingress"][0]["from"]
            if "podSelector" in peer
        ]
        for name, spec in policies.items()
        if name.removeprefix("toex-emsou-") in {"tasking", "entity", "pnd", "comms", "safeguarding"}
    }
    assert callers_of == {
        "tasking": ["safeguarding", "console"],
        "entity": ["console"],
        "pnd": ["console"],
        "comms": ["console"],
        "safeguarding": ["console"],
    }
    assert "toex-emsou-default-deny" in policies
    safeguarding = next(
        d
        for d in rendered["emsou"]
        if d["kind"] == "Deployment" and d["metadata"]["name"] == "toex-emsou-safeguarding"
    )
    env = {
        e["name"]: e.get("value") for e in safeguarding["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["TOEX_TASKING_ADDRESS"] == "toex-emsou-tasking:50051"


def test_comms_keeps_its_datasets_on_a_volume_its_replicas_share(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    for installation in ("emsou", "london", "hub"):
        docs = rendered[installation]
        prefix = f"toex-{installation}"
        claims = {d["metadata"]["name"]: d for d in docs if d["kind"] == "PersistentVolumeClaim"}
        claim = claims[f"{prefix}-comms-data"]
        assert claim["spec"]["accessModes"] == ["ReadWriteMany"], installation
        assert claim["spec"]["resources"]["requests"]["storage"], installation
        assert claim["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep", installation
        deployments = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
        for name, deployment in deployments.items():
            pod = deployment["spec"]["template"]["spec"]
            serve = pod["containers"][0]
            env = {e["name"]: e.get("value") for e in serve["env"]}
            mounts = {m["name"]: m["mountPath"] for m in serve["volumeMounts"]}
            volumes = {v["name"]: v for v in pod["volumes"]}
            if name != f"{prefix}-comms":
                assert "TOEX_DATA_DIR" not in env and "data" not in volumes, name
                continue
            assert volumes["data"]["persistentVolumeClaim"]["claimName"] == f"{prefix}-comms-data"
            assert env["TOEX_DATA_DIR"] == mounts["data"] == "/var/lib/toex/data"
            # The migration needs no datasets.
            assert "data" not in {m["name"] for m in pod["initContainers"][0]["volumeMounts"]}
            assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"


def _template(tmp_path: Path, comms: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    site = tmp_path / "site.yaml"
    site.write_text(yaml.safe_dump({"services": {"comms": comms}}))
    return subprocess.run(
        [
            checks.ensure_helm(),
            "template",
            "toex-emsou",
            str(CHART),
            "-f",
            str(VALUES_DIR / "emsou.yaml"),
            "-f",
            str(site),
            "--kube-version",
            checks.KUBE_VERSION,
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )


def test_a_volume_one_node_mounts_is_refused_for_several_comms_replicas(tmp_path: Path) -> None:
    once = {"dataVolume": {"accessModes": ["ReadWriteOnce"], "storageClassName": "local-ssd"}}
    refused = _template(tmp_path, once)
    assert refused.returncode != 0 and "needs ReadWriteMany storage" in refused.stderr, refused.stderr

    single = _template(tmp_path, {**once, "replicas": 1, "hpa": {"enabled": False}})
    assert single.returncode == 0, single.stderr
    docs = [d for d in yaml.safe_load_all(single.stdout) if d]
    claim = next(d for d in docs if d["kind"] == "PersistentVolumeClaim")
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert claim["spec"]["storageClassName"] == "local-ssd"
    comms = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "toex-emsou-comms")
    # The old pod lets go of the volume before the new one mounts it.
    assert comms["spec"]["replicas"] == 1 and comms["spec"]["strategy"] == {"type": "Recreate"}
    assert checks.validate_manifests({"emsou": docs}).ok


@pytest.mark.parametrize(
    ("installation", "role", "region"),
    [("emsou", "region", "EMSOU"), ("london", "region", "LONDON"), ("hub", "hub", "NATIONAL")],
)
def test_every_service_knows_its_installation(
    rendered: dict[str, list[dict[str, Any]]], installation: str, role: str, region: str
) -> None:
    """TOEX_INSTALLATION from the chart's `role`, with TOEX_REGION: a region installation serves
    its region's resources, the hub the national team's (toex_kernel.installation)."""
    containers = [
        (where, container)
        for where, pod in _pod_specs(rendered[installation])
        for container in pod.get("initContainers", []) + pod["containers"]
        if where.startswith("Deployment/")
        and any(e["name"] == "TOEX_DATABASE_URL" for e in container.get("env", []))
    ]
    # Six services, each serving and migrating: national oversight runs everywhere (the reporter
    # at a region; the reporter and the national read model at the hub).
    assert len(containers) == 12
    assert any("oversight" in where for where, _ in containers)
    for where, container in containers:
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert (env["TOEX_INSTALLATION"], env["TOEX_REGION"]) == (role, region), where
