"""`idp clients`: the OAuth client registry from the command line.

Thin like the rest of the command: it parses options into the admin API's schemas and calls
the same services, acting as the operating-system user (`os:<name>` in the audit log, with
the database's full authority, like `idp keys`). Running servers see a change within
IDP_CLIENT_CACHE_TTL seconds.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from sqlalchemy.ext.asyncio import AsyncSession

from idp.cli import fail, operator, run_in_session, validated
from idp.configuration.clock import Clock
from idp.configuration.settings import Settings
from idp.schemas.clients import ClientCreate, ClientOut, ClientUpdate
from idp.services import clients as clients_service

clients_app = typer.Typer(
    help="Manage OAuth clients: their secrets, grants, scopes, audiences and roles.",
    no_args_is_help=True,
)

NameOption = Annotated[str | None, typer.Option("--name", help="Display name.")]
AuthMethodOption = Annotated[
    str | None,
    typer.Option(
        "--auth-method",
        help="client_secret_basic, client_secret_post, private_key_jwt or none "
        "(default: client_secret_basic, or none for a public client).",
        show_default=False,
    ),
]
GrantOption = Annotated[
    list[str] | None,
    typer.Option(
        "--grant",
        help="Grant type (client_credentials, password, refresh_token, authorization_code); "
        "repeatable.",
    ),
]
ScopeOption = Annotated[list[str] | None, typer.Option("--scope", help="Scope; repeatable.")]
AudienceOption = Annotated[
    list[str] | None,
    typer.Option("--audience", help="Audience it may ask for (default IDP_AUDIENCE); repeatable."),
]
DefaultAudienceOption = Annotated[
    str | None, typer.Option("--default-audience", help="The `aud` when a request names none.")
]
AdminApiOption = Annotated[
    bool | None,
    typer.Option(
        "--admin-api/--no-admin-api",
        help="May request tokens for idp's own admin API.",
        show_default=False,
    ),
]
RedirectOption = Annotated[
    list[str] | None, typer.Option("--redirect-uri", help="Redirect URI; repeatable.")
]
LogoutRedirectOption = Annotated[
    list[str] | None,
    typer.Option(
        "--post-logout-redirect-uri", help="Where OpenID Connect logout may redirect; repeatable."
    ),
]
JwksFileOption = Annotated[
    Path | None,
    typer.Option("--jwks-file", help="private_key_jwt: a JSON file with the client's public keys."),
]
JwksUriOption = Annotated[
    str | None, typer.Option("--jwks-uri", help="private_key_jwt: where the client's keys are.")
]
AccessTtlOption = Annotated[
    int | None,
    typer.Option("--access-token-ttl", help="Seconds; at most IDP_ACCESS_TOKEN_TTL."),
]
RefreshTtlOption = Annotated[
    int | None,
    typer.Option("--refresh-token-ttl", help="Seconds; at most IDP_REFRESH_TOKEN_TTL."),
]
FirstPartyOption = Annotated[
    bool | None,
    typer.Option(
        "--first-party/--third-party",
        help="The operator's own application, or not.",
        show_default=False,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def _read_jwks(path: Path | None) -> dict[str, Any] | None:
    if path is None:
        return None
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise fail(f"--jwks-file: {exc.strerror or exc}") from None
    except ValueError:
        raise fail(f"--jwks-file: {path} is not JSON") from None
    if not isinstance(value, dict):
        raise fail("--jwks-file: a key set is a JSON object with `keys`")
    return value


def _fields(**options: Any) -> dict[str, Any]:
    """The options that were given: the schema applies only those (an empty list counts as
    not given: typer cannot tell them apart)."""
    return {name: value for name, value in options.items() if value not in (None, [])}


def _print_client(client: ClientOut) -> None:
    def listed(values: list[str] | None) -> str:
        return ", ".join(values) if values else "-"

    rows = [
        ("client_id", client.client_id),
        ("name", client.name),
        ("type", client.client_type),
        ("auth method", client.token_endpoint_auth_method),
        ("enabled", str(client.enabled)),
        ("grants", listed(client.grant_types)),
        ("scopes", listed(client.scopes)),
        ("audiences", listed(client.audiences) if client.audiences is not None else "IDP_AUDIENCE"),
        ("default audience", client.default_audience or "-"),
        ("admin api", str(client.admin_api)),
        ("first party", str(client.first_party)),
        ("redirect uris", listed(client.redirect_uris)),
        ("post-logout redirect uris", listed(client.post_logout_redirect_uris)),
        ("jwks uri", client.jwks_uri or ("(inline key set)" if client.jwks else "-")),
        ("access token ttl", str(client.access_token_ttl or "IDP_ACCESS_TOKEN_TTL")),
        ("refresh token ttl", str(client.refresh_token_ttl or "IDP_REFRESH_TOKEN_TTL")),
        ("roles", listed(client.roles)),
        (
            "secrets",
            listed(
                [
                    f"...{s.hint} (expires {s.expires_at:%Y-%m-%d %H:%M:%SZ})"
                    if s.expires_at
                    else f"...{s.hint}"
                    for s in client.secrets
                ]
            ),
        ),
    ]
    for label, value in rows:
        typer.echo(f"{label + ':':<19} {value}")


def _print_secret(client_id: str, secret: str) -> None:
    """The secret on standard output, this once; it is stored only as a keyed hash."""
    typer.echo(f"client_id:     {client_id}")
    typer.echo(f"client_secret: {secret}")
    typer.secho(
        "The secret is shown only this once and cannot be shown again: store it now.",
        fg=typer.colors.YELLOW,
    )


@clients_app.command("create")
def clients_create(
    client_id: Annotated[
        str | None, typer.Option("--id", help="The client id (default: generated).")
    ] = None,
    name: NameOption = None,
    public: Annotated[
        bool,
        typer.Option("--public/--confidential", help="A public client has no secret."),
    ] = False,
    auth_method: AuthMethodOption = None,
    grant: GrantOption = None,
    scope: ScopeOption = None,
    audience: AudienceOption = None,
    default_audience: DefaultAudienceOption = None,
    admin_api: AdminApiOption = None,
    redirect_uri: RedirectOption = None,
    post_logout_redirect_uri: LogoutRedirectOption = None,
    jwks_file: JwksFileOption = None,
    jwks_uri: JwksUriOption = None,
    access_token_ttl: AccessTtlOption = None,
    refresh_token_ttl: RefreshTtlOption = None,
    first_party: FirstPartyOption = None,
) -> None:
    """Register a client; a secret-authenticated one's secret is printed this once."""
    data = validated(
        ClientCreate,
        client_type="public" if public else "confidential",
        **_fields(
            client_id=client_id,
            name=name,
            token_endpoint_auth_method=auth_method,
            grant_types=grant,
            scopes=scope,
            audiences=audience,
            default_audience=default_audience,
            admin_api=admin_api,
            redirect_uris=redirect_uri,
            post_logout_redirect_uris=post_logout_redirect_uri,
            jwks=_read_jwks(jwks_file),
            jwks_uri=jwks_uri,
            access_token_ttl=access_token_ttl,
            refresh_token_ttl=refresh_token_ttl,
            first_party=first_party,
        ),
    )

    async def work(session: AsyncSession, settings: Settings) -> tuple[str, str | None]:
        client, secret = await clients_service.create_client(
            session,
            settings,
            data,
            actor=operator(),
            pepper=clients_service.pepper_for(settings),
            now=Clock().now(),
        )
        return client.id, secret

    # Printed only once the transaction has committed: a secret never outlives a rollback.
    created, secret = run_in_session(work)
    typer.echo(f"created client {created}")
    if secret is not None:
        _print_secret(created, secret)


