"""A throwaway PostgreSQL cluster for tests and the benchmark, on 127.0.0.1.

`PostgresCluster.create()` runs the Debian package's `initdb` into a fresh directory under /tmp
and `pg_ctl` starts it on a free loopback port; `destroy()` stops it and removes the directory
(also at interpreter exit, so a crashed session leaves nothing running). PostgreSQL refuses to
run as root, so as root every server command runs as the `postgres` user (`runuser -u postgres`)
in a 0700 directory that user owns; as any other user it runs directly. A cluster left behind by
a killed run (its owner.pid no longer alive) is removed by the next `create()`.

Access (pg_hba.conf), all on loopback or the cluster's own unix socket:

* `postgres`: superuser, unix socket only (the fixture's administration); it has no password,
  so it cannot log in over TCP.
* `signer` (`SIGNER_ROLE`): trusted on 127.0.0.1, owns every database made by `create_database`.
* `signer_pw` (`PASSWORD_ROLE`): needs its password (SCRAM) on 127.0.0.1, for `password_file`
  and PGPASSFILE tests; it logs in as itself and then acts as `signer` (`ALTER ROLE ... SET
  role`), so what it creates belongs to `signer` and both roles see the same tables.
* anyone else: password required, so unknown users fail authentication rather than connect.

`fsync` stays on (durability tests depend on it) unless `create(durable=False)` asks otherwise.

Usage: `with PostgresCluster.create() as cluster: ...cluster.create_database()...`.
"""

import atexit
import contextlib
import glob
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

SIGNER_ROLE = "signer"
PASSWORD_ROLE = "signer_pw"
SUPERUSER = "postgres"
START_SECONDS = 30.0
DIR_PREFIX = "wallet-signer-pg-"
OWNER_FILE = "owner.pid"
COMMAND_SECONDS = 60.0


class PostgresUnavailable(RuntimeError):
    """PostgreSQL cannot run here (binaries or the postgres user missing); tests skip on it."""


def find_bin_dir() -> Path:
    """The newest /usr/lib/postgresql/<major>/bin holding initdb and pg_ctl (or $PG_BIN_DIR)."""
    if override := os.environ.get("PG_BIN_DIR"):
        candidates = [Path(override)]
    else:
        found = glob.glob("/usr/lib/postgresql/*/bin")
        candidates = sorted(
            (Path(p) for p in found),
            key=lambda p: [int(x) for x in p.parent.name.split(".") if x.isdigit()],
            reverse=True,
        )
    for candidate in candidates:
        if all(os.access(candidate / tool, os.X_OK) for tool in ("initdb", "pg_ctl", "postgres")):
            return candidate
    where = override or "/usr/lib/postgresql/*/bin"
    raise PostgresUnavailable(
        f"PostgreSQL server binaries (initdb, pg_ctl, postgres) not found in {where} "
        "(install the Debian package postgresql: make system-deps)"
    )


def _run_as() -> list[str]:
    """The prefix that runs a server command as a user PostgreSQL accepts."""
    if os.geteuid() != 0:
        return []
    runuser = shutil.which("runuser") or "/usr/sbin/runuser"
    if not os.access(runuser, os.X_OK):
        raise PostgresUnavailable("running as root and runuser (util-linux) is not installed")
    try:
        import pwd

        pwd.getpwnam(SUPERUSER)
    except KeyError:
        raise PostgresUnavailable(
            "running as root and there is no 'postgres' user (install the Debian package postgresql)"
        ) from None
    return [runuser, "-u", SUPERUSER, "--"]


