"""How a ledger target names a server store, without importing its driver.

The `flchain` command and every integration decide file or server from the target's text
alone, so psycopg is imported only when a PostgreSQL ledger is opened.
"""

from __future__ import annotations

import urllib.parse

SCHEMES = ("postgresql://", "postgres://")
"""URL prefixes that name a PostgreSQL ledger."""


def is_postgres_url(target: object) -> bool:
    return isinstance(target, str) and target.startswith(SCHEMES)


def redact(url: str) -> str:
    """`url` without its password: what messages, listings and reports show."""
    try:
        parts = urllib.parse.urlsplit(url)
        password, port = parts.password, parts.port
    except ValueError:  # a malformed port: show nothing after the scheme's user
        return url.split("@")[-1] if "@" in url else url
    if password is None:
        return url
    netloc = f"{parts.username or ''}:***@{parts.hostname or ''}" + (f":{port}" if port else "")
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))
