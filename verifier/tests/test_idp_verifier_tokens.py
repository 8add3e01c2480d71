"""What the verifier accepts, and every attack of SECURITY.md "Tokens and the verifier"."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from idp_verifier import (
    Claims,
    InvalidAudienceError,
    InvalidIssuerError,
    InvalidSignatureError,
    InvalidTypeError,
    MalformedTokenError,
    MissingClaimError,
    TokenError,
    TokenExpiredError,
    TokenNotYetValidError,
    TokenVerifier,
    UnknownKeyError,
    UnsupportedAlgorithmError,
)
from idp_verifier.testing import (
    AUDIENCE,
    DROP,
    IssuerServer,
    Signer,
    b64url,
    hs256_token,
    segment,
    standard_claims,
    unsigned_token,
)

Signers = dict[str, Signer]


@pytest.fixture(scope="module")
def signers() -> Signers:
    return {"rsa": Signer.rsa("rsa-1"), "ec": Signer.ec("ec-1"), "okp": Signer.okp("okp-1")}


@pytest.fixture
def issuer(server: IssuerServer, signers: Signers) -> IssuerServer:
    server.reset([signer.jwk() for signer in signers.values()])
    return server


@pytest.fixture
async def verifier(issuer: IssuerServer) -> AsyncIterator[TokenVerifier]:
    async with TokenVerifier(issuer.issuer, AUDIENCE, verified_cache_size=0) as verifier:
        yield verifier


# --- accepted tokens ---------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["rsa", "ec", "okp"])
async def test_valid_tokens_of_each_key_type_verify(
    verifier: TokenVerifier, issuer: IssuerServer, signers: Signers, kind: str
) -> None:
    claims = await verifier.verify(signers[kind].token(issuer.issuer))

    assert claims.username == "alice"


async def test_claims_carry_the_identity(
    verifier: TokenVerifier, issuer: IssuerServer, signers: Signers
) -> None:
    token = signers["rsa"].token(
        issuer.issuer,
        sub="2b1e5c1e-0000-4000-8000-000000000001",
        roles=["admin", "sales"],
        scope="orders:read  orders:write",
        exp=2_000_000_000,
        iat=1_700_000_000,
        jti="token-1",
        client_id="cli",
        tenant="acme",
    )

    claims = await verifier.verify(token)

    assert claims == Claims(
        subject="2b1e5c1e-0000-4000-8000-000000000001",
        username="alice",
        email="alice@example.com",
        roles=frozenset({"admin", "sales"}),
        scopes=frozenset({"orders:read", "orders:write"}),
        client_id="cli",
        expires_at=2_000_000_000,
        issued_at=1_700_000_000,
        token_id="token-1",
        raw={},
    )
    assert claims.raw["tenant"] == "acme"
    assert claims.has_role("admin")
    assert claims.has_scope("orders:write")
    with pytest.raises(TypeError):
        claims.raw["tenant"] = "other"  # type: ignore[index]


async def test_a_token_without_scope_or_roles_has_empty_sets(
    verifier: TokenVerifier, issuer: IssuerServer, signers: Signers
) -> None:
    claims = await verifier.verify(signers["rsa"].token(issuer.issuer, scope=DROP, roles=DROP))

    assert claims.scopes == frozenset()
    assert claims.roles == frozenset()


async def test_a_clients_own_token_is_told_from_a_users(
    verifier: TokenVerifier, issuer: IssuerServer, signers: Signers
) -> None:
    own = await verifier.verify(
        signers["rsa"].token(
            issuer.issuer,
            sub="client:orders",
            client_id="orders",
            username=DROP,
            email=DROP,
            scope="billing:read",
        )
    )
    assert own.is_client
    assert own.username is None
    assert own.has_scope("billing:read")

    users = await verifier.verify(signers["rsa"].token(issuer.issuer, client_id="orders"))
    assert not users.is_client  # a user's token that the client obtained

    for sub, client_id, extra in (
        ("client:billing", "orders", {}),  # another client's name
        ("client:orders", "orders", {"username": "alice"}),  # names a user
        ("client:orders", "orders", {"email": "x@example.com"}),
        ("orders", "orders", {}),  # no prefix
    ):
        claims = await verifier.verify(
            signers["rsa"].token(
                issuer.issuer,
                sub=sub,
                client_id=client_id,
                **({"username": DROP, "email": DROP} | extra),
            )
        )
        assert not claims.is_client, (sub, extra)


@pytest.mark.parametrize("typ", ["at+jwt", "AT+JWT", "application/at+jwt", "Application/AT+JWT"])
async def test_both_spellings_of_the_access_token_type_are_accepted(
    verifier: TokenVerifier, issuer: IssuerServer, signers: Signers, typ: str
) -> None:
    await verifier.verify(signers["rsa"].token(issuer.issuer, header={"typ": typ}))


@pytest.mark.parametrize(
    "aud", [AUDIENCE, [AUDIENCE], ["billing", AUDIENCE]], ids=["string", "list", "several"]
)
async def test_the_audience_may_be_a_string_or_a_list_containing_ours(
    verifier: TokenVerifier, issuer: IssuerServer, signers: Signers, aud: Any
) -> None:
    await verifier.verify(signers["rsa"].token(issuer.issuer, aud=aud))


async def test_times_within_the_leeway_are_accepted(
    verifier: TokenVerifier, issuer: IssuerServer, signers: Signers
) -> None:
    now = int(time.time())
    token = signers["rsa"].token(issuer.issuer, exp=now - 10, nbf=now + 10, iat=now + 10)

    await verifier.verify(token)


async def test_the_leeway_is_configurable(issuer: IssuerServer, signers: Signers) -> None:
    token = signers["rsa"].token(issuer.issuer, exp=int(time.time()) - 10)

    async with TokenVerifier(issuer.issuer, AUDIENCE, leeway=0) as strict:
        with pytest.raises(TokenExpiredError):
            await strict.verify(token)
    with pytest.raises(ValueError, match="leeway"):
        TokenVerifier(issuer.issuer, AUDIENCE, leeway=3600)


# --- attacks on the algorithm and the signature --------------------------------------------


@pytest.mark.parametrize("alg", ["none", "NONE", "None", "nOnE"])
@pytest.mark.parametrize("signature", ["", "c2lnbmF0dXJl"], ids=["empty", "junk"])
async def test_alg_none_is_rejected_in_any_spelling(
    verifier: TokenVerifier, issuer: IssuerServer, signers: Signers, alg: str, signature: str
) -> None:
    header = {"alg": alg, "typ": "at+jwt", "kid": signers["rsa"].kid}
    token = unsigned_token(header, standard_claims(issuer.issuer), signature)

    with pytest.raises(UnsupportedAlgorithmError):
        await verifier.verify(token)


@pytest.mark.parametrize(
    "secret",
    [
        lambda signer: signer.public_pem(),
        lambda signer: json.dumps(signer.jwk()).encode(),
        lambda signer: json.dumps(signer.jwk(), separators=(",", ":")).encode(),
        lambda signer: signer.jwk()["n"].encode(),
        lambda signer: b"",
        lambda signer: b"secret",
    ],
    ids=["public-pem", "jwk-json", "jwk-json-compact", "modulus", "empty", "common"],
)
@pytest.mark.parametrize("alg", ["HS256", "HS384", "HS512"])
async def test_hmac_tokens_are_rejected_whatever_the_secret(
    verifier: TokenVerifier,
    issuer: IssuerServer,
    signers: Signers,
    secret: Callable[[Signer], bytes],
    alg: str,
) -> None:
    header = {"alg": alg, "typ": "at+jwt", "kid": signers["rsa"].kid}
    token = hs256_token(secret(signers["rsa"]), header, standard_claims(issuer.issuer))

    with pytest.raises(UnsupportedAlgorithmError):
        await verifier.verify(token)


@pytest.mark.parametrize("kind", ["rsa", "ec", "okp"])
@pytest.mark.parametrize(
    "mangle",
    [
        lambda s: "",
        lambda s: s[:-4],
        lambda s: s[: len(s) // 2],
        lambda s: s[:4],
        lambda s: "AAAA" * (len(s) // 4),
        lambda s: s[::-1],
    ],
    ids=["empty", "truncated", "half", "stub", "zeros", "reversed"],
)
async def test_empty_truncated_or_altered_signatures_are_rejected(
    verifier: TokenVerifier,
    issuer: IssuerServer,
    signers: Signers,
    kind: str,
    mangle: Callable[[str], str],
) -> None:
    head, payload, signature = signers[kind].token(issuer.issuer).split(".")
    token = f"{head}.{payload}.{mangle(signature)}"

    with pytest.raises((InvalidSignatureError, MalformedTokenError)):
        await verifier.verify(token)


async def test_a_changed_payload_breaks_the_signature(
    verifier: TokenVerifier, issuer: IssuerServer, signers: Signers
) -> None:
    head, _, signature = signers["rsa"].token(issuer.issuer).split(".")
    forged = segment(standard_claims(issuer.issuer) | {"roles": ["admin"]})

    with pytest.raises(InvalidSignatureError):
        await verifier.verify(f"{head}.{forged}.{signature}")


async def test_a_der_encoded_ecdsa_signature_is_rejected(
    verifier: TokenVerifier, issuer: IssuerServer, signers: Signers
) -> None:
    header = {"alg": "ES256", "typ": "at+jwt", "kid": "ec-1"}
    signing_input = f"{segment(header)}.{segment(standard_claims(issuer.issuer))}"
    der = signers["ec"].private_key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))

    with pytest.raises(InvalidSignatureError):
        await verifier.verify(f"{signing_input}.{b64url(der)}")


@pytest.mark.parametrize(
    ("kind", "alg"),
    [("rsa", "ES256"), ("rsa", "PS256"), ("rsa", "RS512"), ("ec", "RS256"), ("okp", "ES256")],
)
async def test_the_token_alg_must_be_the_keys_own(
    verifier: TokenVerifier, issuer: IssuerServer, signers: Signers, kind: str, alg: str
) -> None:
    signer = signers[kind]
    token = signer.forge(issuer.issuer, {"alg": alg, "typ": "at+jwt", "kid": signer.kid})

    with pytest.raises(UnsupportedAlgorithmError):
        await verifier.verify(token)


async def test_a_key_without_alg_allows_only_the_algorithm_its_type_implies(
    issuer: IssuerServer, signers: Signers
) -> None:
    issuer.keys = [signers["rsa"].jwk(alg=DROP), signers["ec"].jwk(alg=DROP)]
    async with TokenVerifier(issuer.issuer, AUDIENCE) as verifier:
        await verifier.verify(signers["rsa"].token(issuer.issuer))
        await verifier.verify(signers["ec"].token(issuer.issuer))
        forged = signers["rsa"].forge(
            issuer.issuer, {"alg": "RS384", "typ": "at+jwt", "kid": "rsa-1"}
        )
        with pytest.raises(UnsupportedAlgorithmError):
            await verifier.verify(forged)


# --- attacks on the type and the claims -----------------------------------------------------


@pytest.mark.parametrize("typ", ["JWT", "jwt", "at+JWT ", "id_token", "application/jwt", 1, DROP])
async def test_tokens_that_are_not_access_tokens_are_rejected(
    verifier: TokenVerifier, issuer: IssuerServer, signers: Signers, typ: Any
) -> None:
    header = {"alg": "RS256", "kid": "rsa-1"} | ({} if typ is DROP else {"typ": typ})

    with pytest.raises(InvalidTypeError):
        await verifier.verify(signers["rsa"].forge(issuer.issuer, header))


@pytest.mark.parametrize(
    "iss",
    [
        lambda real: "https://evil.example.com",
        lambda real: real + "/",
        lambda real: real + ".evil.com",
        lambda real: real[:-1],
        lambda real: real.upper(),
        lambda real: [real],
    ],
    ids=["other", "trailing-slash", "prefix-of-evil", "truncated", "case", "list"],
)
async def test_the_issuer_must_match_exactly(
    verifier: TokenVerifier,
    issuer: IssuerServer,
    signers: Signers,
    iss: Callable[[str], Any],
) -> None:
    token = signers["rsa"].token(issuer.issuer, iss=iss(issuer.issuer))

    with pytest.raises(InvalidIssuerError):
        await verifier.verify(token)


@pytest.mark.parametrize(
    ("aud", "error"),
    [
        ("billing", InvalidAudienceError),
        (["billing", "shipping"], InvalidAudienceError),
        ("orders-admin", InvalidAudienceError),
        ([], InvalidAudienceError),
        ([AUDIENCE, 1], MalformedTokenError),
        ({"aud": AUDIENCE}, MalformedTokenError),
        (DROP, MissingClaimError),
    ],
)
async def test_the_audience_must_contain_ours(
    verifier: TokenVerifier,
    issuer: IssuerServer,
    signers: Signers,
    aud: Any,
    error: type[TokenError],
) -> None:
    with pytest.raises(error):
        await verifier.verify(signers["rsa"].token(issuer.issuer, aud=aud))


@pytest.mark.parametrize(
    ("claims", "error"),
    [
        ({"exp": DROP}, MissingClaimError),
        ({"exp": -100}, TokenExpiredError),
        ({"exp": "2100000000"}, MalformedTokenError),
        ({"exp": True}, MalformedTokenError),
        ({"nbf": 10**10}, TokenNotYetValidError),
        ({"iat": 10**10}, TokenNotYetValidError),
        ({"iat": DROP}, MissingClaimError),
        ({"iss": DROP}, MissingClaimError),
        ({"sub": DROP}, MissingClaimError),
        ({"jti": DROP}, MissingClaimError),
        ({"client_id": DROP}, MissingClaimError),
        ({"sub": 42}, MalformedTokenError),
        ({"roles": "admin"}, MalformedTokenError),
        ({"roles": ["admin", 1]}, MalformedTokenError),
        ({"scope": ["orders:read"]}, MalformedTokenError),
    ],
)
async def test_claim_rules(
    verifier: TokenVerifier,
    issuer: IssuerServer,
    signers: Signers,
    claims: dict[str, Any],
    error: type[TokenError],
) -> None:
    with pytest.raises(error):
        await verifier.verify(signers["rsa"].token(issuer.issuer, **claims))


async def test_expiry_and_not_before_honour_the_leeway_exactly(
    issuer: IssuerServer, signers: Signers
) -> None:
    now = int(time.time())
    async with TokenVerifier(issuer.issuer, AUDIENCE, leeway=30, clock=lambda: now) as verifier:
        await verifier.verify(signers["rsa"].token(issuer.issuer, exp=now - 29))
        with pytest.raises(TokenExpiredError):
            await verifier.verify(signers["rsa"].token(issuer.issuer, exp=now - 30))
        await verifier.verify(signers["rsa"].token(issuer.issuer, nbf=now + 30))
        with pytest.raises(TokenNotYetValidError):
            await verifier.verify(signers["rsa"].token(issuer.issuer, nbf=now + 31))


async def test_a_signed_payload_that_is_not_a_json_object_is_malformed(
    verifier: TokenVerifier, issuer: IssuerServer, signers: Signers
) -> None:
    header = segment({"alg": "RS256", "typ": "at+jwt", "kid": "rsa-1"})
    for payload in [b"[1, 2]", b"not json", b'{"exp": NaN}', b"\xff\xfe", b"[" * 5000]:
        signing_input = f"{header}.{b64url(payload)}"
        token = f"{signing_input}.{b64url(signers['rsa'].sign(signing_input.encode()))}"
        with pytest.raises(MalformedTokenError):
            await verifier.verify(token)


# --- attacks through the header -------------------------------------------------------------


async def test_a_crit_header_is_rejected(
    verifier: TokenVerifier, issuer: IssuerServer, signers: Signers
) -> None:
    header = {"alg": "RS256", "typ": "at+jwt", "kid": "rsa-1", "crit": ["exp"], "exp": 1}
    token = signers["rsa"].forge(issuer.issuer, header)

    with pytest.raises(MalformedTokenError, match="critical"):
        await verifier.verify(token)


@pytest.mark.parametrize("kid", ["rsa-1", "attacker-1"], ids=["victim-kid", "own-kid"])
async def test_an_embedded_jwk_is_never_trusted(
    verifier: TokenVerifier, issuer: IssuerServer, kid: str
) -> None:
    attacker = Signer.rsa(kid)
    header = {"alg": "RS256", "typ": "at+jwt", "kid": kid, "jwk": attacker.jwk()}
    token = attacker.forge(issuer.issuer, header, roles=["admin"])

    with pytest.raises((InvalidSignatureError, UnknownKeyError)):
        await verifier.verify(token)


@pytest.mark.parametrize("member", ["jku", "x5u"])
async def test_key_urls_in_the_header_are_never_fetched(
    verifier: TokenVerifier, issuer: IssuerServer, signers: Signers, member: str
) -> None:
    attacker = Signer.rsa("attacker-1")
    issuer.attacker_keys = [attacker.jwk()]
    url = f"{issuer.url}/attacker/jwks.json"
    forged = attacker.forge(
        issuer.issuer, {"alg": "RS256", "typ": "at+jwt", "kid": "attacker-1", member: url}
    )
    honest = signers["rsa"].forge(
        issuer.issuer, {"alg": "RS256", "typ": "at+jwt", "kid": "rsa-1", member: url}
    )

    with pytest.raises(UnknownKeyError):
        await verifier.verify(forged)
    await verifier.verify(honest)  # the member is simply ignored

    assert issuer.hits["/attacker/jwks.json"] == 0


async def test_an_x5c_chain_in_the_header_is_never_trusted(
    verifier: TokenVerifier, issuer: IssuerServer
) -> None:
    attacker = Signer.rsa("rsa-1")
    header = {"alg": "RS256", "typ": "at+jwt", "kid": "rsa-1", "x5c": [b64url(b"certificate")]}

    with pytest.raises(InvalidSignatureError):
        await verifier.verify(attacker.forge(issuer.issuer, header))


@pytest.mark.parametrize(
    "kid",
    [
        "k" * 10_240,
        "../../../../etc/passwd",
        "/.well-known/jwks.json",
        "rsa-1' OR '1'='1",
        "$(curl evil.example.com)",
        'rsa-1"}',
        "rsa-1\x00",
        "",
    ],
    ids=["10kB", "path", "url-path", "sql", "shell", "quote", "nul", "empty"],
)
async def test_any_kid_is_only_a_lookup_key(
    verifier: TokenVerifier,
    issuer: IssuerServer,
    signers: Signers,
    kid: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    token = signers["rsa"].forge(issuer.issuer, {"alg": "RS256", "typ": "at+jwt", "kid": kid})
    issuer.hits.clear()

    with caplog.at_level(logging.DEBUG, "idp_verifier"), pytest.raises(TokenError) as caught:
        await verifier.verify(token)

    assert isinstance(caught.value, (UnknownKeyError, MalformedTokenError))
    assert len(str(caught.value)) < 200
    assert all(len(record.getMessage()) < 2000 for record in caplog.records)
    assert set(issuer.hits) <= {"/.well-known/jwks.json", "304"}  # only the real key set


# --- malformed input ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "token",
    [
        "",
        "abc",
        "a.b",
        "a.b.c.d",
        "a.b.c.d.e",
        "eyJ.e30.",
        "!!!.e30.sig",
        "e30.e30.sig",
        "W10.e30.sig",
        "bm90IGpzb24.e30.sig",
        "eyJhbGciOiJSUzI1NiIsInR5cCI6ImF0K2p3dCJ9.e30.sig",
        "x" * 20_000,
        "é.é.é",
        None,
        b"a.b.c",
    ],
)
async def test_malformed_tokens_raise_malformed_token_error(
    verifier: TokenVerifier, token: Any
) -> None:
    with pytest.raises(MalformedTokenError):
        await verifier.verify(token)


async def test_a_token_over_the_length_cap_is_refused_before_parsing(
    verifier: TokenVerifier, issuer: IssuerServer, signers: Signers
) -> None:
    token = signers["rsa"].token(issuer.issuer, padding="x" * 16_000)

    with pytest.raises(MalformedTokenError, match="longer"):
        await verifier.verify(token)
