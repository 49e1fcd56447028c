"""A throwaway PostgreSQL cluster on loopback, for tests and the local stack.

The cluster has one superuser, ``toex`` with password ``toex``, reachable only over TCP on
127.0.0.1 (no Unix socket: socket paths have a length limit that deep temporary directories break).
As root, initdb and postgres refuse to run, so the cluster belongs to the system user ``toexpg``.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from ._proc import (
    LOOPBACK,
    PG_SYSTEM_USER,
    DevstackError,
    Progress,
    ensure_pg_system_user,
    free_port,
    is_root,
    no_progress,
    port_open,
    process_alive,
    tail,
    wait_until,
)

USER = "toex"
PASSWORD = "toex"

_DB_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def find_pg_bindir() -> Path:
    """Directory of initdb/pg_ctl/psql: $TOEX_PG_BINDIR, else the newest Debian install, else pg_config."""
    override = os.environ.get("TOEX_PG_BINDIR")
    if override:
        return Path(override)

    def version(path: str) -> tuple[int, ...]:
        parts = Path(path).parent.name.split(".")
        return tuple(int(p) for p in parts if p.isdigit())

    candidates = [p for p in glob.glob("/usr/lib/postgresql/*/bin") if (Path(p) / "initdb").exists()]
    if candidates:
        return Path(max(candidates, key=version))
    pg_config = shutil.which("pg_config")
    if pg_config:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False).stdout
        bindir = Path(out.strip())
        if (bindir / "initdb").exists():
            return bindir
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).parent
    raise DevstackError(
        "PostgreSQL server binaries (initdb, pg_ctl) not found: install them "
        "(Debian: `apt-get install postgresql`) or set TOEX_PG_BINDIR"
    )


def check_database_name(name: str) -> str:
    if not _DB_NAME.match(name):
        raise ValueError(f"database name {name!r}: use lower-case letters, digits and _ (max 63)")
    return name


@dataclass(frozen=True)
class ServiceDatabase:
    """A service's database as production has it: one URL to migrate with, one to run with."""

    name: str
    migration_url: str
    runtime_url: str


