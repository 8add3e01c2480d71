"""The OAuth client registry's administration: the service rules, `/admin/clients` over HTTP
(who may do what, validation, secrets shown once and never logged), and what /token sees."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from idp.configuration.exceptions import ConflictError
from idp.configuration.settings import Settings
from idp.schemas.clients import ClientUpdate
from idp.services import clients as clients_service
from idp.services.permissions import SYSTEM
from tests.helpers import make_client

# Secrets are keyed with the pepper from the test keystore, which the key ring creates.
pytestmark = pytest.mark.usefixtures("keyring")

# The service's rules -----------------------------------------------------------------------


async def test_the_built_in_client_cannot_be_deleted_or_disabled(
    session: AsyncSession, settings: Settings
) -> None:
    now = datetime.now(UTC)
    with pytest.raises(ConflictError, match="built in"):
        await clients_service.delete_client(session, settings, "idp", actor=SYSTEM)
    with pytest.raises(ConflictError, match="built in"):
        await clients_service.update_client(
            session, settings, "idp", ClientUpdate(enabled=False), actor=SYSTEM, now=now
        )
    # Other changes to it stay possible, and it is still there and enabled.
    await clients_service.update_client(
        session, settings, "idp", ClientUpdate(name="Our login"), actor=SYSTEM, now=now
    )
    client = await clients_service.get_client(session, "idp")
    assert client.enabled and client.name == "Our login"


async def test_the_configured_default_client_is_protected_too(
    session: AsyncSession, settings: Settings
) -> None:
    await make_client(session, settings, "portal")
    custom = settings.model_copy(update={"default_client_id": "portal"})
    with pytest.raises(ConflictError, match="built in"):
        await clients_service.delete_client(session, custom, "portal", actor=SYSTEM)
    await clients_service.delete_client(session, settings, "portal", actor=SYSTEM)


async def test_a_rotation_keeps_the_secret_it_made_whatever_the_clocks_say(
    session: AsyncSession, settings: Settings
) -> None:
    """The new secret is the row the rotation made, not the newest by created_at: replicas'
    clocks differ, and a secret made "earlier" than the one it replaces must still work."""
    pepper = clients_service.pepper_for(settings)
    first = await make_client(session, settings, "skewed", client_type="confidential")
    assert first is not None
    behind = datetime.now(UTC) - timedelta(seconds=30)  # another replica's clock
    new, until = await clients_service.rotate_secret(
        session, "skewed", actor=SYSTEM, pepper=pepper, now=behind, overlap=0
    )
    assert until == behind
    snapshot = await clients_service.load(session, "skewed")
    assert snapshot is not None
    assert snapshot.secret_matches(pepper, new, behind + timedelta(seconds=1))
    assert not snapshot.secret_matches(pepper, first, behind + timedelta(seconds=1))
