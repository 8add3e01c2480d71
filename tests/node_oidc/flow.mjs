// The authorization code flow with openid-client v6 against a live idp, the hosted login form
// submitted with plain fetch (no browser). Run by tests/test_oidc_e2e.py:
//   node flow.mjs <issuer> <client_id> <redirect_uri> <username> <password> [scope]
// Prints one JSON object: the claims and tokens of each step, or {"error": ...} and exits 1.
import * as client from "openid-client";

const [issuer, clientId, redirectUri, username, password, scope = "openid profile email"] =
  process.argv.slice(2);

// Cookies by name, as a browser would keep them for the issuer's origin.
const jar = new Map();
function keepCookies(response) {
  for (const line of response.headers.getSetCookie()) {
    const [pair, ...attributes] = line.split(";");
    const at = pair.indexOf("=");
    const name = pair.slice(0, at).trim();
    const value = pair.slice(at + 1).trim();
    const expired = attributes.some((a) => /^\s*max-age=0\s*$/i.test(a)) || value === '""';
    if (expired) jar.delete(name);
    else jar.set(name, value);
  }
}
const cookieHeader = () => [...jar].map(([name, value]) => `${name}=${value}`).join("; ");

async function browse(url, init = {}) {
  const response = await fetch(url, {
    ...init,
    redirect: "manual",
    headers: { ...(init.headers ?? {}), cookie: cookieHeader() },
  });
  keepCookies(response);
  return response;
}

function unescapeHtml(text) {
  return text
    .replaceAll("&#34;", '"')
    .replaceAll("&#39;", "'")
    .replaceAll("&quot;", '"')
    .replaceAll("&lt;", "<")
    .replaceAll("&gt;", ">")
    .replaceAll("&amp;", "&");
}

function hiddenInputs(html) {
  const fields = {};
  for (const match of html.matchAll(/<input type="hidden" name="([^"]*)" value="([^"]*)">/g)) {
    fields[unescapeHtml(match[1])] = unescapeHtml(match[2]);
  }
  return fields;
}

let step = "start";

async function main() {
  step = "discovery";
  const config = await client.discovery(new URL(issuer), clientId, undefined, client.None(), {
    execute: [client.allowInsecureRequests],
  });
  const metadata = config.serverMetadata();

  const codeVerifier = client.randomPKCECodeVerifier();
  const codeChallenge = await client.calculatePKCECodeChallenge(codeVerifier);
  const nonce = client.randomNonce();
  const state = client.randomState();
  const authorizationUrl = client.buildAuthorizationUrl(config, {
    redirect_uri: redirectUri,
    scope,
    code_challenge: codeChallenge,
    code_challenge_method: "S256",
    nonce,
    state,
  });

  // The hosted login page, then its form POSTed as the browser would.
  step = "login page";
  const page = await browse(authorizationUrl);
  if (page.status !== 200) throw new Error(`login page: ${page.status}`);
  const html = await page.text();
  const fields = hiddenInputs(html);
  if (!jar.has("idp_csrf") || fields.csrf !== jar.get("idp_csrf")) {
    throw new Error("the login page has no csrf cookie matching its hidden field");
  }
  const action = html.match(/<form method="post" action="([^"]*)"/)[1];
  const posted = await browse(unescapeHtml(action), {
    method: "POST",
    headers: {
      "content-type": "application/x-www-form-urlencoded",
      origin: new URL(issuer).origin,
    },
    body: new URLSearchParams({ ...fields, username, password }),
  });
  if (posted.status !== 303) throw new Error(`login POST: ${posted.status}`);
  const sessionCookie = jar.has("idp_session");
  const back = await browse(new URL(posted.headers.get("location"), issuer));
  if (back.status !== 303) throw new Error(`authorize after login: ${back.status}`);
  const callback = new URL(back.headers.get("location"));

  step = "code grant";
  const tokens = await client.authorizationCodeGrant(config, callback, {
    pkceCodeVerifier: codeVerifier,
    expectedNonce: nonce,
    expectedState: state,
  });
  const claims = tokens.claims();
  step = "userinfo";
  const userinfo = await client.fetchUserInfo(config, tokens.access_token, claims.sub);

  // The same callback again: the code is spent.
  step = "refresh";
  const refreshed = await client.refreshTokenGrant(config, tokens.refresh_token);
  const refreshedUserinfo = await client.fetchUserInfo(config, refreshed.access_token, claims.sub);

  // A callback checked against another nonce than the one sent: openid-client refuses it.
  step = "code reuse";
  let reuse = null;
  try {
    await client.authorizationCodeGrant(config, callback, {
      pkceCodeVerifier: codeVerifier,
      expectedNonce: nonce,
      expectedState: state,
    });
  } catch (error) {
    reuse = error.error ?? error.code ?? String(error);
  }

  // RFC 6749 4.1.2: the tokens issued for that code are revoked.
  step = "after reuse";
  let afterReuse = null;
  try {
    await client.fetchUserInfo(config, refreshed.access_token, claims.sub);
  } catch (error) {
    afterReuse = error.status ?? error.code ?? String(error);
  }
  let refreshAfterReuse = null;
  try {
    await client.refreshTokenGrant(config, refreshed.refresh_token);
  } catch (error) {
    refreshAfterReuse = error.error ?? error.code ?? String(error);
  }

  step = "wrong nonce";
  let wrongNonce = null;
  {
    const verifier = client.randomPKCECodeVerifier();
    const url = client.buildAuthorizationUrl(config, {
      redirect_uri: redirectUri,
      scope,
      code_challenge: await client.calculatePKCECodeChallenge(verifier),
      code_challenge_method: "S256",
      nonce: client.randomNonce(),
      state,
    });
    const signedIn = await browse(url); // the browser session: straight back with a code
    if (signedIn.status !== 303) throw new Error(`silent authorize: ${signedIn.status}`);
    try {
      await client.authorizationCodeGrant(config, new URL(signedIn.headers.get("location")), {
        pkceCodeVerifier: verifier,
        expectedNonce: nonce,
        expectedState: state,
      });
    } catch (error) {
      wrongNonce = error.code ?? String(error);
    }
  }

  return {
    issuer: metadata.issuer,
    callback: callback.origin + callback.pathname,
    session_cookie: sessionCookie,
    id_token: tokens.id_token,
    claims,
    scope: tokens.scope ?? null,
    token_type: tokens.token_type,
    userinfo,
    code_reuse: reuse,
    userinfo_after_reuse: afterReuse,
    refresh_after_reuse: refreshAfterReuse,
    refreshed_claims: refreshed.claims() ?? null,
    refreshed_id_token: refreshed.id_token ?? null,
    refreshed_userinfo: refreshedUserinfo,
    refresh_rotated: refreshed.refresh_token !== tokens.refresh_token,
    wrong_nonce: wrongNonce,
  };
}

main().then(
  (result) => console.log(JSON.stringify(result)),
  (error) => {
    const detail = { error: String(error), code: error.code ?? null, step };
    if (error.error) detail.oauth_error = [error.error, error.error_description];
    if (error.cause) detail.cause = JSON.stringify(error.cause);
    console.log(JSON.stringify(detail));
    process.exit(1);
  },
);
