"""SyncTokenVerifier: the same rules for code without an event loop, shared across threads."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import httpx
import pytest

from idp_verifier import (
    InvalidAudienceError,
    JWKSUnavailableError,
    SyncTokenVerifier,
    TokenError,
    TokenExpiredError,
    UnknownKeyError,
    UnsupportedAlgorithmError,
)
from idp_verifier.testing import (
    AUDIENCE,
    FakeClock,
    IssuerServer,
    Signer,
    hs256_token,
    standard_claims,
    unsigned_token,
)

JWKS = "/.well-known/jwks.json"


@pytest.fixture(scope="module")
def old() -> Signer:
    return Signer.rsa("sync-1")


@pytest.fixture(scope="module")
def new() -> Signer:
    return Signer.okp("sync-2")


@pytest.fixture
def issuer(server: IssuerServer, old: Signer) -> IssuerServer:
    server.reset([old.jwk()])
    return server


def test_a_valid_token_verifies_after_discovery(issuer: IssuerServer, old: Signer) -> None:
    with SyncTokenVerifier(issuer.issuer, AUDIENCE) as verifier:
        claims = verifier.verify(old.token(issuer.issuer, roles=["admin"]))

        assert claims.roles == {"admin"}
        assert verifier.jwks_uri == issuer.jwks_uri


@pytest.mark.parametrize(
    ("forge", "error"),
    [
        (
            lambda iss, key: unsigned_token(
                {"alg": "none", "typ": "at+jwt", "kid": key.kid}, standard_claims(iss)
            ),
            UnsupportedAlgorithmError,
        ),
        (
            lambda iss, key: hs256_token(
                key.public_pem(),
                {"alg": "HS256", "typ": "at+jwt", "kid": key.kid},
                standard_claims(iss),
            ),
            UnsupportedAlgorithmError,
        ),
        (lambda iss, key: key.token(iss, exp=1), TokenExpiredError),
        (lambda iss, key: key.token(iss, aud="billing"), InvalidAudienceError),
    ],
    ids=["alg-none", "hs256-public-key", "expired", "audience"],
)
def test_the_checks_are_those_of_the_async_verifier(
    issuer: IssuerServer, old: Signer, forge: Any, error: type[TokenError]
) -> None:
    with SyncTokenVerifier(issuer.issuer, AUDIENCE) as verifier, pytest.raises(error):
        verifier.verify(forge(issuer.issuer, old))


def test_threads_needing_a_new_key_share_one_fetch(
    issuer: IssuerServer, old: Signer, new: Signer
) -> None:
    tokens = [new.token(issuer.issuer) for _ in range(32)]
    errors: list[BaseException] = []
    with SyncTokenVerifier(issuer.issuer, AUDIENCE, jwks_uri=issuer.jwks_uri) as verifier:
        issuer.keys = [old.jwk(), new.jwk()]
        issuer.delay = 0.2
        barrier = threading.Barrier(len(tokens))

        def work(token: str) -> None:
            barrier.wait()
            try:
                verifier.verify(token)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(token,)) for token in tokens]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    assert errors == []
    assert issuer.hits[JWKS] == 2  # start() and one refetch


def test_an_unknown_kid_refetches_once_per_cooldown(issuer: IssuerServer) -> None:
    stranger = Signer.ec("stranger")
    clock = FakeClock()
    with SyncTokenVerifier(
        issuer.issuer, AUDIENCE, jwks_uri=issuer.jwks_uri, clock=clock
    ) as verifier:
        for _ in range(5):
            with pytest.raises(UnknownKeyError):
                verifier.verify(stranger.token(issuer.issuer))
        clock.advance(30)
        with pytest.raises(UnknownKeyError):
            verifier.verify(stranger.token(issuer.issuer))

    assert issuer.hits[JWKS] == 3


def test_cached_keys_survive_a_failing_issuer(
    issuer: IssuerServer, old: Signer, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock()
    token = old.token(issuer.issuer, exp=int(clock.now) + 10_000)
    with SyncTokenVerifier(
        issuer.issuer, AUDIENCE, jwks_uri=issuer.jwks_uri, clock=clock
    ) as verifier:
        issuer.jwks_status = 503
        clock.advance(301)
        with caplog.at_level(logging.WARNING, "idp_verifier"):
            verifier.verify(token)
            verifier.wait_for_refresh()

    assert "keeping the 1 cached keys" in caplog.text


def test_a_slow_issuer_is_cut_off_by_the_timeout(issuer: IssuerServer) -> None:
    issuer.delay = 3
    verifier = SyncTokenVerifier(issuer.issuer, AUDIENCE, jwks_uri=issuer.jwks_uri, timeout=0.3)
    started = time.monotonic()

    with pytest.raises(JWKSUnavailableError):
        verifier.start()

    assert time.monotonic() - started < 2
    verifier.close()


def test_a_given_client_is_used_and_left_open(old: Signer) -> None:
    requests: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        requests.append(str(request.url))
        return httpx.Response(200, json={"keys": [old.jwk()]})

    issuer = "https://idp.example.com"
    with httpx.Client(transport=httpx.MockTransport(handler)) as client:
        with SyncTokenVerifier(
            issuer, AUDIENCE, jwks_uri=f"{issuer}/keys", http_client=client
        ) as verifier:
            verifier.verify(old.token(issuer))
        assert not client.is_closed
    assert requests == [f"{issuer}/keys"]
