"""A real Keycloak (``kc.sh start-dev``) on loopback with the toex realm imported.

The server distribution comes from Maven Central through ``mvn dependency:copy`` and is cached under
``~/.cache/toex/keycloak`` (``$TOEX_CACHE_DIR/keycloak`` if set). Every running instance gets its own
home directory, because ``start-dev`` keeps its H2 database and re-augmented build under the home.
"""

from __future__ import annotations

import base64
import contextlib
import glob
import json
import os
import re
import shutil
import stat
import subprocess
import tempfile
import time
import zipfile
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

import httpx

from ._proc import (
    LOOPBACK,
    DevstackError,
    Progress,
    free_port,
    no_progress,
    port_open,
    process_alive,
    terminate_group,
    wait_until,
)

KEYCLOAK_VERSION = "26.7.3"
REALM = "toex"
DEMO_PASSWORD = "toex-demo"
CLI_CLIENT_ID = "toex-cli"
MIN_JAVA = 21


def _http_client() -> httpx.Client:
    # Loopback only: never route through an HTTP(S)_PROXY from the environment.
    return httpx.Client(trust_env=False, timeout=30)


class TokenError(RuntimeError):
    """Keycloak refused to issue a token; ``status`` and ``body`` are its answer."""

    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"token request failed with HTTP {status}: {body}")
        self.status = status
        self.body = body


def service_client_secret(client_id: str) -> str:
    """The local-only secret of a service's confidential client in deploy/keycloak/realm-toex.json."""
    return f"{client_id}-local-secret"


def cache_dir() -> Path:
    base = os.environ.get("TOEX_CACHE_DIR")
    if base:
        return Path(base) / "keycloak"
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "toex" / "keycloak"


def _java_version(java_home: Path) -> int | None:
    release = java_home / "release"
    try:
        text = release.read_text()
    except OSError:
        return None
    match = re.search(r'^JAVA_VERSION="(\d+)', text, re.MULTILINE)
    return int(match.group(1)) if match else None


def find_java_home(minimum: int = MIN_JAVA) -> Path:
    """$JAVA_HOME if new enough, else the newest Temurin JDK under /usr/lib/jvm, else the newest other JDK."""
    env_home = os.environ.get("JAVA_HOME")
    if env_home and (_java_version(Path(env_home)) or 0) >= minimum:
        return Path(env_home)
    homes = [Path(p) for p in sorted(glob.glob("/usr/lib/jvm/*")) if (Path(p) / "bin" / "java").exists()]
    for temurin in (True, False):
        found = [
            (version, home)
            for home in homes
            if home.name.startswith("temurin-") == temurin
            and (version := _java_version(home)) is not None
            and version >= minimum
        ]
        if found:
            return max(found, key=lambda item: item[0])[1]
    raise DevstackError(
        f"Keycloak {KEYCLOAK_VERSION} needs Java {minimum} or newer, and none was found "
        "(looked at $JAVA_HOME and /usr/lib/jvm/*): install a JDK >= 21 such as the Temurin JDK "
        "(Debian package temurin-21-jdk or temurin-25-jdk) and/or set JAVA_HOME to it"
    )


def _extract(zip_path: Path, target: Path) -> None:
    """Unzip keeping the executable bits (zipfile drops them), so bin/kc.sh stays runnable."""
    with zipfile.ZipFile(zip_path) as archive:
        for info in archive.infolist():
            path = Path(archive.extract(info, target))
            mode = (info.external_attr >> 16) & 0o777
            if mode and not info.is_dir():
                path.chmod(mode)
            elif not info.is_dir() and path.suffix == ".sh":
                path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


def ensure_distribution(version: str = KEYCLOAK_VERSION, progress: Progress = no_progress) -> Path:
    """Return the extracted distribution in the cache, fetching it with mvn the first time."""
    cache = cache_dir()
    dist = cache / f"keycloak-{version}"
    if (dist / "bin" / "kc.sh").exists():
        return dist
    cache.mkdir(parents=True, exist_ok=True)
    zip_path = cache / f"keycloak-quarkus-dist-{version}.zip"
    if not zip_path.exists():
        mvn = shutil.which("mvn")
        if not mvn:
            raise DevstackError(
                "Maven (mvn) is needed once to fetch the Keycloak server distribution: install it "
                f"(Debian: `apt-get install maven`), or put keycloak-quarkus-dist-{version}.zip into {cache}"
            )
        progress(f"  fetching Keycloak {version} (about 170 MB) with mvn into {cache}")
        with tempfile.TemporaryDirectory(dir=cache, prefix=".fetch-") as tmp:
            result = subprocess.run(
                [
                    mvn,
                    "-q",
                    "-B",
                    "dependency:copy",
                    f"-Dartifact=org.keycloak:keycloak-quarkus-dist:{version}:zip",
                    f"-DoutputDirectory={tmp}",
                ],
                capture_output=True,
                text=True,
                check=False,
                stdin=subprocess.DEVNULL,
            )
            fetched = Path(tmp) / zip_path.name
            if result.returncode != 0 or not fetched.exists():
                raise DevstackError(
                    f"mvn could not fetch org.keycloak:keycloak-quarkus-dist:{version}:zip:\n"
                    f"{result.stdout[-3000:]}{result.stderr[-3000:]}"
                )
            fetched.replace(zip_path)
    progress(f"  unpacking {zip_path.name}")
    with tempfile.TemporaryDirectory(dir=cache, prefix=".unpack-") as tmp:
        _extract(zip_path, Path(tmp))
        try:
            (Path(tmp) / dist.name).rename(dist)
        except OSError:
            # Another process unpacked it at the same time.
            if not (dist / "bin" / "kc.sh").exists():
                raise
    return dist


