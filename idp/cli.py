"""The `idp` command. Thin: it parses arguments, then calls the same services as the API."""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import json
import logging
import os
import signal
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from pydantic import BaseModel, ValidationError
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession

from idp.configuration import migrations
from idp.configuration.clock import Clock
from idp.configuration.database import Database, is_unavailable
from idp.configuration.exceptions import IdpError
from idp.configuration.metrics import MULTIPROC_ENV
from idp.configuration.migrations import SchemaState, require_schema
from idp.configuration.settings import Settings, get_settings
from idp.observability.logging import configure_logging, logging_config
from idp.schemas.roles import RoleCreate
from idp.schemas.users import UserCreate
from idp.services import keys as keys_service
from idp.services import lockout as lockout_service
from idp.services import refresh_tokens
from idp.services import roles as roles_service
from idp.services import users as users_service
from idp.services.keys import KeyRecord, KeyStore, ensure_keystore, keystore_for
from idp.services.permissions import SYSTEM, Actor

if TYPE_CHECKING:  # Alembic is imported by the `db` commands only: start-up stays fast.
    from alembic.config import Config
    from alembic.runtime.migration import MigrationInfo

T = TypeVar("T")
logger = logging.getLogger(__name__)

# Locals in tracebacks could show passwords: never print them.
app = typer.Typer(
    help="idp: identity provider for microservice platforms.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
db_app = typer.Typer(help="Database migrations (Alembic).", no_args_is_help=True)
users_app = typer.Typer(help="Manage users.", no_args_is_help=True)
roles_app = typer.Typer(help="Manage roles.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(users_app, name="users")
keys_app = typer.Typer(
    help="Manage the signing keys (next -> active -> retired -> removed).", no_args_is_help=True
)
app.add_typer(roles_app, name="roles")
app.add_typer(keys_app, name="keys")
tokens_app = typer.Typer(help="Refresh tokens and the sessions they keep.", no_args_is_help=True)
app.add_typer(tokens_app, name="tokens")


def fail(message: str) -> typer.Exit:
    """Print one clear line to stderr; the caller raises the returned Exit(1)."""
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(1)


def load_settings() -> Settings:
    try:
        return get_settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"IDP_{'_'.join(str(p) for p in e['loc']).upper()}: {e['msg']}"
            if e["loc"]
            else e["msg"].removeprefix("Value error, ")
            for e in exc.errors()
        )
        raise fail(f"invalid settings: {problems}") from None


def run_in_session(work: Callable[[AsyncSession, Settings], Awaitable[T]]) -> T:
    """Run `work` in one committed unit of work; operator mistakes become one line, exit 1."""

    async def in_session(database: Database, settings: Settings) -> T:
        async with database.session() as session:
            return await work(session, settings)

    return run_with_database(in_session)


def run_with_database(work: Callable[[Database, Settings], Awaitable[T]]) -> T:
    """Run `work` with a database of its own (for work that commits in several units)."""
    settings = load_settings()

    async def main() -> T:
        database = Database(settings)
        try:
            await require_schema(database)  # "run `idp db upgrade`" rather than a SQL error
            return await work(database, settings)
        finally:
            await database.dispose()

    try:
        return asyncio.run(main())
    except IdpError as exc:
        raise fail(exc.message) from None
    except ValidationError as exc:
        raise fail(
            "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        ) from None
    except Exception as exc:
        if is_unavailable(exc):
            raise fail(f"database unreachable ({type(exc).__name__})") from None
        raise


def validation_message(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())


M = TypeVar("M", bound=BaseModel)


def validated(model: type[M], **values: object) -> M:
    """Build an input model; invalid input is one line and exit 1, like any operator mistake."""
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        raise fail(validation_message(exc)) from None


def read_password(confirm: bool = True) -> str:
    """A password from a hidden prompt on a terminal, else the first line of stdin; never argv."""
    if sys.stdin.isatty():
        value: str = typer.prompt("Password", hide_input=True, confirmation_prompt=confirm)
        return value
    line = sys.stdin.readline()
    if not line:
        raise fail("no password on standard input")
    return line.rstrip("\r\n")


def progress(message: str) -> None:
    """A step of a slow operation, on stderr: stdout stays the command's result."""
    typer.echo(message, err=True)


JsonOption = Annotated[
    bool, typer.Option("--json", help="Print a JSON array of objects instead of a table.")
]
YesOption = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")]


def when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%SZ") if value else "-"


def print_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """Left-aligned columns as wide as their widest cell."""
    table = [tuple(header), *(tuple(row) for row in rows)]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        typer.echo(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )


def print_json(objects: Sequence[dict[str, Any]]) -> None:
    """One JSON array; datetimes as ISO 8601 strings."""
    typer.echo(json.dumps(list(objects), indent=2, default=_json_value))


def _json_value(value: object) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)  # UUIDs, enum members


def confirm(question: str, yes: bool) -> None:
    """Ask `question` unless --yes; anything but yes stops the command (exit 1)."""
    if not yes and not typer.confirm(question, default=False):
        raise fail("cancelled")


# serve ---------------------------------------------------------------------------------------


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to bind.")] = 8000,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes.")] = 1,
    init_keys: Annotated[
        bool,
        typer.Option(
            "--init-keys",
            help="Create the keystore in IDP_KEYS_DIR if there is none (first development run).",
        ),
    ] = False,
) -> None:
    """Serve the HTTP API with uvicorn; the keystore must exist unless --init-keys."""
    import uvicorn

    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format)
    # Checked here, so a wrong IDP_KEYS_DIR is one line before any worker starts.
    run_keys(lambda store: ensure_keystore(store) if init_keys else store.load())
    check_schema_before_serving()
    if settings.bootstrap_admin_username:
        bootstrap_admin(generate=False, quiet=True)
    # uvicorn finishes the requests in flight on SIGTERM, then raises the signal again for the
    # handler it found; this one makes that a clean exit (status 0) instead of death by signal.
    signal.signal(signal.SIGTERM, _exit_cleanly)
    with shared_metrics_dir(workers):
        uvicorn.run(
            "idp.main:create_app",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            # Applied again in each worker process, which would otherwise log nothing.
            log_config=logging_config(settings.log_level, settings.log_format),
            proxy_headers=True,
            forwarded_allow_ips=settings.forwarded_allow_ips,
            server_header=False,
            # httptools, bounded as h11 would be (idp.configuration.http_protocol): a huge
            # header is cut off at twice IDP_MAX_HEADER_SIZE, below that the app answers 431.
            http="idp.configuration.http_protocol:BoundedHttpToolsProtocol",
            h11_max_incomplete_event_size=2 * settings.max_header_size,
            timeout_graceful_shutdown=30,
        )