def _owner_ids() -> tuple[int, int]:
    if os.geteuid() != 0:
        return os.geteuid(), os.getegid()
    import pwd

    entry = pwd.getpwnam(SUPERUSER)
    return entry.pw_uid, entry.pw_gid


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_orphaned_clusters(bin_dir: Path, run_as: list[str]) -> None:
    """Stop and remove clusters whose creating process is gone (a SIGKILLed test run skips
    atexit). Clusters of live processes, such as a parallel test run, are left alone."""
    for base in glob.glob(f"/tmp/{DIR_PREFIX}*"):
        try:
            owner = int((Path(base) / OWNER_FILE).read_text())
        except (OSError, ValueError):
            continue  # not ours to judge, or still being created
        if _alive(owner):
            continue
        data = Path(base) / "data"
        if (data / "postmaster.pid").exists():
            subprocess.run([*run_as, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate",
                            "-w", "-t", "20", "stop"], capture_output=True, cwd=base,
                           timeout=COMMAND_SECONDS, stdin=subprocess.DEVNULL, check=False)
        shutil.rmtree(base, ignore_errors=True)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class PostgresCluster:
    bin_dir: Path
    base_dir: Path
    port: int
    password: str
    run_as: list[str]
    durable: bool = True
    _databases: int = field(default=0, repr=False)

    # --- life cycle ---------------------------------------------------------------------------

    @classmethod
    def create(cls, *, durable: bool = True) -> "PostgresCluster":
        """initdb and start a new cluster; raises PostgresUnavailable if it cannot run here.

        durable=False turns fsync and synchronous_commit off (faster; never for durability tests).
        """
        bin_dir = find_bin_dir()
        run_as = _run_as()
        remove_orphaned_clusters(bin_dir, run_as)
        # /tmp itself is world-traversable; the cluster directory is 0700 and owned by the
        # server's user, so the password file and socket are private to it (and root).
        base_dir = Path(tempfile.mkdtemp(prefix=DIR_PREFIX, dir="/tmp"))
        cluster = cls(bin_dir, base_dir, free_port(), secrets.token_urlsafe(18), run_as, durable)
        atexit.register(cluster.destroy)
        try:
            cluster._init()
            cluster.start()
            cluster._create_roles()
        except BaseException:
            cluster.destroy()
            raise
        return cluster

    def __enter__(self) -> "PostgresCluster":
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.destroy()

    @property
    def data_dir(self) -> Path:
        return self.base_dir / "data"

    @property
    def socket_dir(self) -> Path:
        return self.base_dir

    @property
    def log_path(self) -> Path:
        return self.base_dir / "server.log"

    def _init(self) -> None:
        (self.base_dir / OWNER_FILE).write_text(f"{os.getpid()}\n")
        uid, gid = _owner_ids()
        os.chown(self.base_dir, uid, gid)
        os.chmod(self.base_dir, 0o700)
        # --no-sync: only initdb's own files skip fsync (a power loss during a test run is not a
        # case we test); the running server keeps fsync on.
        self._server_command(
            "initdb", "-D", str(self.data_dir), "-U", SUPERUSER,
            "-E", "UTF8", "--locale=C", "--no-sync", "--auth-local=trust",
            "--auth-host=scram-sha-256",
        )
        settings = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.socket_dir}'",
            "max_connections": "200",
            "fsync": "on" if self.durable else "off",
            "synchronous_commit": "on" if self.durable else "off",
            "full_page_writes": "on" if self.durable else "off",
            "shared_buffers": "32MB",
            "logging_collector": "off",
            "log_min_messages": "warning",
        }
        with (self.data_dir / "postgresql.conf").open("a") as conf:
            conf.write("\n# wallet-signer test cluster\n")
            conf.writelines(f"{name} = {value}\n" for name, value in settings.items())
        (self.data_dir / "pg_hba.conf").write_text(
            "# wallet-signer test cluster: loopback and the private unix socket only\n"
            f"local all {SUPERUSER} trust\n"
            f"host all {SIGNER_ROLE} 127.0.0.1/32 trust\n"
            f"host all {PASSWORD_ROLE} 127.0.0.1/32 scram-sha-256\n"
            "host all all 127.0.0.1/32 scram-sha-256\n"
        )

    def _create_roles(self) -> None:
        from psycopg import sql

        with self.admin_connection() as conn:
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN CREATEDB").format(
                sql.Identifier(SIGNER_ROLE)))
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {} IN ROLE {}").format(
                sql.Identifier(PASSWORD_ROLE), sql.Literal(self.password),
                sql.Identifier(SIGNER_ROLE)))
            conn.execute(sql.SQL("ALTER ROLE {} SET role = {}").format(
                sql.Identifier(PASSWORD_ROLE), sql.Literal(SIGNER_ROLE)))

    def start(self, timeout: float = START_SECONDS) -> None:
        """Start the server (same data directory and port) and wait until it accepts logins."""
        if self.is_running():
            return
        self._server_command(
            "pg_ctl", "-D", str(self.data_dir), "-l", str(self.log_path), "-w",
            "-t", str(int(timeout)), "start", timeout=timeout + 5,
        )
        self._wait_ready(timeout)

    def stop(self, mode: str = "fast") -> None:
        """Stop the server: "fast" (clean shutdown, open sessions are ended) or "immediate"
        (no checkpoint, as after a crash; start() then runs recovery)."""
        if not self.is_running():
            return
        self._server_command("pg_ctl", "-D", str(self.data_dir), "-m", mode, "-w", "-t", "30",
                             "stop")

    def is_running(self) -> bool:
        if not (self.data_dir / "postmaster.pid").exists():
            return False
        result = subprocess.run(
            [*self.run_as, str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "status"],
            capture_output=True, text=True, timeout=COMMAND_SECONDS, stdin=subprocess.DEVNULL,
            cwd=self.base_dir, check=False,
        )
        return result.returncode == 0

    def destroy(self) -> None:
        """Stop the server (immediately: it is thrown away) and remove its directory. Idempotent."""
        atexit.unregister(self.destroy)
        if not self.base_dir.exists():
            return
        if (self.data_dir / "postmaster.pid").exists():
            with contextlib.suppress(Exception):
                self._server_command("pg_ctl", "-D", str(self.data_dir), "-m", "immediate",
                                     "-w", "-t", "20", "stop")
        shutil.rmtree(self.base_dir, ignore_errors=True)

    def _server_command(self, tool: str, *args: str, timeout: float = COMMAND_SECONDS) -> None:
        command = [*self.run_as, str(self.bin_dir / tool), *args]
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                                stdin=subprocess.DEVNULL, cwd=self.base_dir, check=False)
        if result.returncode != 0:
            log = self.log_path.read_text()[-2000:] if self.log_path.exists() else ""
            raise RuntimeError(
                f"{tool} failed (exit {result.returncode}): {result.stderr.strip()}\n"
                f"{result.stdout.strip()}\nserver log tail:\n{log}"
            )

    def _wait_ready(self, timeout: float) -> None:
        import psycopg

        deadline = time.monotonic() + timeout
        while True:
            try:
                with self.admin_connection(connect_timeout=2):
                    return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    # --- access -------------------------------------------------------------------------------

    def url(self, database: str, user: str = SIGNER_ROLE) -> str:
        """postgresql://user@127.0.0.1:PORT/database (no password in it)."""
        return f"postgresql://{user}@127.0.0.1:{self.port}/{database}"

    def admin_connection(self, database: str = "postgres", connect_timeout: int = 10) -> Any:
        """A psycopg autocommit connection as the superuser over the private unix socket."""
        import psycopg

        return psycopg.connect(host=str(self.socket_dir), port=self.port, user=SUPERUSER,
                               dbname=database, autocommit=True, connect_timeout=connect_timeout)

    def create_database(self, *, synchronous_commit: bool = True) -> "PostgresDatabase":
        """A new empty database owned by `signer`. synchronous_commit=False sets it off for
        this database only (faster commits; never in durability tests)."""
        from psycopg import sql

        self._databases += 1
        name = f"test_{self._databases}_{secrets.token_hex(4)}"
        with self.admin_connection() as conn:
            conn.execute(sql.SQL("CREATE DATABASE {} OWNER {} TEMPLATE template0").format(
                sql.Identifier(name), sql.Identifier(SIGNER_ROLE)))
            if not synchronous_commit:
                conn.execute(sql.SQL("ALTER DATABASE {} SET synchronous_commit = off").format(
                    sql.Identifier(name)))
        return PostgresDatabase(self, name)

    def drop_database(self, name: str) -> None:
        from psycopg import sql

        with self.admin_connection() as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(name)))


