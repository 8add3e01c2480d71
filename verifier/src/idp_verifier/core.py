"""The verification engine the async and the sync verifier share.

It holds the configuration, the key store and both caches, and does every check; the two
public verifiers only add their flavour of I/O and of waiting for a fetch in flight.
"""

from __future__ import annotations

from collections.abc import Callable

from idp_verifier import jws
from idp_verifier.cache import VerifiedTokenCache
from idp_verifier.claims import Claims, check_claims
from idp_verifier.jwks import KeyStore, RefreshFlow, RefreshReason, insecure_transport
from idp_verifier.keys import VerificationKey

#: Above this, "leeway" stops being clock skew and starts extending token lifetimes.
MAX_LEEWAY = 300


class VerifierCore:
    """Configuration, keys, caches and checks, free of any I/O."""

    def __init__(
        self,
        issuer: str,
        audience: str,
        *,
        jwks_uri: str | None,
        leeway: float,
        min_cache_ttl: float,
        max_cache_ttl: float,
        unknown_kid_cooldown: float,
        verified_cache_size: int,
        clock: Callable[[], float],
        allow_http: bool = False,
    ) -> None:
        if not issuer:
            raise ValueError("issuer is required")
        # Tokens of a plain-http issuer crossed the network in clear, and so did its keys if
        # they are discovered from it: refused unless loopback or explicitly allowed.
        if issuer.startswith("http://") or jwks_uri is None:
            refused = insecure_transport(issuer, allow_http=allow_http)
            if refused is not None:
                raise ValueError(f"issuer {refused}")
        if jwks_uri is not None:
            refused = insecure_transport(jwks_uri, allow_http=allow_http)
            if refused is not None:
                raise ValueError(f"jwks_uri {refused}")
        if not audience:
            raise ValueError("audience is required")
        if not 0 <= leeway <= MAX_LEEWAY:
            raise ValueError(f"leeway must be between 0 and {MAX_LEEWAY} seconds")
        if not 0 <= min_cache_ttl <= max_cache_ttl:
            raise ValueError("need 0 <= min_cache_ttl <= max_cache_ttl")
        if unknown_kid_cooldown < 0:
            raise ValueError("unknown_kid_cooldown must not be negative")
        if verified_cache_size < 0:
            raise ValueError("verified_cache_size must not be negative (0 disables the cache)")
        self.issuer = issuer
        self.audience = audience
        self.leeway = leeway
        self.clock = clock
        self.keys = KeyStore(
            issuer=issuer,
            jwks_uri=jwks_uri,
            min_cache_ttl=min_cache_ttl,
            max_cache_ttl=max_cache_ttl,
            unknown_kid_cooldown=unknown_kid_cooldown,
            clock=clock,
            allow_http=allow_http,
        )
        self.cache = VerifiedTokenCache(verified_cache_size) if verified_cache_size else None
        self._headers = jws.HeaderReader()

    def cached(self, token: str, now: float) -> Claims | None:
        """The claims of ``token`` if it was verified before and has not expired since."""
        if self.cache is None or type(token) is not str:
            return None
        return self.cache.get(token, now)

    def split(self, token: str) -> jws.CompactToken:
        """Parse ``token`` and check its header; the key it names is looked up next."""
        return jws.split(token, self._headers)

    def finish(
        self, token: str, compact: jws.CompactToken, key: VerificationKey, now: float
    ) -> Claims:
        """Verify the signature with ``key``, check the claims, remember the result."""
        payload = jws.verify_signature(compact, key)
        claims = check_claims(
            payload, issuer=self.issuer, audience=self.audience, leeway=self.leeway, now=now
        )
        # Not if a refresh dropped the key meanwhile (another thread): eviction has run already.
        if self.cache is not None and self.keys.keys.get(key.kid) is key:
            self.cache.put(token, claims, claims.expires_at, key.kid, now)
        return claims

    def refresh(self, reason: RefreshReason) -> RefreshFlow:
        """Fetch the key set; tokens signed by keys that left it are forgotten at once."""
        gone = yield from self.keys.refresh(reason)
        if gone and self.cache is not None:
            self.cache.evict_kids(gone)
        return gone


class VerifierInfo:
    """Read-only facts about a verifier, common to the async and the sync one."""

    _core: VerifierCore

    @property
    def issuer(self) -> str:
        return self._core.issuer

    @property
    def audience(self) -> str:
        return self._core.audience

    @property
    def jwks_uri(self) -> str | None:
        """The key set's URL: the one given, else the discovered one (``None`` until then)."""
        return self._core.keys.jwks_uri

    @property
    def key_ids(self) -> frozenset[str]:
        """The kids of the keys currently trusted."""
        return frozenset(self._core.keys.keys)