def check_schema_before_serving() -> None:
    """Refuse a database behind head in one line; an unreachable one is left to /readyz."""

    async def check(database: Database, _settings: Settings) -> SchemaState | None:
        return await require_schema(database)

    state = run_with_database(check)
    if state is None:
        logger.warning("database unreachable at start; /readyz answers 503 until it answers")
    elif state is SchemaState.AHEAD:
        logger.warning("database migrated by a newer release than this one")


def _exit_cleanly(_signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(0)


@contextlib.contextmanager
def shared_metrics_dir(workers: int) -> Iterator[None]:
    """With several workers, give them a fresh PROMETHEUS_MULTIPROC_DIR so /metrics sums them.

    The workers are spawned after this and read the variable when they import
    prometheus_client. A directory the operator set already is used as it is.
    """
    if workers == 1 or os.environ.get(MULTIPROC_ENV):
        yield
        return
    with tempfile.TemporaryDirectory(prefix="idp-metrics-") as directory:
        os.environ[MULTIPROC_ENV] = directory
        try:
            yield
        finally:
            del os.environ[MULTIPROC_ENV]


# db ------------------------------------------------------------------------------------------


def alembic_config() -> Config:
    return migrations.alembic_config(load_settings().database_url)


def reporting_config() -> Config:
    """Alembic's configuration for upgrade and downgrade: each revision applied is one line
    on stderr (instead of Alembic's log lines), with the time it took."""
    config = alembic_config()
    config.attributes["configure_logging"] = False
    started = time.monotonic()

    def applied(*, step: MigrationInfo, **_: object) -> None:
        nonlocal started
        # On a downgrade too, `up_revision` is the revision the step removes.
        doc = getattr(step.up_revision, "doc", "") or ""
        verb = "applied" if step.is_upgrade else "reverted"
        title = f": {doc}" if doc else ""
        took = time.monotonic() - started
        progress(f"{verb} {step.up_revision_id}{title} ({took:.1f} s)")
        started = time.monotonic()

    config.attributes["on_version_apply"] = [applied]
    return config


def run_alembic(action: Callable[[], None]) -> None:
    try:
        action()
    except Exception as exc:
        if is_unavailable(exc):
            raise fail(f"database unreachable ({type(exc).__name__})") from None
        raise fail(f"{type(exc).__name__}: {exc}") from None


@db_app.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument()] = "head") -> None:
    """Migrate the database up to REVISION (default: head)."""
    from alembic import command

    progress(f"==> migrating the database to {revision}")
    run_alembic(lambda: command.upgrade(reporting_config(), revision))
    progress("database up to date")


