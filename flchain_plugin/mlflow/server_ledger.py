"""Opening the ledger of a `flchain+<db>` store, including one that lives in MLflow's own
PostgreSQL database.

Every server and uvicorn worker on one MLflow database must write ONE ledger, so by default
a `flchain+postgresql` store keeps it in that database, in a schema of its own
(`config.LEDGER_SCHEMA`), reached through the connection's search path. PostgreSQL will not
create tables in a schema that does not exist, so the schema is created here first, under
the ledger writers' advisory lock so servers starting together do not race on it (CREATE
SCHEMA IF NOT EXISTS alone can still fail on a concurrent duplicate). It is created only
when missing: PostgreSQL checks the CREATE privilege even when the schema exists, and a
database owner may well have made it for an MLflow user without that privilege.

The checkpoint key of a PostgreSQL ledger is the file $FLCHAIN_LOG_KEY names
(`commit.log_signer`); every server writing the ledger must be given the same file.
"""

from __future__ import annotations

from flchain_plugin.ledger import Ledger
from flchain_plugin.store import StoreError
from flchain_plugin.store.url import redact

from .config import PluginConfig


def create_schema(url: str, schema: str) -> None:
    """Create `schema` in the database `url` names, if missing (idempotent, race-free)."""
    import psycopg
    from psycopg import sql

    from flchain_plugin.store.postgres import LOCK_KEY, store_error

    where = redact(url)
    try:
        with psycopg.connect(url, connect_timeout=10) as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_KEY,))
            if conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s",
                            (schema,)).fetchone() is None:
                conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    except psycopg.errors.InsufficientPrivilege as e:
        raise StoreError(
            f"{where}: this database user may not create the ledger's schema {schema!r} "
            f"({' '.join(str(e).split())}); run `CREATE SCHEMA {schema} AUTHORIZATION "
            "<mlflow user>` once as the database owner, or name another ledger with "
            "?flchain_ledger= or FLCHAIN_LEDGER"
        ) from None
    except psycopg.Error as e:
        raise store_error(where, e) from None


def open_store_ledger(config: PluginConfig) -> Ledger:
    """The ledger a store writes: created on first open, its schema too when it is the
    default one in MLflow's PostgreSQL database."""
    if config.ledger_schema is not None:
        create_schema(config.ledger, config.ledger_schema)
    return Ledger(config.ledger)
