"""idp-verifier against a live idp server: real tokens, rotation without restart, one
refetch for a burst of unknown kids, cached keys while idp is down, attacks rejected."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import jwt
import pytest

from idp_verifier import (
    InvalidSignatureError,
    SyncTokenVerifier,
    TokenError,
    TokenVerifier,
    UnknownKeyError,
)
from tests.helpers import PASSWORD, b64url, hs256, unsigned
from tests.live import LiveServer, live_server

pytestmark = pytest.mark.slow  # starts `idp serve` processes

AUDIENCE = "api.test"


def _login(server: LiveServer) -> str:
    response = httpx.post(
        f"{server.url}/token",
        data={
            "grant_type": "password",
            "username": "alice",
            "password": PASSWORD,
            "client_id": "orders-web",
            "scope": "orders:read",
        },
    )
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


@pytest.fixture
def server(e2e_database: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    with live_server(e2e_database, tmp_path, env={"IDP_JWKS_MAX_AGE": "1"}) as live:
        assert (
            live.idp(
                "users",
                "create",
                "alice",
                "--email",
                "a@example.com",
                "--role",
                "admin",
                stdin=PASSWORD + "\n",
            ).returncode
            == 0
        )
        live.register_client(
            "orders-web",
            client_type="public",
            grant_types=["password", "refresh_token"],
            scopes=["orders:read"],
        )
        yield live


async def test_real_tokens_rotation_unknown_kid_burst_and_idp_down(server: LiveServer) -> None:
    fetches: list[str] = []

    async def count(request: httpx.Request) -> None:
        fetches.append(request.url.path)

    client = httpx.AsyncClient(event_hooks={"request": [count]}, timeout=5)
    async with TokenVerifier(
        server.url, AUDIENCE, http_client=client, unknown_kid_cooldown=1, min_cache_ttl=60
    ) as verifier:
        token = _login(server)
        claims = await verifier.verify(token)
        assert claims.username == "alice"
        assert claims.roles == frozenset({"admin"})
        assert claims.scopes == frozenset({"orders:read"})
        assert fetches.count("/.well-known/jwks.json") == 1

        # A burst of 1,000 tokens with an unknown kid: one refetch between them.
        forged = [
            unsigned(
                {"alg": "RS256", "typ": "at+jwt", "kid": f"ghost-{i % 7}"}, {"sub": "x"}, b"sig"
            )
            for i in range(1000)
        ]
        before = fetches.count("/.well-known/jwks.json")
        results = await asyncio.gather(
            *(verifier.verify(t) for t in forged), return_exceptions=True
        )
        assert all(isinstance(r, UnknownKeyError) for r in results)
        assert fetches.count("/.well-known/jwks.json") - before == 1

        # Rotation seen without restart: a token signed by the promoted key verifies.
        await asyncio.sleep(1.1)  # the cooldown passes, as it would between real rotations
        assert server.idp("keys", "rotate", "--force").returncode == 0
        deadline = time.monotonic() + 10
        while (
            jwt.get_unverified_header(new := _login(server))["kid"]
            == jwt.get_unverified_header(token)["kid"]
        ):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.2)
        assert (await verifier.verify(new)).username == "alice"
        assert (await verifier.verify(token)).username == "alice"  # the retired key still verifies

        # idp down: the cached keys keep verifying.
        server.stop()
        assert (await verifier.verify(new)).username == "alice"
        fresh = TokenVerifier(server.url, AUDIENCE)
        with pytest.raises(TokenError):
            await fresh.verify(new)  # nothing cached and nobody to ask
        await fresh.aclose()
    await client.aclose()


def test_sync_verifier_and_attacks_against_live_keys(server: LiveServer) -> None:
    token = _login(server)
    head, body, signature = token.split(".")
    public_jwk = httpx.get(f"{server.url}/.well-known/jwks.json").content
    with SyncTokenVerifier(server.url, AUDIENCE) as verifier:
        assert verifier.verify(token).username == "alice"
        kid = jwt.get_unverified_header(token)["kid"]
        attacks = [
            unsigned(
                {"alg": "none", "typ": "at+jwt", "kid": kid},
                jwt.decode(token, options={"verify_signature": False}),
            ),
            hs256({"alg": "HS256", "kid": kid, "typ": "at+jwt"}, {"sub": "x"}, public_jwk),
            f"{head}.{body}.",
            f"{head}.{body}.{signature[:-8]}",
            f"{head}.{b64url(b'{}')}.{signature}",
        ]
        for attack in attacks:
            with pytest.raises(TokenError):
                verifier.verify(attack)
        with pytest.raises(InvalidSignatureError):
            verifier.verify(f"{head}.{body}.{signature[:-4]}AAAA")
    with SyncTokenVerifier(server.url, "another-service") as other, pytest.raises(TokenError):
        other.verify(token)
