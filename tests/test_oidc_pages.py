"""The hosted pages' headers that a real browser acts on (found with Chromium in
tests/test_oidc_e2e.py): under `Referrer-Policy: no-referrer` a browser sends `Origin: null`
with a page's own form POST, so the login form could never be submitted."""

from __future__ import annotations

from httpx import AsyncClient

from tests.test_oidc import REDIRECT, client, pkce, spa  # noqa: F401 (fixtures)


async def test_hosted_pages_send_their_origin_with_their_forms(
    client: AsyncClient,  # noqa: F811
    spa: None,  # noqa: F811
) -> None:
    _verifier, challenge = pkce()
    page = await client.get(
        "/authorize",
        params={
            "response_type": "code",
            "client_id": "spa",
            "redirect_uri": REDIRECT,
            "scope": "openid",
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        },
    )
    assert page.status_code == 200, page.text
    # same-origin: the form POST carries our Origin; other origins get no Referer.
    assert page.headers["referrer-policy"] == "same-origin"
    assert 'content="no-referrer"' not in page.text
    assert '<meta name="referrer" content="same-origin">' in page.text