@dataclass
class PostgresDatabase:
    """One database in a running test cluster."""

    cluster: PostgresCluster
    name: str

    @property
    def url(self) -> str:
        """Trusted on loopback: postgresql://signer@127.0.0.1:PORT/NAME."""
        return self.cluster.url(self.name)

    @property
    def password_url(self) -> str:
        """Needs `password`: postgresql://signer_pw@127.0.0.1:PORT/NAME."""
        return self.cluster.url(self.name, PASSWORD_ROLE)

    @property
    def password(self) -> str:
        return self.cluster.password

    @property
    def port(self) -> int:
        return self.cluster.port

    def write_password_file(self, path: Path) -> Path:
        """The password alone, 0600 (the shape of a `password_file` setting)."""
        path.write_text(self.password + "\n")
        path.chmod(0o600)
        return path

    def write_pgpass(self, path: Path) -> Path:
        """A libpq PGPASSFILE line for PASSWORD_ROLE on this database, 0600."""
        path.write_text(f"127.0.0.1:{self.port}:{self.name}:{PASSWORD_ROLE}:{self.password}\n")
        path.chmod(0o600)
        return path

    def stop(self, mode: str = "fast") -> None:
        self.cluster.stop(mode)

    def start(self) -> None:
        self.cluster.start()
