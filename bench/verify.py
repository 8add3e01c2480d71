"""Benchmarks 1 and 2: local token verification, idp_verifier against PyJWT and raw RSA."""

from __future__ import annotations

import asyncio
import base64
import random
import time
import uuid
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from bench.common import Report, Sizes, median, rate
from idp.services.keys import KeyStore
from idp_verifier import TokenVerifier
from tests.live import LiveServer

AUDIENCE = "api.test"
ROUNDS = 5


def _tokens(server: LiveServer, keys_dir: Path, count: int) -> list[str]:
    """`count` distinct access tokens signed with the server's active key, as it would sign them."""
    keyset = KeyStore(keys_dir, None, jwks_max_age=300, retire_grace=1000).load()
    now = int(time.time())
    return [
        keyset.sign(
            {
                "iss": server.url,
                "sub": str(uuid.uuid4()),
                "aud": AUDIENCE,
                "iat": now,
                "nbf": now,
                "exp": now + 900,
                "jti": uuid.uuid4().hex,
                "client_id": "idp",
                "username": f"user{i}",
                "email": f"user{i}@example.com",
                "roles": ["member"],
            }
        )
        for i in range(count)
    ]


def _b64(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


async def _verifier_rate(verifier: TokenVerifier, tokens: list[str]) -> float:
    start = time.perf_counter()
    for token in tokens:
        await verifier.verify(token)
    return rate(len(tokens), time.perf_counter() - start)


def _pyjwt_rate(key: object, tokens: list[str], issuer: str) -> float:
    start = time.perf_counter()
    for token in tokens:
        jwt.decode(token, key, algorithms=["RS256"], audience=AUDIENCE, issuer=issuer)  # type: ignore[arg-type]
    return rate(len(tokens), time.perf_counter() - start)


def _raw_rate(public_key: rsa.RSAPublicKey, tokens: list[str]) -> float:
    prepared = []
    for token in tokens:
        head, body, signature = token.split(".")
        prepared.append((_b64(signature), f"{head}.{body}".encode()))
    pkcs1, sha256 = padding.PKCS1v15(), hashes.SHA256()
    start = time.perf_counter()
    for signature, signed in prepared:
        public_key.verify(signature, signed, pkcs1, sha256)
    return rate(len(prepared), time.perf_counter() - start)


def _zipf_sequence(users: int, requests: int, s: float = 1.1, seed: int = 7) -> list[int]:
    weights = [1 / (rank**s) for rank in range(1, users + 1)]
    return random.Random(seed).choices(range(users), weights=weights, k=requests)


async def run(report: Report, sizes: Sizes, server: LiveServer, keys_dir: Path) -> None:
    tokens = _tokens(server, keys_dir, sizes.tokens)
    kid = jwt.get_unverified_header(tokens[0])["kid"]
    jwks = jwt.PyJWKClient(f"{server.url}/.well-known/jwks.json").get_signing_key(kid)
    public_key = jwks.key
    # Rounds alternate the three contenders so each sees the same machine noise; the median
    # round counts. Each round's verifier is new (the tokens are distinct to it).
    ours_rounds, theirs_rounds, raw_rounds = [], [], []
    for _ in range(ROUNDS):
        async with TokenVerifier(server.url, AUDIENCE) as verifier:
            await verifier.start()
            ours_rounds.append(await _verifier_rate(verifier, tokens))
        theirs_rounds.append(_pyjwt_rate(public_key, tokens, server.url))
        raw_rounds.append(_raw_rate(public_key, tokens))
    ours, theirs, raw = median(ours_rounds), median(theirs_rounds), median(raw_rounds)
    report.add(
        "1a verifier vs PyJWT, distinct tokens",
        ours / theirs,
        ">= 1.5",
        ours / theirs >= 1.5,
        f"idp_verifier {ours:,.0f}/s, PyJWT {theirs:,.0f}/s (median of {ROUNDS} rounds)",
    )
    report.add(
        "1b verifier vs raw RSA verify, distinct tokens",
        ours / raw,
        ">= 0.5",
        ours / raw >= 0.5,
        f"idp_verifier {ours:,.0f}/s, cryptography verify {raw:,.0f}/s",
    )

    users = _tokens(server, keys_dir, sizes.zipf_users)
    sequence = [users[i] for i in _zipf_sequence(sizes.zipf_users, sizes.zipf_requests)]
    async with TokenVerifier(server.url, AUDIENCE) as verifier:
        await verifier.verify(users[0])
        ours_zipf = await _verifier_rate(verifier, sequence)
    theirs_zipf = _pyjwt_rate(public_key, sequence, server.url)
    report.add(
        "2 verifier vs PyJWT, Zipf traffic of 1,000 users",
        ours_zipf / theirs_zipf,
        ">= 20",
        ours_zipf / theirs_zipf >= 20,
        f"idp_verifier {ours_zipf:,.0f}/s, PyJWT {theirs_zipf:,.0f}/s "
        f"({sizes.zipf_requests:,} requests)",
    )


def run_sync(report: Report, sizes: Sizes, server: LiveServer, keys_dir: Path) -> None:
    asyncio.run(run(report, sizes, server, keys_dir))
