"""Issue 13 item 13: keys only over https (plain http to loopback, or when told), and a slow
issuer never stalls verification once keys are held."""

from __future__ import annotations

import asyncio
import logging
import time

import httpx
import pytest

from idp_verifier import JWKSUnavailableError, SyncTokenVerifier, TokenVerifier
from idp_verifier.testing import AUDIENCE, FakeClock, IssuerServer, Signer

JWKS = "/.well-known/jwks.json"
SLOW = 3.0  # seconds the issuer takes to answer once keys are cached


@pytest.fixture(scope="module")
def signer() -> Signer:
    return Signer.rsa("transport-1")


@pytest.fixture
def issuer(server: IssuerServer, signer: Signer) -> IssuerServer:
    server.reset([signer.jwk()])
    server.delay = 0.0
    return server


@pytest.mark.parametrize(
    ("issuer_url", "jwks_uri"),
    [
        ("http://idp.example.com", None),
        ("http://idp.example.com", "https://idp.example.com/jwks.json"),
        ("https://idp.example.com", "http://idp.example.com/jwks.json"),
        ("http://localhost:8080", "http://proxy:8080/.well-known/jwks.json"),
        ("https://idp.example.com", "http://10.0.0.5/jwks.json"),
        ("https://idp.example.com", "http://127.0.0.1.nip.io/jwks.json"),
        ("https://idp.example.com", "http://keys.localhost/jwks.json"),
        ("https://idp.example.com", "ftp://idp.example.com/jwks.json"),
    ],
)
@pytest.mark.parametrize("kind", [TokenVerifier, SyncTokenVerifier])
def test_plain_http_beyond_loopback_is_refused(
    kind: type[TokenVerifier | SyncTokenVerifier], issuer_url: str, jwks_uri: str | None
) -> None:
    with pytest.raises(ValueError, match=r"not loopback|not an http"):
        kind(issuer_url, AUDIENCE, jwks_uri=jwks_uri)


@pytest.mark.parametrize(
    ("issuer_url", "jwks_uri", "allow_http"),
    [
        ("http://127.0.0.1:8000", None, False),
        ("http://localhost:8000", None, False),
        ("http://[::1]:8000", None, False),
        ("http://localhost:8080", "http://127.0.0.2:8080/jwks.json", False),
        ("https://idp.example.com", None, False),
        ("http://localhost:8080", "http://proxy:8080/.well-known/jwks.json", True),
        ("http://idp.internal", None, True),
    ],
)
async def test_https_loopback_or_an_explicit_opt_out_is_accepted(
    issuer_url: str, jwks_uri: str | None, allow_http: bool
) -> None:
    verifier = TokenVerifier(issuer_url, AUDIENCE, jwks_uri=jwks_uri, allow_http=allow_http)
    await verifier.aclose()
    SyncTokenVerifier(issuer_url, AUDIENCE, jwks_uri=jwks_uri, allow_http=allow_http).close()


async def test_discovered_plain_http_jwks_uri_is_refused(
    caplog: pytest.LogCaptureFixture,
) -> None:
    issuer = "https://idp.example.com"
    requested: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        requested.append(str(request.url))
        return httpx.Response(
            200, json={"issuer": issuer, "jwks_uri": "http://keys.example.com/jwks.json"}
        )

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        verifier = TokenVerifier(issuer, AUDIENCE, http_client=client)
        with caplog.at_level(logging.WARNING, "idp_verifier"), pytest.raises(JWKSUnavailableError):
            await verifier.start()
        await verifier.aclose()
    assert requested == [f"{issuer}/.well-known/oauth-authorization-server"]
    assert "plain http to a host that is not loopback" in caplog.text


async def test_a_slow_issuer_does_not_stall_verify(issuer: IssuerServer, signer: Signer) -> None:
    clock = FakeClock()
    token = signer.token(issuer.issuer, exp=int(clock.now) + 10_000)
    other = signer.token(issuer.issuer, exp=int(clock.now) + 10_000)
    async with TokenVerifier(
        issuer.issuer, AUDIENCE, jwks_uri=issuer.jwks_uri, clock=clock, timeout=10
    ) as verifier:
        await verifier.verify(token)
        issuer.delay = SLOW
        clock.advance(301)  # the key set is stale: a refetch is due

        started = time.monotonic()
        claims = await asyncio.gather(verifier.verify(token), verifier.verify(other))
        elapsed = time.monotonic() - started

        assert elapsed < 0.5, f"verify waited {elapsed:.1f}s for the issuer"
        assert [c.username for c in claims] == ["alice", "alice"]
        await verifier.wait_for_refresh()
        assert issuer.hits[JWKS] == 2  # one background refetch for both


def test_a_slow_issuer_does_not_stall_the_sync_verify(issuer: IssuerServer, signer: Signer) -> None:
    clock = FakeClock()
    token = signer.token(issuer.issuer, exp=int(clock.now) + 10_000)
    with SyncTokenVerifier(
        issuer.issuer, AUDIENCE, jwks_uri=issuer.jwks_uri, clock=clock, timeout=10
    ) as verifier:
        verifier.verify(token)
        issuer.delay = SLOW
        clock.advance(301)

        started = time.monotonic()
        for _ in range(20):
            assert verifier.verify(token).username == "alice"
        elapsed = time.monotonic() - started

        assert elapsed < 0.5, f"verify waited {elapsed:.1f}s for the issuer"
        verifier.wait_for_refresh(10)
        assert issuer.hits[JWKS] == 2
