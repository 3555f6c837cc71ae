"""The PostgreSQL test cluster itself: reachable as documented, durable, stoppable, private."""

import os
import subprocess
from pathlib import Path

import pytest

from tests.support.fixtures_postgres import LIBPQ_ENVIRONMENT
from tests.support.postgres_cluster import (
    OWNER_FILE,
    PASSWORD_ROLE,
    SIGNER_ROLE,
    PostgresCluster,
    PostgresDatabase,
    PostgresUnavailable,
    find_bin_dir,
    remove_orphaned_clusters,
)

psycopg = pytest.importorskip("psycopg")


def test_fresh_database_round_trip(postgres_db: PostgresDatabase) -> None:
    assert postgres_db.url.startswith(f"postgresql://{SIGNER_ROLE}@127.0.0.1:")
    with psycopg.connect(postgres_db.url, connect_timeout=5) as conn:
        assert conn.execute(
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone() == (0,)
        conn.execute("CREATE TABLE t (id int PRIMARY KEY, v text NOT NULL)")
        conn.execute("INSERT INTO t VALUES (1, 'one'), (2, 'two')")
        conn.commit()
    with psycopg.connect(postgres_db.url, connect_timeout=5) as conn:
        assert conn.execute("SELECT id, v FROM t ORDER BY id").fetchall() == [
            (1, "one"), (2, "two")]


def test_each_test_gets_an_empty_database(postgres_db: PostgresDatabase) -> None:
    # test_fresh_database_round_trip left a table in its own database, not here
    with psycopg.connect(postgres_db.url, connect_timeout=5) as conn:
        assert conn.execute(
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone() == (0,)


def test_no_libpq_environment_leaks_in(postgres_db: PostgresDatabase) -> None:
    assert not [name for name in LIBPQ_ENVIRONMENT if name in os.environ]


def test_durable_settings(postgres_db: PostgresDatabase) -> None:
    with psycopg.connect(postgres_db.url, connect_timeout=5) as conn:
        for setting in ("fsync", "synchronous_commit", "full_page_writes"):
            assert conn.execute(f"SHOW {setting}").fetchone() == ("on",), setting
        assert conn.execute("SHOW listen_addresses").fetchone() == ("127.0.0.1",)


def test_synchronous_commit_off_only_on_request(make_postgres_database) -> None:  # type: ignore[no-untyped-def]
    fast = make_postgres_database(synchronous_commit=False)
    with psycopg.connect(fast.url, connect_timeout=5) as conn:
        assert conn.execute("SHOW synchronous_commit").fetchone() == ("off",)
        assert conn.execute("SHOW fsync").fetchone() == ("on",)


def test_password_role(postgres_db: PostgresDatabase, tmp_path: Path,
                       monkeypatch: pytest.MonkeyPatch) -> None:
    with psycopg.connect(postgres_db.url, connect_timeout=5) as conn:
        conn.execute("CREATE TABLE shared (x int)")
        conn.execute("INSERT INTO shared VALUES (7)")
        conn.commit()
    # the password role sees and writes the same tables as `signer`
    with psycopg.connect(postgres_db.password_url, password=postgres_db.password,
                         connect_timeout=5) as conn:
        assert conn.execute("SELECT current_user, session_user").fetchone() == (
            SIGNER_ROLE, PASSWORD_ROLE)
        assert conn.execute("SELECT x FROM shared").fetchall() == [(7,)]
        conn.execute("CREATE TABLE made_by_pw (y int)")
        conn.commit()
    with psycopg.connect(postgres_db.url, connect_timeout=5) as conn:
        assert conn.execute("SELECT count(*) FROM made_by_pw").fetchone() == (0,)
    # libpq's PGPASSFILE route
    monkeypatch.setenv("PGPASSFILE", str(postgres_db.write_pgpass(tmp_path / "pgpass")))
    with psycopg.connect(postgres_db.password_url, connect_timeout=5) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    monkeypatch.delenv("PGPASSFILE")
    password_file = postgres_db.write_password_file(tmp_path / "pw")
    assert password_file.read_text().strip() == postgres_db.password
    assert password_file.stat().st_mode & 0o077 == 0


@pytest.mark.parametrize("password", [None, "wrong"])
def test_password_role_refuses_without_its_password(
    postgres_db: PostgresDatabase, password: str | None, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PGPASSFILE", str(tmp_path / "absent"))
    with pytest.raises(psycopg.OperationalError, match="password"):
        psycopg.connect(postgres_db.password_url, password=password, connect_timeout=5)


def test_unknown_role_and_superuser_refused_over_tcp(postgres_db: PostgresDatabase) -> None:
    for user in ("mallory", "postgres"):
        url = postgres_db.cluster.url(postgres_db.name, user)
        with pytest.raises(psycopg.OperationalError, match="password"):
            psycopg.connect(url, password="guess", connect_timeout=5)


def test_stop_refuses_and_start_recovers_the_data(postgres_db: PostgresDatabase) -> None:
    with psycopg.connect(postgres_db.url, connect_timeout=5) as conn:
        conn.execute("CREATE TABLE t (v text)")
        conn.execute("INSERT INTO t VALUES ('kept')")
        conn.commit()
    open_conn = psycopg.connect(postgres_db.url, connect_timeout=5)
    port = postgres_db.port

    postgres_db.stop()
    with pytest.raises(psycopg.OperationalError, match="refused"):
        psycopg.connect(postgres_db.url, connect_timeout=5)
    with pytest.raises(psycopg.OperationalError):  # the open session was ended too
        open_conn.execute("SELECT 1")
    open_conn.close()

    postgres_db.start()
    assert postgres_db.port == port
    with psycopg.connect(postgres_db.url, connect_timeout=5) as conn:
        assert conn.execute("SELECT v FROM t").fetchall() == [("kept",)]


def test_committed_rows_survive_an_immediate_stop(postgres_db: PostgresDatabase) -> None:
    """pg_ctl -m immediate skips the shutdown checkpoint: start() replays the WAL (a crash)."""
    with psycopg.connect(postgres_db.url, connect_timeout=5) as conn:
        conn.execute("CREATE TABLE t (n int)")
        conn.execute("INSERT INTO t SELECT generate_series(1, 100)")
        conn.commit()
    postgres_db.stop(mode="immediate")
    postgres_db.start()
    with psycopg.connect(postgres_db.url, connect_timeout=5) as conn:
        assert conn.execute("SELECT count(*), sum(n) FROM t").fetchone() == (100, 5050)


def test_left_down_cluster_is_restarted_for_the_next_test(postgres_db: PostgresDatabase) -> None:
    # leaves the cluster stopped; the fixture's teardown and the next test must cope
    postgres_db.stop()


def test_cluster_is_up_again(postgres_db: PostgresDatabase) -> None:
    with psycopg.connect(postgres_db.url, connect_timeout=5) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_missing_server_binaries_are_reported(monkeypatch: pytest.MonkeyPatch,
                                              tmp_path: Path) -> None:
    monkeypatch.setenv("PG_BIN_DIR", str(tmp_path))
    with pytest.raises(PostgresUnavailable, match="install the Debian package postgresql"):
        find_bin_dir()


def test_fast_cluster_and_orphan_removal(postgres_cluster: PostgresCluster) -> None:
    """durable=False only on request; a cluster whose creator died is stopped and removed by
    the next create() (here called directly), and destroy() is idempotent."""
    cluster = PostgresCluster.create(durable=False)
    try:
        database = cluster.create_database()
        with psycopg.connect(database.url, connect_timeout=5) as conn:
            assert conn.execute("SHOW fsync").fetchone() == ("off",)
            assert conn.execute("SHOW synchronous_commit").fetchone() == ("off",)
        dead_pid = subprocess.Popen(["true"])
        dead_pid.wait()
        (cluster.base_dir / OWNER_FILE).write_text(f"{dead_pid.pid}\n")
        remove_orphaned_clusters(cluster.bin_dir, cluster.run_as)
        assert not cluster.base_dir.exists()
        with pytest.raises(psycopg.OperationalError, match="refused"):
            psycopg.connect(database.url, connect_timeout=5)
        # the session's own cluster (a live owner) was left alone
        assert postgres_cluster.is_running()
    finally:
        cluster.destroy()
        cluster.destroy()
    assert not cluster.base_dir.exists()