@db_app.command("downgrade")
def db_downgrade(revision: str) -> None:
    """Migrate the database down to REVISION (`base` removes everything)."""
    from alembic import command

    progress(f"==> migrating the database down to {revision}")
    run_alembic(lambda: command.downgrade(reporting_config(), revision))


@db_app.command("current")
def db_current() -> None:
    """Show the database's current revision."""
    from alembic import command

    run_alembic(lambda: command.current(alembic_config(), verbose=False))


# users ---------------------------------------------------------------------------------------


@users_app.command("create")
def users_create(
    username: str,
    email: Annotated[str, typer.Option(help="The user's email address.")],
    role: Annotated[list[str] | None, typer.Option(help="Role to grant; repeatable.")] = None,
    no_password: Annotated[bool, typer.Option(help="Create without a password.")] = False,
) -> None:
    """Create a user; the password comes from a hidden prompt or stdin."""
    password = None if no_password else read_password()
    data = validated(
        UserCreate, username=username, email=email, password=password, roles=role or []
    )

    async def work(session: AsyncSession, settings: Settings) -> None:
        user = await users_service.create_user(session, settings, data, actor=SYSTEM)
        typer.echo(f"created user {user.username} ({user.id})")

    run_in_session(work)


@users_app.command("list")
def users_list(
    role: Annotated[str | None, typer.Option(help="Only holders of this role.")] = None,
    active: Annotated[
        bool | None,
        typer.Option("--active/--disabled", help="Only active, or only disabled, users."),
    ] = None,
    locked: Annotated[
        bool, typer.Option("--locked", help="Only users locked out now (account or address).")
    ] = False,
    search: Annotated[
        str | None, typer.Option(help="Only users whose username or email contains this.")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """List users with their roles and lockouts: LOCKED shows until when the account is
    locked, and how many client addresses are locked out of it."""

    async def work(session: AsyncSession, _settings: Settings) -> list[dict[str, Any]]:
        now = Clock().now()
        found: list[dict[str, Any]] = []
        while True:
            page, total = await users_service.list_users(
                session,
                limit=500,
                offset=len(found),
                role=role,
                active=active,
                search=search,
                locked_at=now if locked else None,
            )
            addresses = await lockout_service.locked_addresses(session, page, now)
            found += [
                {
                    "id": user.id,
                    "username": user.username,
                    "email": user.email,
                    "active": user.is_active,
                    "roles": [r.name for r in user.roles],
                    "locked_until": user.locked_until
                    if user.locked_until and user.locked_until > now
                    else None,
                    "locked_addresses": addresses.get(user.id, 0),
                    "created_at": user.created_at,
                }
                for user in page
            ]
            if not page or len(found) >= total:
                return found

    users = run_in_session(work)
    if as_json:
        print_json(users)
        return
    print_table(
        ("username", "email", "active", "locked", "roles"),
        [
            (
                u["username"],
                u["email"],
                "yes" if u["active"] else "no",
                lock_cell(u),
                ",".join(u["roles"]),
            )
            for u in users
        ],
    )


def lock_cell(user: dict[str, Any]) -> str:
    """`until <time>`, `<n> address(es)`, both, or `-`."""
    parts = [f"until {when(user['locked_until'])}"] if user["locked_until"] else []
    if user["locked_addresses"]:
        parts.append(f"{user['locked_addresses']} address(es)")
    return ", ".join(parts) or "-"


@users_app.command("delete")
def users_delete(username: str, yes: YesOption = False) -> None:
    """Delete a user, their roles and sessions; the last active admin cannot be deleted."""
    confirm(f"Delete user {username!r}?", yes)

    async def work(session: AsyncSession, _settings: Settings) -> str:
        user = await users_service.get_by_username(session, username)
        await users_service.delete_user(session, user, actor=SYSTEM)
        return user.username

    typer.echo(f"deleted user {run_in_session(work)}")


def set_active(username: str, active: bool) -> None:
    async def work(session: AsyncSession, _settings: Settings) -> None:
        user = await users_service.get_by_username(session, username)
        await users_service.set_active(session, user, active, actor=SYSTEM, now=Clock().now())
        typer.echo(f"{'enabled' if active else 'disabled'} {user.username}")

    run_in_session(work)


@users_app.command("disable")
def users_disable(username: str) -> None:
    """Disable a user: no more logins, refresh tokens end."""
    set_active(username, False)


@users_app.command("enable")
def users_enable(username: str) -> None:
    """Enable a disabled user."""
    set_active(username, True)


@users_app.command("unlock")
def users_unlock(username: str) -> None:
    """Lift the lockout of USERNAME (account-wide and per address) and forget its failures."""

    async def work(session: AsyncSession, _settings: Settings) -> None:
        user = await users_service.get_by_username(session, username)
        was_locked = await lockout_service.unlock_user(
            session, user, now=Clock().now(), actor=SYSTEM
        )
        typer.echo(
            f"unlocked {user.username}"
            if was_locked
            else f"{user.username} was not locked; failed logins forgotten"
        )

    run_in_session(work)


@users_app.command("set-password")
def users_set_password(username: str) -> None:
    """Set a user's password from a hidden prompt or stdin."""
    password = read_password()

    async def work(session: AsyncSession, settings: Settings) -> None:
        user = await users_service.get_by_username(session, username)
        await users_service.set_password(
            session, settings, user, password, actor=SYSTEM, now=Clock().now()
        )
        typer.echo(f"password set for {user.username}")

    run_in_session(work)


@users_app.command("ensure-admin")
def users_ensure_admin(
    generate: Annotated[
        bool, typer.Option(help="Generate a password (shown once) when none is configured.")
    ] = False,
) -> None:
    """Create the bootstrap admin from IDP_BOOTSTRAP_ADMIN_* when no active admin exists."""
    bootstrap_admin(generate=generate, quiet=False)


def bootstrap_admin(*, generate: bool, quiet: bool) -> None:
    settings = load_settings()
    # Empty counts as unset: compose passes `${IDP_BOOTSTRAP_ADMIN_PASSWORD:-}`.
    password = (
        settings.bootstrap_admin_password.get_secret_value()
        if settings.bootstrap_admin_password
        else None
    ) or None
    if password is None and not generate:
        if not quiet:
            typer.echo("no IDP_BOOTSTRAP_ADMIN_PASSWORD set; nothing to do (or use --generate)")
        return
    username = settings.bootstrap_admin_username or "admin"
    email = settings.bootstrap_admin_email or f"{username}@localhost.localdomain"

    async def work(session: AsyncSession, s: Settings) -> str | None:
        if await users_service.admin_exists(session):
            return None
        generated = await users_service.ensure_admin(
            session, s, username=username, email=email, password=password
        )
        return generated or ""

    outcome = run_in_session(work)
    if outcome is None:
        if not quiet:
            typer.echo("an active admin account exists already")
    elif outcome:
        # Shown once, on the operator's terminal (or the container's log); never logged. The
        # frame makes it stand out among log lines, where colour is stripped.
        frame = "=" * 72
        typer.secho(
            f"\n{frame}\nCreated admin account {username!r} with password:\n\n    {outcome}\n\n"
            "It is shown only this once. Change it with `idp users set-password "
            f"{username}`.\n{frame}\n",
            fg=typer.colors.YELLOW,
            err=True,
        )
    elif quiet:  # from `idp serve`: a log line like the server's others (JSON if configured)
        logger.info("created admin account %r from IDP_BOOTSTRAP_ADMIN_*", username)
    else:
        typer.echo(f"created admin account {username!r} from IDP_BOOTSTRAP_ADMIN_*", err=True)


# roles ---------------------------------------------------------------------------------------


@roles_app.command("create")
def roles_create(
    name: str,
    permission: Annotated[
        list[str] | None, typer.Option(help="Permission code; repeatable.")
    ] = None,
    description: Annotated[str, typer.Option(help="What the role is for.")] = "",
) -> None:
    """Create a role, optionally holding some of the service's own permissions."""
    data = validated(RoleCreate, name=name, description=description, permissions=permission or [])

    async def work(session: AsyncSession, _settings: Settings) -> None:
        role = await roles_service.create_role(session, data, actor=SYSTEM)
        typer.echo(f"created role {role.name}")

    run_in_session(work)


@roles_app.command("list")
def roles_list(as_json: JsonOption = False) -> None:
    """List roles and their permissions."""

    async def work(session: AsyncSession, _settings: Settings) -> list[dict[str, Any]]:
        return [
            {
                "name": role.name,
                "description": role.description,
                "permissions": [p.code for p in role.permissions],
            }
            for role in await roles_service.list_roles(session)
        ]

    roles = run_in_session(work)
    if as_json:
        print_json(roles)
        return
    print_table(
        ("name", "permissions", "description"),
        [(r["name"], ",".join(r["permissions"]), r["description"]) for r in roles],
    )


@roles_app.command("delete")
def roles_delete(
    name: str,
    force: Annotated[bool, typer.Option(help="Also revoke it from every user holding it.")] = False,
    yes: YesOption = False,
) -> None:
    """Delete a role; refused while users hold it unless --force, and always for `admin`."""
    confirm(f"Delete role {name!r}{' and revoke it from its holders' if force else ''}?", yes)

    async def work(session: AsyncSession, _settings: Settings) -> None:
        await roles_service.delete_role(session, name, force=force, actor=SYSTEM)

    run_in_session(work)
    typer.echo(f"deleted role {name}")


@roles_app.command("grant")
def roles_grant(username: str, role: str) -> None:
    """Give ROLE to USERNAME."""

    async def work(session: AsyncSession, _settings: Settings) -> None:
        user = await users_service.get_by_username(session, username)
        changed = await roles_service.grant_role(session, user, role, actor=SYSTEM)
        typer.echo(
            f"granted {role} to {user.username}"
            if changed
            else f"{user.username} already has {role}"
        )

    run_in_session(work)


@roles_app.command("revoke")
def roles_revoke(username: str, role: str) -> None:
    """Take ROLE from USERNAME."""

    async def work(session: AsyncSession, _settings: Settings) -> None:
        user = await users_service.get_by_username(session, username)
        await roles_service.revoke_role(session, user, role, actor=SYSTEM)
        typer.echo(f"revoked {role} from {user.username}")

    run_in_session(work)


# tokens --------------------------------------------------------------------------------------


@tokens_app.command("purge")
def tokens_purge(
    retention: Annotated[
        int | None,
        typer.Option(
            min=0,
            help="Keep sessions that ended less than this many seconds ago "
            "(default: IDP_REFRESH_PURGE_RETENTION).",
        ),
    ] = None,
) -> None:
    """Delete ended (expired or revoked) sessions and their refresh tokens, and the ids of
    expired client assertions."""

    async def work(database: Database, settings: Settings) -> refresh_tokens.PurgeResult:
        keep = settings.refresh_purge_retention if retention is None else retention
        now = Clock().now()
        progress(f"==> purging sessions that ended before {when(now - timedelta(seconds=keep))}")
        return await refresh_tokens.purge(database, now=now, retention=keep)

    started = time.monotonic()
    result = run_with_database(work)
    progress(f"done in {time.monotonic() - started:.1f} s")
    typer.echo(
        f"purged {result.families} ended session(s) and {result.tokens} refresh token(s); "
        f"{result.assertions} used client assertion(s)"
    )


# keys ----------------------------------------------------------------------------------------


def run_keys(action: Callable[[KeyStore], T], *, report: bool = False) -> T:
    """Run `action` on the keystore; with `report`, key generation is announced on stderr."""
    try:
        store = keystore_for(load_settings())
        if report:
            store.progress = progress
        return action(store)
    except IdpError as exc:
        raise fail(exc.message) from None
    except OSError as exc:
        raise fail(f"keystore: {exc.strerror or exc}") from None


def operator() -> Actor:
    """The operating-system user running the command, as the audit log records key changes."""
    try:
        name = getpass.getuser()
    except (OSError, KeyError):  # no name for this uid, e.g. in a container
        name = f"uid {os.getuid()}"
    return Actor(user_id=None, username=f"os:{name}"[:150])


def database_configured(settings: Settings) -> bool:
    """False for an SQLite file that does not exist: auditing must not create an empty one."""
    if not settings.is_sqlite:
        return True
    path = make_url(settings.database_url).database
    return path is not None and path not in ("", ":memory:") and Path(path).is_file()


def audit_keys(record: Callable[[AsyncSession, Actor], Awaitable[None]]) -> None:
    """Write a key change to the audit log when a database is configured.

    The change is already made: a database that cannot take the event is a warning, not a
    failure of the command.
    """
    settings = load_settings()
    if not database_configured(settings):
        return

    async def main() -> None:
        database = Database(settings)
        try:
            async with database.session() as session:
                await record(session, operator())
        finally:
            await database.dispose()

    try:
        asyncio.run(main())
    except Exception as exc:
        reason = "database unreachable" if is_unavailable(exc) else type(exc).__name__
        typer.secho(
            f"warning: the key change is not in the audit log ({reason}; "
            "is the database migrated with `idp db upgrade`?)",
            fg=typer.colors.YELLOW,
            err=True,
        )


def print_keys(records: list[KeyRecord], as_json: bool = False) -> None:
    if as_json:
        print_json(
            [
                {
                    "kid": r.kid,
                    "alg": r.alg,
                    "state": r.state.value,
                    "bits": r.bits,
                    "created_at": r.created_at,
                    "activated_at": r.activated_at,
                    "retired_at": r.retired_at,
                    "removable_after": r.removable_after,
                }
                for r in records
            ]
        )
        return
    header = ("kid", "alg", "state", "size", "created", "activated", "retired", "removable-after")
    rows = [
        (
            r.kid,
            r.alg,
            r.state.value,
            str(r.bits) if r.bits else "?",
            when(r.created_at),
            when(r.activated_at),
            when(r.retired_at),
            when(r.removable_after),
        )
        for r in records
    ]
    print_table(header, rows)


AlgOption = Annotated[
    str | None,
    typer.Option(
        "--alg",
        help="RS256, ES256 or EdDSA for new keys (default: that of the current keys; "
        "RS256 for a new keystore).",
        show_default=False,
    ),
]
BitsOption = Annotated[
    int | None,
    typer.Option(
        "--rsa-bits",
        help="RSA size of new RS256 keys: 2048, 3072 or 4096 (default: that of the current "
        "key; 2048 for a new keystore).",
        show_default=False,
    ),
]


@keys_app.command("init")
def keys_init(alg: AlgOption = None, rsa_bits: BitsOption = None) -> None:
    """Create the keystore: an active key and a next one (no-op when they exist)."""
    print_keys(run_keys(lambda store: store.init(alg, rsa_bits), report=True))


@keys_app.command("rotate")
def keys_rotate(
    force: Annotated[
        bool, typer.Option(help="Promote even if `next` was published too recently.")
    ] = False,
    alg: AlgOption = None,
    rsa_bits: BitsOption = None,
) -> None:
    """Promote `next` to active, retire the active key, publish a new `next`."""
    records = run_keys(
        lambda store: store.rotate(force=force, alg=alg, rsa_bits=rsa_bits), report=True
    )
    print_keys(records)
    audit_keys(
        lambda session, actor: keys_service.record_rotation(session, actor, records, forced=force)
    )


@keys_app.command("list")
def keys_list(as_json: JsonOption = False) -> None:
    """Show every key: kid, alg, state, size, created, activated, retired, removable-after."""
    print_keys(run_keys(lambda store: store.list()), as_json)


@keys_app.command("revoke")
def keys_revoke(kid: str) -> None:
    """Remove a (compromised) key from the JWKS at once."""
    record = run_keys(lambda store: store.revoke(kid))
    typer.echo(f"revoked {record.kid} ({record.state.value}); servers drop it within seconds")
    audit_keys(lambda session, actor: keys_service.record_revocation(session, actor, record))


@keys_app.command("prune")
def keys_prune() -> None:
    """Remove retired keys whose last tokens have expired."""
    removed = run_keys(lambda store: store.prune())
    typer.echo(f"removed {', '.join(removed)}" if removed else "nothing to prune")
    if removed:
        audit_keys(lambda session, actor: keys_service.record_prune(session, actor, removed))


def main() -> None:  # pragma: no cover - console entry point
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    app()


# clients: in a module of their own, which uses the helpers above (hence imported last).
from idp.cli_clients import clients_app  # noqa: E402

app.add_typer(clients_app, name="clients")
