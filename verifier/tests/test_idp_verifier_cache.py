"""The verified-token cache: a repeated token skips the signature check, until it must not."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from idp_verifier import (
    Claims,
    InvalidAudienceError,
    InvalidSignatureError,
    TokenExpiredError,
    TokenVerifier,
    UnknownKeyError,
)
from idp_verifier.cache import VerifiedTokenCache
from idp_verifier.keys import VerificationKey
from idp_verifier.testing import AUDIENCE, FakeClock, Signer

ISSUER = "https://idp.example.com"
JWKS_URI = f"{ISSUER}/.well-known/jwks.json"


@pytest.fixture(scope="module")
def first() -> Signer:
    return Signer.rsa("first")


@pytest.fixture(scope="module")
def second() -> Signer:
    return Signer.ec("second")


@pytest.fixture
def published(first: Signer, second: Signer) -> list[dict[str, Any]]:
    """The key set the mock issuer serves; tests may change it."""
    return [first.jwk(), second.jwk()]


@pytest.fixture
async def client(published: list[dict[str, Any]]) -> AsyncIterator[httpx.AsyncClient]:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200, json={"keys": published}, headers={"Cache-Control": "max-age=300"}
        )

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        yield client


@pytest.fixture
def signature_checks(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The kids of every signature verification actually performed."""
    checks: list[str] = []
    original = VerificationKey.verify

    def counting(self: VerificationKey, signature: bytes, signing_input: bytes) -> bool:
        checks.append(self.kid)
        return original(self, signature, signing_input)

    monkeypatch.setattr(VerificationKey, "verify", counting)
    return checks


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make_verifier(client: httpx.AsyncClient, clock: FakeClock) -> Callable[..., TokenVerifier]:
    def make(**options: Any) -> TokenVerifier:
        return TokenVerifier(
            ISSUER, AUDIENCE, jwks_uri=JWKS_URI, http_client=client, clock=clock, **options
        )

    return make


async def test_a_repeated_token_costs_no_signature_check(
    make_verifier: Callable[..., TokenVerifier], first: Signer, signature_checks: list[str]
) -> None:
    token = first.token(ISSUER)
    async with make_verifier() as verifier:
        claims = await verifier.verify(token)
        for _ in range(100):
            assert await verifier.verify(token) is claims

    assert signature_checks == ["first"]


async def test_cached_entries_end_at_the_token_expiry(
    make_verifier: Callable[..., TokenVerifier],
    first: Signer,
    clock: FakeClock,
    signature_checks: list[str],
) -> None:
    exp = int(clock.now) + 100
    token = first.token(ISSUER, exp=exp)
    async with make_verifier(leeway=30) as verifier:
        await verifier.verify(token)
        clock.now = exp - 0.5
        await verifier.verify(token)
        assert len(signature_checks) == 1

        # At exp the entry is gone; the leeway still admits the token, checked in full.
        clock.now = exp
        await verifier.verify(token)
        await verifier.verify(token)
        assert len(signature_checks) == 3

        clock.now = exp + 30
        with pytest.raises(TokenExpiredError):
            await verifier.verify(token)


async def test_the_cache_is_bounded_and_least_recently_used_goes_first(
    make_verifier: Callable[..., TokenVerifier], first: Signer, signature_checks: list[str]
) -> None:
    a, b, c = (first.token(ISSUER) for _ in range(3))
    async with make_verifier(verified_cache_size=2) as verifier:
        for token in (a, b, a, c):  # c evicts b, the least recently used
            await verifier.verify(token)
        assert len(signature_checks) == 3

        await verifier.verify(a)
        await verifier.verify(c)
        assert len(signature_checks) == 3
        await verifier.verify(b)
        assert len(signature_checks) == 4


async def test_a_zero_size_disables_the_cache(
    make_verifier: Callable[..., TokenVerifier], first: Signer, signature_checks: list[str]
) -> None:
    token = first.token(ISSUER)
    async with make_verifier(verified_cache_size=0) as verifier:
        for _ in range(3):
            await verifier.verify(token)

    assert len(signature_checks) == 3


async def test_tokens_of_a_removed_key_leave_the_cache_at_the_next_refresh(
    make_verifier: Callable[..., TokenVerifier],
    first: Signer,
    second: Signer,
    published: list[dict[str, Any]],
    clock: FakeClock,
    signature_checks: list[str],
) -> None:
    exp = int(clock.now) + 10_000
    revoked, kept = first.token(ISSUER, exp=exp), second.token(ISSUER, exp=exp)
    async with make_verifier() as verifier:
        await verifier.verify(revoked)
        await verifier.verify(kept)
        published[:] = [second.jwk()]  # `idp keys revoke first`
        clock.advance(300)
        await verifier.verify(kept)  # starts the refetch; the cached keys serve meanwhile
        await verifier.wait_for_refresh()

        with pytest.raises(UnknownKeyError):
            await verifier.verify(revoked)
        await verifier.verify(kept)

    assert signature_checks == ["first", "second"]


async def test_a_key_replaced_under_the_same_kid_evicts_its_tokens(
    make_verifier: Callable[..., TokenVerifier],
    first: Signer,
    published: list[dict[str, Any]],
    clock: FakeClock,
    signature_checks: list[str],
) -> None:
    token = first.token(ISSUER)
    async with make_verifier() as verifier:
        await verifier.verify(token)
        published[:] = [Signer.rsa("first").jwk()]
        clock.advance(300)
        await verifier.verify(token)  # starts the refetch; the cached keys serve meanwhile
        await verifier.wait_for_refresh()

        with pytest.raises(InvalidSignatureError):
            await verifier.verify(token)


async def test_rejected_tokens_are_not_cached(
    make_verifier: Callable[..., TokenVerifier], first: Signer, signature_checks: list[str]
) -> None:
    token = first.token(ISSUER, aud="billing")
    async with make_verifier() as verifier:
        for _ in range(2):
            with pytest.raises(InvalidAudienceError):
                await verifier.verify(token)

    assert len(signature_checks) == 2


def _claims() -> Claims:
    return Claims("s", "u", "e", frozenset(), frozenset(), "c", 0, 0, "j", {})


def test_the_cache_itself() -> None:
    cache = VerifiedTokenCache(2)
    claims = _claims()
    now = time.time()

    cache.put("expired", claims, now, "k1", now)
    cache.put("a", claims, now + 10, "k1", now)
    cache.put("b", claims, now + 10, "k2", now)

    assert len(cache) == 2
    assert cache.get("expired", now) is None
    assert cache.get("a", now + 9.9) is claims
    assert cache.get("a", now + 10) is None
    assert cache.evict_kids({"k2"}) == 1
    assert cache.get("b", now) is None
    with pytest.raises(ValueError, match="at least one"):
        VerifiedTokenCache(0)