class Keycloak:
    """``kc.sh start-dev`` on 127.0.0.1:``port`` with its own ``home_dir`` and the toex realm imported.

    Use ``Keycloak.external(url)`` for an instance that is already running elsewhere on loopback.
    """

    def __init__(
        self,
        port: int = 0,
        home_dir: Path | str | None = None,
        realm_file: Path | str | None = None,
        *,
        admin_user: str = "admin",
        admin_password: str = "admin",
        version: str = KEYCLOAK_VERSION,
        heap: str = "-Xms64m -Xmx768m",
        log_file: Path | str | None = None,
        external_url: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self._external = external_url is not None
        # Extra environment of the server, e.g. the values a realm file's ${placeholders} take.
        self.env = dict(env or {})
        if external_url is not None:
            self.port = httpx.URL(external_url).port or 80
            self._base_url = external_url.rstrip("/")
        else:
            self.port = port or free_port()
            self._base_url = f"http://{LOOPBACK}:{self.port}"
        if home_dir:
            self.home_dir = Path(home_dir)
        elif self._external:
            self.home_dir = Path(os.devnull)
        else:
            self.home_dir = Path(tempfile.mkdtemp(prefix="toex-kc-"))
        self.realm_file = Path(realm_file) if realm_file else None
        self.admin_user = admin_user
        self.admin_password = admin_password
        self.version = version
        self.heap = heap
        self._log_file = Path(log_file) if log_file else None
        self._proc: subprocess.Popen[bytes] | None = None
        self.pid: int | None = None

    @classmethod
    def external(cls, base_url: str) -> Keycloak:
        """An already running Keycloak (e.g. `make up`'s); start() and stop() leave it alone."""
        return cls(external_url=base_url)

    # -- endpoints -------------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return self._base_url

    @property
    def issuer(self) -> str:
        return f"{self._base_url}/realms/{REALM}"

    @property
    def token_endpoint(self) -> str:
        return f"{self.issuer}/protocol/openid-connect/token"

    @property
    def jwks_uri(self) -> str:
        return f"{self.issuer}/protocol/openid-connect/certs"

    @property
    def admin_console(self) -> str:
        return f"{self._base_url}/admin/"

    @property
    def server_home(self) -> Path:
        return self.home_dir / f"keycloak-{self.version}"

    @property
    def log_file(self) -> Path:
        return self._log_file or self.home_dir / "keycloak.log"

    @property
    def is_external(self) -> bool:
        return self._external

    @property
    def running(self) -> bool:
        if self._external:
            return self.ready()
        if self._proc is not None:
            return self._proc.poll() is None
        return process_alive(self.pid)

    def ready(self) -> bool:
        try:
            with _http_client() as client:
                response = client.get(f"{self.issuer}/.well-known/openid-configuration", timeout=2)
        except httpx.HTTPError:
            return False
        return response.status_code == 200

    # -- lifecycle -------------------------------------------------------------------------------

    def ensure_distribution(self, progress: Progress = no_progress) -> Path:
        return ensure_distribution(self.version, progress)

    @property
    def _dev_build_cache(self) -> Path:
        return cache_dir() / f"keycloak-{self.version}-devbuild" / "quarkus"

    def _prepare_home(self, progress: Progress) -> None:
        if (self.server_home / "bin" / "kc.sh").exists():
            return
        dist = self.ensure_distribution(progress)
        progress(f"  preparing a Keycloak home in {self.server_home}")
        self.home_dir.mkdir(parents=True, exist_ok=True)
        # The jars under lib/lib (~175 MB) are only read: link them; copy the rest, which start-dev writes to.
        shutil.copytree(
            dist,
            self.server_home,
            symlinks=True,
            ignore=lambda directory, _names: ["lib"] if Path(directory) == dist else [],
        )
        (self.server_home / "lib").mkdir()
        for entry in (dist / "lib").iterdir():
            if entry.name == "lib":
                (self.server_home / "lib" / "lib").symlink_to(entry)
            elif entry.name == "quarkus" and self._dev_build_cache.is_dir():
                # Saves the ~15 s re-augmentation that start-dev otherwise does in every new home.
                shutil.copytree(self._dev_build_cache, self.server_home / "lib" / "quarkus")
            elif entry.is_dir():
                shutil.copytree(entry, self.server_home / "lib" / entry.name, symlinks=True)
            else:
                shutil.copy2(entry, self.server_home / "lib" / entry.name)

    def _keep_dev_build(self) -> None:
        """After a successful start-dev, cache its build (lib/quarkus) for the next new home."""
        target = self._dev_build_cache
        if self._external or target.is_dir():
            return
        with contextlib.suppress(OSError):
            target.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=target.parent, prefix=".tmp-") as tmp:
                shutil.copytree(self.server_home / "lib" / "quarkus", Path(tmp) / "quarkus")
                (Path(tmp) / "quarkus").rename(target)

    def start(self, timeout: float = 240.0, progress: Progress = no_progress, wait: bool = True) -> None:
        """Start and (with ``wait``) block until the toex realm's discovery document answers."""
        if self._external:
            if not self.ready():
                raise DevstackError(f"no Keycloak with realm {REALM!r} answers at {self._base_url}")
            return
        if self.running:
            return
        if port_open(self.port):
            raise DevstackError(f"Keycloak: port {LOOPBACK}:{self.port} is already in use by another process")
        java_home = find_java_home()
        self._prepare_home(progress)
        if self.realm_file is not None:
            import_dir = self.server_home / "data" / "import"
            import_dir.mkdir(parents=True, exist_ok=True)
            shutil.copy2(self.realm_file, import_dir / f"realm-{REALM}.json")
        env = {
            **os.environ,
            "JAVA_HOME": str(java_home),
            "PATH": f"{java_home / 'bin'}:{os.environ.get('PATH', '/usr/bin:/bin')}",
            "KC_BOOTSTRAP_ADMIN_USERNAME": self.admin_user,
            "KC_BOOTSTRAP_ADMIN_PASSWORD": self.admin_password,
            "JAVA_OPTS_KC_HEAP": self.heap,
            **self.env,
        }
        cmd = [
            str(self.server_home / "bin" / "kc.sh"),
            "start-dev",
            "--http-host",
            LOOPBACK,
            "--http-port",
            str(self.port),
            "--import-realm",
        ]
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_file.open("wb")
        try:
            self._proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=str(self.home_dir),
                start_new_session=True,  # kc.sh and java in one process group for stop()
                close_fds=True,
            )
        finally:
            log.close()
        self.pid = self._proc.pid
        if wait:
            self.wait_ready(timeout=timeout, progress=progress)

    def wait_ready(self, timeout: float = 240.0, progress: Progress = no_progress) -> None:
        try:
            wait_until(
                self.ready,
                timeout=timeout,
                what=f"Keycloak on {self._base_url}",
                alive=lambda: self.running,
                log=self.log_file,
                progress=progress,
                interval=0.5,
            )
        except DevstackError:
            self.stop()
            raise
        self._keep_dev_build()

    def stop(self, timeout: float = 30.0) -> None:
        if self._external:
            return
        if self.pid and self.running:
            terminate_group(self.pid, timeout=timeout, proc=self._proc)
        self._proc = None
        self.pid = None

    def restart(self, timeout: float = 240.0) -> None:
        self.stop()
        self.start(timeout=timeout)

    # -- tokens ----------------------------------------------------------------------------------

    def _token(self, form: dict[str, str]) -> str:
        with _http_client() as client:
            response = client.post(self.token_endpoint, data=form)
        if response.status_code != 200:
            raise TokenError(response.status_code, response.text)
        return str(response.json()["access_token"])

    def password_token(
        self, username: str, password: str = DEMO_PASSWORD, client_id: str = CLI_CLIENT_ID
    ) -> str:
        """Access token of a person, by the password grant through the public CLI client."""
        return self._token(
            {"grant_type": "password", "client_id": client_id, "username": username, "password": password}
        )

    def client_token(self, client_id: str, secret: str | None = None) -> str:
        """Access token of a service account, by the client-credentials grant."""
        return self._token(
            {
                "grant_type": "client_credentials",
                "client_id": client_id,
                "client_secret": secret if secret is not None else service_client_secret(client_id),
            }
        )

    def __enter__(self) -> Keycloak:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"Keycloak(base_url={self._base_url!r}, home_dir={str(self.home_dir)!r}, pid={self.pid})"


class DemoTokens(dict[str, str]):
    """Access tokens of demo users, for tests: `tokens["researcher.emsou"]`. Each is fetched on
    first use and again when less than a minute of its life is left, so a test session longer
    than the realm's access-token lifespan keeps working."""

    def __init__(self, keycloak: Keycloak, margin_seconds: float = 60.0) -> None:
        super().__init__()
        self._keycloak = keycloak
        self._margin = margin_seconds
        self._expires: dict[str, float] = {}

    def __getitem__(self, username: str) -> str:
        if self._expires.get(username, 0.0) - time.time() < self._margin:
            token = self._keycloak.password_token(username)
            super().__setitem__(username, token)
            self._expires[username] = token_expiry(token)
        return super().__getitem__(username)


def token_expiry(token: str) -> float:
    """The `exp` claim of a JWT (unverified: for scheduling a refresh, not for trust)."""
    payload = token.split(".")[1]
    return float(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["exp"])


def remove_home(home_dir: Path) -> None:
    """Delete an instance home (its H2 database and build), never the shared distribution cache."""
    with contextlib.suppress(FileNotFoundError):
        shutil.rmtree(home_dir)