class Postgres:
    """A PostgreSQL cluster under ``data_dir`` (``pgdata/`` plus ``postgres.log``), listening on 127.0.0.1.

    ``fsync=False`` trades durability for speed: only for test clusters that are thrown away.
    """

    def __init__(
        self,
        port: int = 0,
        data_dir: Path | str | None = None,
        *,
        fsync: bool = True,
        max_connections: int = 200,
        shared_buffers: str = "64MB",
        tls: tuple[Path, Path] | None = None,
    ) -> None:
        self.port = port or free_port()
        self.data_dir = Path(data_dir) if data_dir else Path(tempfile.mkdtemp(prefix="toex-pg-"))
        self.fsync = fsync
        self.max_connections = max_connections
        self.shared_buffers = shared_buffers
        # (certificate, key) PEM files: the server also accepts TLS with this certificate, as a
        # production database does, so clients can verify it (sslmode=verify-full).
        self.tls = tls
        self.bindir = find_pg_bindir()

    # -- paths and endpoints ------------------------------------------------------------------

    @property
    def pgdata(self) -> Path:
        return self.data_dir / "pgdata"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "postgres.log"

    @property
    def pid(self) -> int | None:
        try:
            first = (self.pgdata / "postmaster.pid").read_text().split("\n", 1)[0]
            return int(first)
        except (OSError, ValueError):
            return None

    @property
    def running(self) -> bool:
        return process_alive(self.pid) and port_open(self.port)

    def url(self, name: str, *, user: str = USER, password: str = PASSWORD) -> str:
        """SQLAlchemy asyncpg URL of database ``name`` (as the superuser unless ``user`` is given)."""
        return (
            f"postgresql+asyncpg://{check_database_name(user)}:{password}@{LOOPBACK}:{self.port}/"
            f"{check_database_name(name)}"
        )

    def dsn(self, name: str = "postgres") -> str:
        """Plain libpq/asyncpg URL of database ``name``."""
        return f"postgresql://{USER}:{PASSWORD}@{LOOPBACK}:{self.port}/{check_database_name(name)}"

    # -- running the binaries -----------------------------------------------------------------

    def _run_as_owner(self, args: list[str], *, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        kwargs: dict[str, object] = {}
        if is_root():
            owner = ensure_pg_system_user()
            kwargs = {"user": owner.pw_uid, "group": owner.pw_gid, "extra_groups": []}
        env = {**os.environ, "LC_ALL": "C", "LANG": "C"}
        env.pop("PGDATA", None)
        return subprocess.run(  # type: ignore[call-overload]
            args,
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout,
            cwd=str(self.data_dir),
            env=env,
            stdin=subprocess.DEVNULL,
            **kwargs,
        )

    def _prepare_dir(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if not is_root():
            return
        owner = ensure_pg_system_user()
        os.chown(self.data_dir, owner.pw_uid, owner.pw_gid)
        probe = self._run_as_owner(["test", "-w", str(self.data_dir)])
        if probe.returncode != 0:
            raise DevstackError(
                f"PostgreSQL runs as the system user {PG_SYSTEM_USER!r} when started by root, but that user "
                f"cannot reach {self.data_dir} (a parent directory is not world-searchable); "
                "use a data directory outside it (e.g. under /tmp) or run as an ordinary user"
            )

    def _initdb(self) -> None:
        pwfile = self.data_dir / ".pwfile"
        pwfile.write_text(PASSWORD + "\n")
        if is_root():
            owner = ensure_pg_system_user()
            os.chown(pwfile, owner.pw_uid, owner.pw_gid)
        args = [
            str(self.bindir / "initdb"),
            "-D",
            str(self.pgdata),
            "-U",
            USER,
            f"--pwfile={pwfile}",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "-E",
            "UTF8",
            "--locale=C",
        ]
        if not self.fsync:
            args.append("--no-sync")
        try:
            result = self._run_as_owner(args)
        finally:
            pwfile.unlink(missing_ok=True)
        if result.returncode != 0:
            raise DevstackError(f"initdb failed in {self.pgdata}:\n{result.stdout}\n{result.stderr}")
        conf = self.pgdata / "postgresql.conf"
        with conf.open("a") as f:
            f.write("\n# toex devstack settings (rewritten at each start)\ninclude_if_exists = 'toex.conf'\n")

    def _write_settings(self) -> None:
        settings = {
            "listen_addresses": f"'{LOOPBACK}'",
            "port": str(self.port),
            "unix_socket_directories": "''",
            "max_connections": str(self.max_connections),
            "shared_buffers": f"'{self.shared_buffers}'",
            "log_min_messages": "warning",
            "log_line_prefix": "'%m [%p] %q%u@%d '",
        }
        if not self.fsync:
            settings.update(fsync="off", synchronous_commit="off", full_page_writes="off")
        if self.tls:
            settings.update(ssl="on", ssl_cert_file="'toex-server.crt'", ssl_key_file="'toex-server.key'")
            for source, name in zip(self.tls, ("toex-server.crt", "toex-server.key"), strict=True):
                copied = self.pgdata / name
                shutil.copyfile(source, copied)
                copied.chmod(0o600)
                if is_root():
                    owner = ensure_pg_system_user()
                    os.chown(copied, owner.pw_uid, owner.pw_gid)
        target = self.pgdata / "toex.conf"
        target.write_text("".join(f"{k} = {v}\n" for k, v in settings.items()))
        if is_root():
            owner = ensure_pg_system_user()
            os.chown(target, owner.pw_uid, owner.pw_gid)

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self, timeout: float = 60.0, progress: Progress = no_progress) -> None:
        """initdb on first start, then start the server and wait until it accepts connections."""
        if self.running:
            return
        self._prepare_dir()
        if not (self.pgdata / "PG_VERSION").exists():
            progress(f"  initialising a PostgreSQL cluster in {self.pgdata}")
            self._initdb()
        self._write_settings()
        if port_open(self.port):
            raise DevstackError(
                f"PostgreSQL: port {LOOPBACK}:{self.port} is already in use by another process"
            )
        # pg_ctl daemonises the postmaster (its own session) and -w waits until it accepts connections.
        result = self._run_as_owner(
            [
                str(self.bindir / "pg_ctl"),
                "-D",
                str(self.pgdata),
                "-l",
                str(self.log_file),
                "-w",
                "-t",
                str(int(timeout)),
                "start",
            ],
            timeout=timeout + 10,
        )
        if result.returncode != 0:
            raise DevstackError(
                f"PostgreSQL did not start on {LOOPBACK}:{self.port}:\n{result.stdout}{result.stderr}\n"
                f"--- last lines of {self.log_file} ---\n{tail(self.log_file)}"
            )
        wait_until(lambda: port_open(self.port), timeout=10, what="PostgreSQL", log=self.log_file)

    def stop(self, timeout: float = 60.0) -> None:
        """Fast shutdown: roll back open transactions, disconnect clients, checkpoint."""
        if not (self.pgdata / "postmaster.pid").exists():
            return
        result = self._run_as_owner(
            [
                str(self.bindir / "pg_ctl"),
                "-D",
                str(self.pgdata),
                "-m",
                "fast",
                "-w",
                "-t",
                str(int(timeout)),
                "stop",
            ],
            timeout=timeout + 10,
        )
        if result.returncode != 0 and process_alive(self.pid):
            raise DevstackError(f"PostgreSQL did not stop:\n{result.stdout}{result.stderr}")

    def restart(self, timeout: float = 60.0) -> None:
        self.stop()
        self.start(timeout=timeout)

    # -- databases ------------------------------------------------------------------------------

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run one SQL command as the superuser over TCP; returns unaligned, tuples-only output."""
        result = subprocess.run(
            [
                str(self.bindir / "psql"),
                "-X",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "-tA",
                "-h",
                LOOPBACK,
                "-p",
                str(self.port),
                "-U",
                USER,
                "-d",
                check_database_name(database),
                "-c",
                sql,
            ],
            capture_output=True,
            text=True,
            check=False,
            env={**os.environ, "PGPASSWORD": PASSWORD, "PGCONNECT_TIMEOUT": "10"},
            stdin=subprocess.DEVNULL,
        )
        if result.returncode != 0:
            raise DevstackError(f"psql failed: {sql!r}: {result.stderr.strip()}")
        return result.stdout.strip()

    def database_exists(self, name: str) -> bool:
        check_database_name(name)
        return self.psql(f"SELECT 1 FROM pg_database WHERE datname = '{name}'") == "1"

    def create_role(self, name: str, password: str = PASSWORD) -> None:
        """A login role ``name`` (neither superuser nor able to create roles or databases);
        kept if it exists."""
        check_database_name(name)
        try:
            self.psql(
                f"DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{name}') THEN "
                f"CREATE ROLE \"{name}\" LOGIN PASSWORD '{password}'; END IF; END $$"
            )
        except DevstackError as exc:
            # Created meanwhile by someone else (roles are cluster-wide).
            if "already exists" not in str(exc):
                raise

    def service_database(self, name: str, owner: str, runtime: str) -> ServiceDatabase:
        """Database ``name`` owned by role ``owner`` (which migrates it), and the login role
        ``runtime`` the service runs as: the split a production database has."""
        self.create_role(owner)
        self.create_role(runtime)
        self.create_database(name, owner=owner)
        self._adopt(name, owner)
        return ServiceDatabase(
            name=name,
            migration_url=self.url(name, user=owner),
            runtime_url=self.url(name, user=runtime),
        )

    def _adopt(self, name: str, owner: str) -> None:
        """Hand a database made before its service had roles of its own (owned by the superuser)
        to ``owner``, with every table, sequence and function in it."""
        current = self.psql(
            f"SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = '{check_database_name(name)}'"
        )
        if current == owner:
            return
        self.psql(f'ALTER DATABASE "{name}" OWNER TO "{owner}"')
        self.psql(
            "DO $$ DECLARE r record; BEGIN "
            "FOR r IN SELECT format('ALTER TABLE public.%I OWNER TO %I', c.relname, '" + owner + "') AS s "
            "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm') "
            "UNION ALL SELECT format('ALTER FUNCTION public.%I OWNER TO %I', p.proname, '" + owner + "') "
            "FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'public' "
            "LOOP EXECUTE r.s; END LOOP; END $$",
            database=name,
        )

    def create_database(self, name: str, owner: str | None = None) -> str:
        """Create database ``name`` (owned by role ``owner``, else the superuser) unless it
        exists; returns its SQLAlchemy asyncpg URL as the superuser."""
        check_database_name(name)
        if not self.database_exists(name):
            try:
                self.psql(
                    f'CREATE DATABASE "{name}"' + (f' OWNER "{check_database_name(owner)}"' if owner else "")
                )
            except DevstackError as exc:
                # Created meanwhile by someone else: that is what we wanted.
                if "already exists" not in str(exc):
                    raise
        return self.url(name)

    def drop_database(self, name: str) -> None:
        """Drop database ``name`` if it exists, disconnecting its clients."""
        check_database_name(name)
        self.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def __enter__(self) -> Postgres:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"Postgres(port={self.port}, data_dir={str(self.data_dir)!r}, pid={self.pid})"
