"""Test helpers for services that use idp_verifier, and for its own tests: signing keys,
token builders, and a tiny real issuer. Needs the ``testing`` extra
(``pip install 'idp-verifier[testing]'``: joserfc, uvicorn, starlette); the library itself does not.

    from idp_verifier import TokenVerifier
    from idp_verifier.testing import IssuerServer, Signer

    signer = Signer.rsa("test-key")
    issuer = IssuerServer(keys=[signer.jwk()])
    issuer.start()  # RFC 8414 metadata and a JWKS on 127.0.0.1, in a background thread
    verifier = TokenVerifier(issuer.issuer, "orders")
    token = signer.token(issuer.issuer, aud="orders", roles=["sales"])  # any claim overridable
    ...
    issuer.stop()

Tokens are signed by joserfc, an implementation independent of the verifier. The issuer is a
Starlette app served by uvicorn; tests switch its key set, its answers and its availability,
and count the requests it sees.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import socket
import threading
import time
import uuid
import warnings
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

try:
    import uvicorn
    from joserfc import jwt
    from joserfc.jwk import ECKey, OKPKey, RSAKey
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        "idp_verifier.testing needs the testing extra: pip install 'idp-verifier[testing]'"
    ) from exc

AUDIENCE = "orders"
DROP = object()  # a claim or header value that means "leave this member out"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def segment(value: dict[str, Any]) -> str:
    return b64url(json.dumps(value, separators=(",", ":")).encode())


@dataclass
class Signer:
    """A signing key as the issuer holds it, with its public JWK."""

    kid: str
    alg: str
    private_key: Any
    jose_key: RSAKey | ECKey | OKPKey

    @classmethod
    def rsa(cls, kid: str, alg: str = "RS256") -> Signer:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return cls(kid, alg, key, RSAKey.import_key(key))

    @classmethod
    def ec(cls, kid: str) -> Signer:
        key = ec.generate_private_key(ec.SECP256R1())
        return cls(kid, "ES256", key, ECKey.import_key(key))

    @classmethod
    def okp(cls, kid: str) -> Signer:
        key = ed25519.Ed25519PrivateKey.generate()
        return cls(kid, "EdDSA", key, OKPKey.import_key(key))

    def jwk(self, **extra: Any) -> dict[str, Any]:
        """The public JWK as idp publishes it (``extra`` overrides or, with DROP, removes)."""
        value: dict[str, Any] = dict(self.jose_key.as_dict(private=False))
        value.update(kid=self.kid, use="sig", alg=self.alg)
        for name, member in extra.items():
            if member is DROP:
                value.pop(name, None)
            else:
                value[name] = member
        return value

    def private_jwk(self) -> dict[str, Any]:
        value: dict[str, Any] = dict(self.jose_key.as_dict(private=True))
        value.update(kid=self.kid, use="sig", alg=self.alg)
        return value

    def public_pem(self) -> bytes:
        return bytes(self.jose_key.as_pem(private=False))

    def token(self, issuer: str, *, header: dict[str, Any] | None = None, **claims: Any) -> str:
        """A token signed by joserfc, an implementation independent of the verifier."""
        protected = _merge({"alg": self.alg, "typ": "at+jwt", "kid": self.kid}, header or {})
        payload = _merge(standard_claims(issuer), claims)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # joserfc deprecates the name "EdDSA"
            return jwt.encode(protected, payload, self.jose_key, algorithms=[protected["alg"]])

    def sign(self, signing_input: bytes) -> bytes:
        """A raw JWS signature by this key, for hand-built tokens."""
        if isinstance(self.private_key, rsa.RSAPrivateKey):
            return self.private_key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
        if isinstance(self.private_key, ec.EllipticCurvePrivateKey):
            der = self.private_key.sign(signing_input, ec.ECDSA(hashes.SHA256()))
            r, s = decode_dss_signature(der)
            return r.to_bytes(32, "big") + s.to_bytes(32, "big")
        return self.private_key.sign(signing_input)  # type: ignore[no-any-return]

    def forge(self, issuer: str, header: dict[str, Any], **claims: Any) -> str:
        """A token with exactly ``header`` (no defaults), validly signed by this key."""
        signing_input = f"{segment(header)}.{segment(_merge(standard_claims(issuer), claims))}"
        return f"{signing_input}.{b64url(self.sign(signing_input.encode()))}"


def standard_claims(issuer: str) -> dict[str, Any]:
    now = int(time.time())
    return {
        "iss": issuer,
        "sub": str(uuid.uuid4()),
        "aud": AUDIENCE,
        "exp": now + 300,
        "iat": now,
        "nbf": now,
        "jti": str(uuid.uuid4()),
        "client_id": "web",
        "username": "alice",
        "email": "alice@example.com",
        "roles": ["sales"],
        "scope": "orders:read profile",
    }


def hs256_token(secret: bytes, header: dict[str, Any], payload: dict[str, Any]) -> str:
    signing_input = f"{segment(header)}.{segment(payload)}"
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(mac)}"


def unsigned_token(header: dict[str, Any], payload: dict[str, Any], signature: str = "") -> str:
    return f"{segment(header)}.{segment(payload)}.{signature}"


def _merge(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for name, value in changes.items():
        if value is DROP:
            merged.pop(name, None)
        else:
            merged[name] = value
    return merged


class FakeClock:
    """An injectable clock: starts at the real time, moves only when told."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class IssuerServer:
    """A real HTTP issuer: RFC 8414 metadata and a JWKS with Cache-Control and ETag.

    Everything is plain attributes, read by the server thread on each request.
    """

    keys: list[dict[str, Any]] = field(default_factory=list)
    max_age: int = 300
    jwks_status: int = 200
    jwks_body: bytes | None = None  # served instead of the key set when set
    metadata_issuer: str | None = None  # the issuer the metadata claims (default: the real one)
    delay: float = 0.0  # seconds before each JWKS answer
    attacker_keys: list[dict[str, Any]] = field(default_factory=list)
    hits: Counter[str] = field(default_factory=Counter)
    _port: int = 0
    _server: uvicorn.Server | None = None
    _thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    @property
    def issuer(self) -> str:
        return self.url

    @property
    def jwks_uri(self) -> str:
        return f"{self.url}/.well-known/jwks.json"

    def reset(self, keys: list[dict[str, Any]]) -> None:
        self.keys = keys
        self.max_age = 300
        self.jwks_status = 200
        self.jwks_body = None
        self.metadata_issuer = None
        self.delay = 0.0
        self.attacker_keys = []
        self.hits.clear()

    def start(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self._port))
        self._port = sock.getsockname()[1]
        config = uvicorn.Config(self._app(), log_level="warning", lifespan="off")
        self._server = server = uvicorn.Server(config)
        self._thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the test issuer did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        """Take the issuer down: connections are refused until ``start()``."""
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._server.force_exit = True  # do not wait for deliberately slow answers
            self._thread.join(10)
            self._server = self._thread = None

    def _app(self) -> Starlette:
        async def metadata(request: Request) -> Response:
            self.hits[request.url.path] += 1
            return JSONResponse(
                {
                    "issuer": self.metadata_issuer or self.issuer,
                    "token_endpoint": f"{self.url}/token",
                    "jwks_uri": self.jwks_uri,
                    "grant_types_supported": ["password", "refresh_token"],
                }
            )

        async def jwks(request: Request) -> Response:
            self.hits[request.url.path] += 1
            if self.delay:
                await asyncio.sleep(self.delay)
            if self.jwks_status != 200:
                return Response(b"unavailable", status_code=self.jwks_status)
            body = self.jwks_body or json.dumps({"keys": self.keys}).encode()
            etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
            headers = {"Cache-Control": f"public, max-age={self.max_age}", "ETag": etag}
            if request.headers.get("if-none-match") == etag:
                self.hits["304"] += 1
                return Response(status_code=304, headers=headers)
            return Response(body, media_type="application/json", headers=headers)

        async def attacker(request: Request) -> Response:
            self.hits[request.url.path] += 1
            return JSONResponse({"keys": self.attacker_keys})

        return Starlette(
            routes=[
                Route("/.well-known/oauth-authorization-server", metadata),
                Route("/.well-known/openid-configuration", metadata),
                Route("/.well-known/jwks.json", jwks),
                Route("/attacker/{rest:path}", attacker),
            ]
        )