@clients_app.command("list")
def clients_list(as_json: JsonOption = False) -> None:
    """List clients: id, type, auth method, enabled, grants, roles."""

    async def work(session: AsyncSession, _settings: Settings) -> list[ClientOut]:
        return await clients_service.describe_all(
            session, await clients_service.list_clients(session)
        )

    clients = run_in_session(work)
    if as_json:
        typer.echo(json.dumps([c.model_dump(mode="json") for c in clients], indent=2))
        return
    rows = [("client_id", "type", "auth method", "enabled", "grants", "roles")]
    rows += [
        (
            c.client_id,
            c.client_type,
            c.token_endpoint_auth_method,
            str(c.enabled),
            ",".join(c.grant_types) or "-",
            ",".join(c.roles) or "-",
        )
        for c in clients
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        typer.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def _show(client_id: str) -> ClientOut:
    async def work(session: AsyncSession, _settings: Settings) -> ClientOut:
        return await clients_service.describe(
            session, await clients_service.get_client(session, client_id)
        )

    return run_in_session(work)


@clients_app.command("show")
def clients_show(client_id: str, as_json: JsonOption = False) -> None:
    """Show one client (secrets by their last four characters only)."""
    client = _show(client_id)
    if as_json:
        typer.echo(json.dumps(client.model_dump(mode="json"), indent=2))
    else:
        _print_client(client)


def _update(client_id: str, data: ClientUpdate) -> ClientOut:
    async def work(session: AsyncSession, settings: Settings) -> ClientOut:
        client = await clients_service.update_client(
            session, settings, client_id, data, actor=operator(), now=Clock().now()
        )
        return await clients_service.describe(session, client)

    return run_in_session(work)


@clients_app.command("update")
def clients_update(
    client_id: str,
    name: NameOption = None,
    auth_method: AuthMethodOption = None,
    grant: GrantOption = None,
    scope: ScopeOption = None,
    audience: AudienceOption = None,
    default_audience: DefaultAudienceOption = None,
    admin_api: AdminApiOption = None,
    redirect_uri: RedirectOption = None,
    post_logout_redirect_uri: LogoutRedirectOption = None,
    jwks_file: JwksFileOption = None,
    jwks_uri: JwksUriOption = None,
    access_token_ttl: AccessTtlOption = None,
    refresh_token_ttl: RefreshTtlOption = None,
    first_party: FirstPartyOption = None,
) -> None:
    """Change the given fields; a repeatable option replaces the whole list."""
    values = _fields(
        name=name,
        token_endpoint_auth_method=auth_method,
        grant_types=grant,
        scopes=scope,
        audiences=audience,
        default_audience=default_audience,
        admin_api=admin_api,
        redirect_uris=redirect_uri,
        post_logout_redirect_uris=post_logout_redirect_uri,
        jwks=_read_jwks(jwks_file),
        jwks_uri=jwks_uri,
        access_token_ttl=access_token_ttl,
        refresh_token_ttl=refresh_token_ttl,
        first_party=first_party,
    )
    if not values:
        raise fail("nothing to change: give at least one option (see --help)")
    _update(client_id, validated(ClientUpdate, **values))
    typer.echo(f"updated client {client_id}: {', '.join(sorted(values))}")


@clients_app.command("disable")
def clients_disable(client_id: str) -> None:
    """Disable a client: its token requests fail (servers: within IDP_CLIENT_CACHE_TTL)."""
    _update(client_id, ClientUpdate(enabled=False))
    typer.echo(f"disabled client {client_id}")


@clients_app.command("enable")
def clients_enable(client_id: str) -> None:
    """Enable a disabled client."""
    _update(client_id, ClientUpdate(enabled=True))
    typer.echo(f"enabled client {client_id}")


@clients_app.command("rotate-secret")
def clients_rotate_secret(
    client_id: str,
    overlap: Annotated[
        int,
        typer.Option(
            min=0,
            max=clients_service.MAX_SECRET_OVERLAP,
            help="Seconds the current secrets keep working (0 after a leak).",
        ),
    ] = clients_service.DEFAULT_SECRET_OVERLAP,
) -> None:
    """Give the client a new secret, printed this once; the old ones stop after --overlap."""

    async def work(session: AsyncSession, settings: Settings) -> tuple[str, Any]:
        return await clients_service.rotate_secret(
            session,
            client_id,
            actor=operator(),
            pepper=clients_service.pepper_for(settings),
            now=Clock().now(),
            overlap=overlap,
        )

    secret, until = run_in_session(work)
    if until is None:
        typer.echo(f"new secret for {client_id} (it had no other live secret)")
    else:
        typer.echo(
            f"new secret for {client_id}; the previous ones stop at {until:%Y-%m-%d %H:%M:%SZ}"
        )
    _print_secret(client_id, secret)


@clients_app.command("delete")
def clients_delete(
    client_id: str,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete a client with its secrets and role grants."""
    if not yes and not typer.confirm(f"Delete client {client_id}?"):
        raise fail("not deleted")

    async def work(session: AsyncSession, settings: Settings) -> None:
        await clients_service.delete_client(session, settings, client_id, actor=operator())

    run_in_session(work)
    typer.echo(f"deleted client {client_id}")


@clients_app.command("grant-role")
def clients_grant_role(client_id: str, role: str) -> None:
    """Give ROLE to the client: its client_credentials tokens carry it."""

    async def work(session: AsyncSession, _settings: Settings) -> bool:
        return await clients_service.grant_role(session, client_id, role, actor=operator())

    granted = run_in_session(work)
    typer.echo(f"granted {role} to {client_id}" if granted else f"{client_id} already has {role}")


@clients_app.command("revoke-role")
def clients_revoke_role(client_id: str, role: str) -> None:
    """Take ROLE from the client."""

    async def work(session: AsyncSession, _settings: Settings) -> None:
        await clients_service.revoke_role(session, client_id, role, actor=operator())

    run_in_session(work)
    typer.echo(f"revoked {role} from {client_id}")
