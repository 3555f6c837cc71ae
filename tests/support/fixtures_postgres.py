"""PostgreSQL fixtures: one throwaway cluster per session, a fresh empty database per test.

The cluster (`tests.support.postgres_cluster.PostgresCluster`) listens on 127.0.0.1 only,
keeps fsync on, and is removed at the end of the session. Without the server binaries (Debian package
postgresql) or psycopg the tests skip, unless WALLET_SIGNER_REQUIRE_BACKENDS names "postgres".

* `postgres_db`: a `PostgresDatabase`: `.url` (role `signer`, trusted on loopback),
  `.password_url` + `.password` (role `signer_pw`, password required), `.stop()` / `.start()`
  (the whole cluster, same port and data: for store-down tests).
* `make_postgres_database(synchronous_commit=True)`: more databases in the same test.
"""

from collections.abc import Callable, Iterator

import pytest

from tests.conftest import skip_or_fail
from tests.support.postgres_cluster import PostgresCluster, PostgresDatabase, PostgresUnavailable

LIBPQ_ENVIRONMENT = (
    "PGHOST", "PGHOSTADDR", "PGPORT", "PGDATABASE", "PGUSER", "PGPASSWORD", "PGPASSFILE",
    "PGSERVICE", "PGSERVICEFILE", "PGOPTIONS", "PGSSLMODE", "PGREQUIRESSL", "PGSSLCERT",
    "PGSSLKEY", "PGSSLROOTCERT", "PGGSSENCMODE", "PGTARGETSESSIONATTRS", "PGCONNECT_TIMEOUT",
    "PGAPPNAME", "PGCLIENTENCODING", "PGTZ", "PGDATESTYLE",
)


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    try:
        import psycopg  # noqa: F401
    except ImportError:
        skip_or_fail("postgres", "psycopg is needed for PostgreSQL tests (pip install -e '.[dev]')")
    with pytest.MonkeyPatch.context() as patch:
        # libpq reads these for anything the URL leaves out (PGSSLMODE=require or PGOPTIONS
        # from a developer's shell would change every connection); serve subprocesses inherit.
        for name in LIBPQ_ENVIRONMENT:
            patch.delenv(name, raising=False)
        try:
            cluster = PostgresCluster.create()
        except PostgresUnavailable as exc:
            skip_or_fail("postgres", str(exc))
        try:
            yield cluster
        finally:
            cluster.destroy()


@pytest.fixture
def make_postgres_database(
    postgres_cluster: PostgresCluster,
) -> Iterator[Callable[..., PostgresDatabase]]:
    """make_postgres_database(synchronous_commit=True) -> a new empty database; all are
    dropped after the test (the cluster is started again first if the test left it down)."""
    made: list[PostgresDatabase] = []

    def make(*, synchronous_commit: bool = True) -> PostgresDatabase:
        postgres_cluster.start()
        database = postgres_cluster.create_database(synchronous_commit=synchronous_commit)
        made.append(database)
        return database

    yield make
    postgres_cluster.start()
    for database in made:
        postgres_cluster.drop_database(database.name)


@pytest.fixture
def postgres_db(make_postgres_database: Callable[..., PostgresDatabase]) -> PostgresDatabase:
    """A fresh empty database in the session's cluster, durable settings."""
    return make_postgres_database()
