"""Columns (and indexes on them) added to existing tables after their first release, applied on connect.

A store created by an older release gets the new columns the next time any ragops process
connects; a new store gets them the same way, so both always end with the same schema.
`ALTER TABLE` takes an exclusive lock even when the column exists, and would queue every reader
and writer of the table behind it: only a table that lacks a column is altered. Callers run this
inside their schema transaction, under their schema advisory lock.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, LiteralString

import psycopg
from psycopg import sql

from .identifiers import SCHEMA

ColumnMigration = tuple[str, str, LiteralString]
"""(table in the ragops schema, column, its definition): a constant of the code, never user input."""
IndexMigration = tuple[str, LiteralString]
"""(index name in the ragops schema, its CREATE INDEX statement): constants of the code."""


async def add_missing_columns(connection: psycopg.AsyncConnection[Any], migrations: Sequence[ColumnMigration]) -> None:
    cursor = await connection.execute(
        "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = %s", (SCHEMA,)
    )
    present = {(table, column) for table, column in await cursor.fetchall()}
    for table, column, definition in migrations:
        if (table, column) not in present:
            await connection.execute(
                sql.SQL("ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {column} {definition}").format(
                    table=sql.Identifier(SCHEMA, table), column=sql.Identifier(column), definition=sql.SQL(definition)
                )
            )


async def add_missing_indexes(connection: psycopg.AsyncConnection[Any], indexes: Sequence[IndexMigration]) -> None:
    """Creates the indexes that do not exist yet; like columns, an existing one costs no table lock."""
    cursor = await connection.execute("SELECT indexname FROM pg_indexes WHERE schemaname = %s", (SCHEMA,))
    present = {name for (name,) in await cursor.fetchall()}
    for name, statement in indexes:
        if name not in present:
            await connection.execute(statement)
