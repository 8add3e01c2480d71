"""Queries on OAuth clients, their secrets, their roles and used client-assertion ids."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from idp.models import (
    Client,
    ClientRole,
    ClientSecret,
    Permission,
    Role,
    RolePermission,
    UsedAssertion,
)
from idp.repository.base import insert_for


async def get(session: AsyncSession, client_id: str) -> Client | None:
    return await session.get(Client, client_id)


async def lock(session: AsyncSession, client_id: str) -> Client | None:
    """The client's row, locked until the transaction ends (PostgreSQL; SQLite locks writes)."""
    result = await session.execute(select(Client).where(Client.id == client_id).with_for_update())
    return result.scalar_one_or_none()


async def list_all(session: AsyncSession) -> Sequence[Client]:
    return (await session.execute(select(Client).order_by(Client.id))).scalars().all()


async def add(session: AsyncSession, client: Client) -> Client:
    session.add(client)
    await session.flush()
    return client


async def delete_client(session: AsyncSession, client_id: str) -> bool:
    result = await session.execute(delete(Client).where(Client.id == client_id))
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def secrets_of(session: AsyncSession, client_id: str) -> Sequence[ClientSecret]:
    result = await session.execute(
        select(ClientSecret)
        .where(ClientSecret.client_id == client_id)
        .order_by(ClientSecret.created_at)
    )
    return result.scalars().all()


async def add_secret(session: AsyncSession, secret: ClientSecret) -> ClientSecret:
    session.add(secret)
    await session.flush()
    return secret


async def expire_secrets(
    session: AsyncSession, client_id: str, *, at: datetime, keep: ClientSecret | None = None
) -> int:
    """Give every live secret of the client but `keep` the expiry `at` (never later than one
    it already has); how many changed."""
    conditions = [
        ClientSecret.client_id == client_id,
        (ClientSecret.expires_at.is_(None)) | (ClientSecret.expires_at > at),
    ]
    if keep is not None:
        conditions.append(ClientSecret.id != keep.id)
    result = await session.execute(update(ClientSecret).where(*conditions).values(expires_at=at))
    return int(result.rowcount)  # type: ignore[attr-defined]


async def delete_expired_secrets(session: AsyncSession, client_id: str, *, now: datetime) -> None:
    await session.execute(
        delete(ClientSecret).where(
            ClientSecret.client_id == client_id, ClientSecret.expires_at <= now
        )
    )


async def role_names_of(session: AsyncSession, client_id: str) -> list[str]:
    result = await session.execute(
        select(Role.name)
        .join(ClientRole, ClientRole.role_id == Role.id)
        .where(ClientRole.client_id == client_id)
        .order_by(Role.name)
    )
    return list(result.scalars().all())


async def add_role(session: AsyncSession, client_id: str, role_id: int) -> bool:
    """Link the role; False when the client already held it."""
    values = {"client_id": client_id, "role_id": role_id}
    insert = insert_for(session)
    result = await session.execute(insert(ClientRole).values(**values).on_conflict_do_nothing())
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def remove_role(session: AsyncSession, client_id: str, role_id: int) -> bool:
    result = await session.execute(
        delete(ClientRole).where(ClientRole.client_id == client_id, ClientRole.role_id == role_id)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def record_assertion(
    session: AsyncSession, client_id: str, jti_hash: str, *, expires_at: datetime
) -> bool:
    """Remember an assertion id until it expires; False when it was already used."""
    insert = insert_for(session)
    result = await session.execute(
        insert(UsedAssertion)
        .values(client_id=client_id, jti_hash=jti_hash, expires_at=expires_at)
        .on_conflict_do_nothing()
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def purge_assertions(session: AsyncSession, *, before: datetime) -> int:
    result = await session.execute(delete(UsedAssertion).where(UsedAssertion.expires_at <= before))
    return int(result.rowcount)  # type: ignore[attr-defined]


async def permission_codes(session: AsyncSession, client_id: str) -> set[str]:
    """The idp permissions the client's roles grant, in one statement."""
    result = await session.execute(
        select(Permission.code)
        .select_from(ClientRole)
        .join(RolePermission, RolePermission.role_id == ClientRole.role_id)
        .join(Permission, Permission.id == RolePermission.permission_id)
        .where(ClientRole.client_id == client_id)
    )
    return set(result.scalars().all())


async def enabled_redirect_uris(session: AsyncSession) -> list[str]:
    """Every redirect URI of every enabled client."""
    result = await session.execute(select(Client.redirect_uris).where(Client.enabled.is_(True)))
    return [uri for uris in result.scalars().all() for uri in uris or []]


async def secrets_by_client(
    session: AsyncSession, client_ids: Sequence[str]
) -> dict[str, list[ClientSecret]]:
    """The secrets of each of the clients, oldest first, in one statement."""
    result = await session.execute(
        select(ClientSecret)
        .where(ClientSecret.client_id.in_(client_ids))
        .order_by(ClientSecret.created_at)
    )
    found: dict[str, list[ClientSecret]] = {client_id: [] for client_id in client_ids}
    for secret in result.scalars():
        found[secret.client_id].append(secret)
    return found


async def role_names_by_client(
    session: AsyncSession, client_ids: Sequence[str]
) -> dict[str, list[str]]:
    """The role names of each of the clients, sorted, in one statement."""
    result = await session.execute(
        select(ClientRole.client_id, Role.name)
        .join(Role, Role.id == ClientRole.role_id)
        .where(ClientRole.client_id.in_(client_ids))
        .order_by(Role.name)
    )
    found: dict[str, list[str]] = {client_id: [] for client_id in client_ids}
    for client_id, name in result.all():
        found[client_id].append(name)
    return found
