"""The key set: discovery, caching, rotation, single flight, cooldown, failures."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from idp_verifier import (
    JWKSUnavailableError,
    TokenVerifier,
    UnknownKeyError,
)
from idp_verifier.jwks import cache_max_age, metadata_urls
from idp_verifier.testing import AUDIENCE, DROP, FakeClock, IssuerServer, Signer

JWKS = "/.well-known/jwks.json"
METADATA = "/.well-known/oauth-authorization-server"


@pytest.fixture(scope="module")
def old() -> Signer:
    return Signer.rsa("2026-01")


@pytest.fixture(scope="module")
def new() -> Signer:
    return Signer.rsa("2026-02")


@pytest.fixture
def issuer(server: IssuerServer, old: Signer) -> IssuerServer:
    server.reset([old.jwk()])
    return server


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def long_lived(signer: Signer, issuer: IssuerServer, **claims: Any) -> str:
    """A token that outlives any clock advance in these tests."""
    return signer.token(issuer.issuer, exp=int(time.time()) + 100_000, **claims)


def mock_client(handler: Callable[[httpx.Request], httpx.Response]) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.MockTransport(handler))


# --- discovery ------------------------------------------------------------------------------


async def test_the_jwks_is_discovered_from_the_issuer_metadata(
    issuer: IssuerServer, old: Signer
) -> None:
    async with TokenVerifier(issuer.issuer, AUDIENCE) as verifier:
        await verifier.verify(old.token(issuer.issuer))

        assert verifier.jwks_uri == issuer.jwks_uri
        assert verifier.key_ids == {"2026-01"}
    assert issuer.hits == {METADATA: 1, JWKS: 1}


async def test_a_given_jwks_uri_skips_discovery(issuer: IssuerServer, old: Signer) -> None:
    async with TokenVerifier(issuer.issuer, AUDIENCE, jwks_uri=issuer.jwks_uri) as verifier:
        await verifier.verify(old.token(issuer.issuer))

    assert issuer.hits == {JWKS: 1}


async def test_keys_are_fetched_lazily_without_start(issuer: IssuerServer, old: Signer) -> None:
    verifier = TokenVerifier(issuer.issuer, AUDIENCE)
    try:
        assert issuer.hits == {}
        await verifier.verify(old.token(issuer.issuer))
        assert issuer.hits[JWKS] == 1
    finally:
        await verifier.aclose()


async def test_metadata_naming_another_issuer_is_refused(
    issuer: IssuerServer, caplog: pytest.LogCaptureFixture
) -> None:
    issuer.metadata_issuer = "https://evil.example.com"
    verifier = TokenVerifier(issuer.issuer, AUDIENCE)

    with caplog.at_level(logging.WARNING, "idp_verifier"), pytest.raises(JWKSUnavailableError):
        await verifier.start()

    await verifier.aclose()
    assert issuer.hits[JWKS] == 0
    assert "names issuer 'https://evil.example.com'" in caplog.text


async def test_discovery_falls_back_to_the_openid_configuration(old: Signer) -> None:
    issuer = "https://idp.example.com"
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        if request.url.path == "/.well-known/openid-configuration":
            return httpx.Response(200, json={"issuer": issuer, "jwks_uri": f"{issuer}/keys"})
        if request.url.path == "/keys":
            return httpx.Response(200, json={"keys": [old.jwk()]})
        return httpx.Response(404)

    async with (
        mock_client(handler) as client,
        TokenVerifier(issuer, AUDIENCE, http_client=client) as verifier,
    ):
        assert verifier.jwks_uri == f"{issuer}/keys"
    assert seen == [
        f"{issuer}/.well-known/oauth-authorization-server",
        f"{issuer}/.well-known/openid-configuration",
        f"{issuer}/keys",
    ]


def test_metadata_locations_for_an_issuer_with_a_path() -> None:
    assert metadata_urls("https://idp.example.com/tenant/") == [
        "https://idp.example.com/tenant/.well-known/oauth-authorization-server",
        "https://idp.example.com/.well-known/oauth-authorization-server/tenant",
        "https://idp.example.com/tenant/.well-known/openid-configuration",
    ]


# --- rotation, single flight, cooldown ------------------------------------------------------


async def test_a_new_key_is_seen_without_restart_with_one_refetch(
    issuer: IssuerServer, old: Signer, new: Signer
) -> None:
    async with TokenVerifier(issuer.issuer, AUDIENCE, jwks_uri=issuer.jwks_uri) as verifier:
        await verifier.verify(old.token(issuer.issuer))
        issuer.keys = [old.jwk(), new.jwk()]  # idp rotated

        await verifier.verify(new.token(issuer.issuer))
        await verifier.verify(new.token(issuer.issuer))
        await verifier.verify(old.token(issuer.issuer))

        assert verifier.key_ids == {"2026-01", "2026-02"}
    assert issuer.hits[JWKS] == 2


async def test_a_burst_with_a_new_kid_shares_one_fetch(
    issuer: IssuerServer, old: Signer, new: Signer
) -> None:
    tokens = [new.token(issuer.issuer) for _ in range(50)] * 20
    async with TokenVerifier(issuer.issuer, AUDIENCE, jwks_uri=issuer.jwks_uri) as verifier:
        issuer.keys = [old.jwk(), new.jwk()]
        issuer.delay = 0.2  # the fetch is still in flight while the whole burst arrives

        results = await asyncio.gather(*(verifier.verify(token) for token in tokens))

    assert len(results) == 1000
    assert issuer.hits[JWKS] == 2  # start() and one refetch


async def test_a_burst_with_an_unknown_kid_causes_one_refetch(
    issuer: IssuerServer, clock: FakeClock
) -> None:
    stranger = Signer.rsa("nobody-has-me")
    tokens = [stranger.token(issuer.issuer) for _ in range(10)] * 100
    async with TokenVerifier(
        issuer.issuer, AUDIENCE, jwks_uri=issuer.jwks_uri, clock=clock
    ) as verifier:
        issuer.delay = 0.1
        results = await asyncio.gather(
            *(verifier.verify(token) for token in tokens), return_exceptions=True
        )
        assert all(isinstance(result, UnknownKeyError) for result in results)
        assert issuer.hits[JWKS] == 2

        # Within the cooldown, more unknown kids cause no request at all.
        clock.advance(29)
        for token in tokens[:10]:
            with pytest.raises(UnknownKeyError):
                await verifier.verify(token)
        assert issuer.hits[JWKS] == 2

        # After it, one more.
        clock.advance(1)
        await asyncio.gather(*(verifier.verify(t) for t in tokens), return_exceptions=True)
        assert issuer.hits[JWKS] == 3


async def test_the_cooldown_is_configurable(issuer: IssuerServer, clock: FakeClock) -> None:
    stranger = Signer.ec("stranger")
    async with TokenVerifier(
        issuer.issuer, AUDIENCE, jwks_uri=issuer.jwks_uri, unknown_kid_cooldown=5, clock=clock
    ) as verifier:
        clock.advance(5)
        for _ in range(3):
            with pytest.raises(UnknownKeyError):
                await verifier.verify(stranger.token(issuer.issuer))
        assert issuer.hits[JWKS] == 2


async def test_a_cancelled_caller_does_not_cancel_the_shared_fetch(
    issuer: IssuerServer, old: Signer, new: Signer
) -> None:
    async with TokenVerifier(issuer.issuer, AUDIENCE, jwks_uri=issuer.jwks_uri) as verifier:
        issuer.keys = [old.jwk(), new.jwk()]
        issuer.delay = 0.2
        first = asyncio.create_task(verifier.verify(new.token(issuer.issuer)))
        second = asyncio.create_task(verifier.verify(new.token(issuer.issuer)))
        await asyncio.sleep(0.05)
        first.cancel()

        claims = await second

        assert claims.username == "alice"
        assert first.cancelled()
    assert issuer.hits[JWKS] == 2


# --- cache lifetime -------------------------------------------------------------------------


async def test_the_key_set_is_refetched_after_its_max_age(
    issuer: IssuerServer, old: Signer, clock: FakeClock
) -> None:
    token = long_lived(old, issuer)
    issuer.max_age = 120
    async with TokenVerifier(
        issuer.issuer, AUDIENCE, jwks_uri=issuer.jwks_uri, clock=clock
    ) as verifier:
        clock.advance(119)
        await verifier.verify(token)
        assert issuer.hits[JWKS] == 1

        clock.advance(1)
        await verifier.verify(token)
        await verifier.wait_for_refresh()
        assert issuer.hits[JWKS] == 2
        assert issuer.hits["304"] == 1  # unchanged key set: a conditional request sufficed


@pytest.mark.parametrize(
    ("max_age", "bounds", "stale_after"),
    [(1, {"min_cache_ttl": 60}, 60), (10**6, {"max_cache_ttl": 100}, 100)],
    ids=["min", "max"],
)
async def test_the_max_age_is_bounded(
    issuer: IssuerServer,
    old: Signer,
    clock: FakeClock,
    max_age: int,
    bounds: dict[str, Any],
    stale_after: float,
) -> None:
    token = long_lived(old, issuer)
    issuer.max_age = max_age
    async with TokenVerifier(
        issuer.issuer, AUDIENCE, jwks_uri=issuer.jwks_uri, clock=clock, **bounds
    ) as verifier:
        clock.advance(stale_after - 1)
        await verifier.verify(token)
        assert issuer.hits[JWKS] == 1
        clock.advance(1)
        await verifier.verify(token)
        await verifier.wait_for_refresh()
        assert issuer.hits[JWKS] == 2


async def test_a_removed_key_stops_verifying_after_the_refresh(
    issuer: IssuerServer, old: Signer, new: Signer, clock: FakeClock
) -> None:
    issuer.keys = [old.jwk(), new.jwk()]
    async with TokenVerifier(
        issuer.issuer, AUDIENCE, jwks_uri=issuer.jwks_uri, clock=clock
    ) as verifier:
        await verifier.verify(long_lived(old, issuer))
        issuer.keys = [new.jwk()]  # `idp keys revoke 2026-01`
        clock.advance(300)
        await verifier.verify(long_lived(new, issuer))  # the cached keys serve meanwhile
        await verifier.wait_for_refresh()

        with pytest.raises(UnknownKeyError):
            await verifier.verify(long_lived(old, issuer))
        await verifier.verify(long_lived(new, issuer))


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("public, max-age=600", 600),
        ("max-age=0", 0),
        ('MAX-AGE="30", public', 30),
        ("no-cache", 0),
        ("public, no-store, max-age=600", 0),
        ("public", None),
        ("max-age=-5", None),
        ("max-age=1e9", None),
        ("max-age=²", None),
        (None, None),
    ],
)
def test_cache_control_parsing(value: str | None, expected: float | None) -> None:
    assert cache_max_age(value) == expected


# --- failures keep the cached keys ----------------------------------------------------------


async def test_cached_keys_survive_the_issuer_going_down(
    issuer: IssuerServer,
    old: Signer,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    token = long_lived(old, issuer)
    async with TokenVerifier(
        issuer.issuer, AUDIENCE, jwks_uri=issuer.jwks_uri, clock=clock
    ) as verifier:
        issuer.stop()
        try:
            clock.advance(301)
            with caplog.at_level(logging.WARNING, "idp_verifier"):
                claims = await verifier.verify(token)
                await verifier.wait_for_refresh()
                await verifier.verify(long_lived(old, issuer))  # within the retry cooldown
                await verifier.wait_for_refresh()
        finally:
            issuer.start()

        assert claims.username == "alice"
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1
        assert "keeping the 1 cached keys" in warnings[0].getMessage()

        # Back up: the next attempt, one cooldown later, succeeds.
        clock.advance(30)
        await verifier.verify(long_lived(old, issuer))
        await verifier.wait_for_refresh()
        assert issuer.hits[JWKS] == 2


@pytest.mark.parametrize(
    "break_it",
    [
        lambda server: setattr(server, "jwks_status", 500),
        lambda server: setattr(server, "jwks_body", b"<html>oops</html>"),
        lambda server: setattr(server, "jwks_body", b'{"keys": "none"}'),
        lambda server: setattr(server, "jwks_body", b'{"keys": [{"kty": "RSA"}, 1]}'),
    ],
    ids=["http-500", "not-json", "not-a-key-set", "only-garbage"],
)
async def test_a_bad_answer_keeps_the_cached_keys(
    issuer: IssuerServer,
    old: Signer,
    clock: FakeClock,
    break_it: Callable[[IssuerServer], None],
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with TokenVerifier(
        issuer.issuer, AUDIENCE, jwks_uri=issuer.jwks_uri, clock=clock
    ) as verifier:
        break_it(issuer)
        clock.advance(301)
        with caplog.at_level(logging.WARNING, "idp_verifier"):
            await verifier.verify(long_lived(old, issuer))
            await verifier.wait_for_refresh()

        assert verifier.key_ids == {"2026-01"}
        assert "keeping the 1 cached keys" in caplog.text


async def test_a_failed_refetch_does_not_bring_the_scheduled_refresh_forward(
    issuer: IssuerServer, old: Signer, clock: FakeClock
) -> None:
    stranger = Signer.ec("stranger")
    async with TokenVerifier(
        issuer.issuer, AUDIENCE, jwks_uri=issuer.jwks_uri, clock=clock
    ) as verifier:
        issuer.jwks_status = 500
        with pytest.raises(UnknownKeyError):
            await verifier.verify(long_lived(stranger, issuer))
        assert issuer.hits[JWKS] == 2

        clock.advance(60)  # past the retry cooldown, well within the set's max-age of 300
        await verifier.verify(long_lived(old, issuer))
        assert issuer.hits[JWKS] == 2


async def test_without_any_key_set_verification_is_unavailable(
    issuer: IssuerServer, old: Signer, clock: FakeClock
) -> None:
    issuer.jwks_status = 503
    verifier = TokenVerifier(issuer.issuer, AUDIENCE, jwks_uri=issuer.jwks_uri, clock=clock)
    await verifier.start(require_keys=False)

    with pytest.raises(JWKSUnavailableError):
        await verifier.verify(old.token(issuer.issuer))
    assert issuer.hits[JWKS] == 1  # the failed attempt is not retried within the cooldown

    issuer.jwks_status = 200
    clock.advance(30)
    await verifier.verify(old.token(issuer.issuer))
    await verifier.aclose()


async def test_an_unreachable_issuer_fails_start(unused_port_url: str) -> None:
    verifier = TokenVerifier(unused_port_url, AUDIENCE, timeout=1)

    with pytest.raises(JWKSUnavailableError):
        await verifier.start()
    await verifier.aclose()


@pytest.fixture
def unused_port_url() -> str:
    server = IssuerServer()
    server.start()
    server.stop()
    return server.url


async def test_every_fetch_has_a_timeout(issuer: IssuerServer) -> None:
    issuer.delay = 3
    verifier = TokenVerifier(issuer.issuer, AUDIENCE, jwks_uri=issuer.jwks_uri, timeout=0.3)
    started = time.monotonic()

    with pytest.raises(JWKSUnavailableError):
        await verifier.start()

    assert time.monotonic() - started < 2
    await verifier.aclose()


async def test_redirects_are_not_followed(old: Signer) -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        if request.url.path == "/jwks":
            return httpx.Response(302, headers={"Location": "https://evil.example.com/jwks"})
        return httpx.Response(200, json={"keys": [old.jwk()]})

    async with mock_client(handler) as client:
        verifier = TokenVerifier(
            "https://idp.example.com",
            AUDIENCE,
            jwks_uri="https://idp.example.com/jwks",
            http_client=client,
        )
        with pytest.raises(JWKSUnavailableError):
            await verifier.start()
    assert seen == ["/jwks"]


async def test_an_oversized_key_set_is_refused(old: Signer) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        padding = [{"kid": f"pad-{i}", "kty": "oct", "use": "enc"} for i in range(40_000)]
        return httpx.Response(200, json={"keys": [old.jwk(), *padding]})

    async with mock_client(handler) as client:
        verifier = TokenVerifier(
            "https://idp.example.com", AUDIENCE, jwks_uri="https://k/jwks", http_client=client
        )
        with pytest.raises(JWKSUnavailableError):
            await verifier.start()


# --- what the key set may contain -----------------------------------------------------------


async def test_garbage_entries_are_skipped_and_good_keys_kept(
    issuer: IssuerServer, old: Signer, caplog: pytest.LogCaptureFixture
) -> None:
    encryption = Signer.rsa("enc-1")
    weak = Signer.rsa("weak")
    issuer.keys = [
        "not an object",  # type: ignore[list-item]
        {},
        {"kty": "RSA", "kid": "bad-n", "n": "!!!", "e": "AQAB"},
        {"kty": "RSA", "kid": "no-n", "e": "AQAB"},
        {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},
        {
            "kty": "EC",
            "kid": "off-curve",
            "crv": "P-256",
            "x": "AQ" * 21 + "A",
            "y": "AQ" * 21 + "A",
        },
        {"kty": "EC", "kid": "bad-crv", "crv": "P-192", "x": "AA", "y": "AA"},
        {"kty": "OKP", "kid": "x25519", "crv": "X25519", "x": "AA"},
        {"kty": "RSA", "kid": "bad-alg", "alg": "ES256", "n": old.jwk()["n"], "e": "AQAB"},
        {**weak.jwk(), "n": weak.jwk()["n"][:170]},  # a 1024-bit modulus
        old.private_jwk() | {"kid": "leaked"},
        encryption.jwk(use="enc"),
        encryption.jwk(kid="wrap-only", use=DROP, key_ops=["wrapKey"]),
        old.jwk(),
        old.jwk(kid="2026-01"),
    ]

    with caplog.at_level(logging.WARNING, "idp_verifier"):
        async with TokenVerifier(issuer.issuer, AUDIENCE, jwks_uri=issuer.jwks_uri) as verifier:
            assert verifier.key_ids == {"2026-01"}
            await verifier.verify(old.token(issuer.issuer))
            with pytest.raises(UnknownKeyError):
                await verifier.verify(encryption.token(issuer.issuer))

    problems = [record.getMessage() for record in caplog.records]
    assert len(problems) == 12
    assert any("'leaked' carries private" in problem for problem in problems)
    assert any("duplicate kid '2026-01'" in problem for problem in problems)


async def test_an_empty_key_set_is_accepted_and_revokes_everything(
    issuer: IssuerServer, old: Signer, clock: FakeClock
) -> None:
    async with TokenVerifier(
        issuer.issuer, AUDIENCE, jwks_uri=issuer.jwks_uri, clock=clock
    ) as verifier:
        issuer.keys = []
        clock.advance(300)
        await verifier.verify(long_lived(old, issuer))  # the cached keys serve meanwhile
        await verifier.wait_for_refresh()

        with pytest.raises(UnknownKeyError):
            await verifier.verify(long_lived(old, issuer))
        assert verifier.key_ids == frozenset()


async def test_a_key_set_with_private_members_does_not_verify(issuer: IssuerServer) -> None:
    leaked = Signer.ec("leaked")
    issuer.keys = [leaked.private_jwk()]
    verifier = TokenVerifier(issuer.issuer, AUDIENCE, jwks_uri=issuer.jwks_uri)

    with pytest.raises(JWKSUnavailableError):
        await verifier.start()
    with pytest.raises(JWKSUnavailableError):
        await verifier.verify(leaked.token(issuer.issuer))
    await verifier.aclose()
