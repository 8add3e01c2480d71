"""The schema revision this code expects (the Alembic head) and how a database compares to it.

The head is read from the migration scripts once per process (`schema_head()` is cached), so
readiness probes cost one `SELECT` of `alembic_version`, never an Alembic import or a file scan.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Final

from idp.configuration.database import Database
from idp.configuration.exceptions import ServiceUnavailableError

if TYPE_CHECKING:  # Alembic is imported when used: the CLI's other commands start faster.
    from alembic.config import Config

ROOT: Final = Path(__file__).resolve().parent.parent.parent
UPGRADE_HINT: Final = "run `idp db upgrade`"


def alembic_config(database_url: str | None = None) -> Config:
    """Alembic's configuration: alembic.ini and migrations/ beside the `idp` package."""
    from alembic.config import Config

    config = Config(str(ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(ROOT / "migrations"))
    if database_url is not None:
        config.attributes["database_url"] = database_url
    return config


class SchemaState(StrEnum):
    CURRENT = "current"  # at the head revision
    BEHIND = "behind"  # empty, or at an older revision of these scripts: `idp db upgrade`
    AHEAD = "ahead"  # a revision these scripts do not know: migrated by a newer release


@dataclass(frozen=True, slots=True)
class SchemaHead:
    """The head revision of the migration scripts and every revision they know."""

    head: str
    known: frozenset[str]

    def state(self, revision: str | None) -> SchemaState:
        if revision == self.head:
            return SchemaState.CURRENT
        if revision is None or revision in self.known:
            return SchemaState.BEHIND
        return SchemaState.AHEAD

    def behind_message(self, revision: str | None) -> str:
        """The one line an operator sees for a database that needs migrating."""
        current = revision or "base (empty)"
        return f"database at revision {current}, head is {self.head}: {UPGRADE_HINT}"


@functools.cache
def schema_head() -> SchemaHead:
    """The scripts' head, read once per process."""
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(alembic_config())
    head = script.get_current_head()
    if head is None:  # pragma: no cover - the repository always ships migrations
        raise RuntimeError("no Alembic revisions in migrations/")
    return SchemaHead(head, frozenset(rev.revision for rev in script.walk_revisions()))


class SchemaBehindError(ServiceUnavailableError):
    """The database's schema is older than this code: nothing works until it is migrated."""

    def __init__(self, revision: str | None, head: SchemaHead) -> None:
        super().__init__(head.behind_message(revision))
        self.revision = revision


async def require_schema(database: Database) -> SchemaState | None:
    """Raise `SchemaBehindError` when the database needs migrating; its state otherwise (None
    when it cannot be reached: the caller's own work reports that)."""
    probe = await database.probe()
    if not probe.reachable:
        return None
    head = schema_head()
    state = head.state(probe.revision)
    if state is SchemaState.BEHIND:
        raise SchemaBehindError(probe.revision, head)
    return state
