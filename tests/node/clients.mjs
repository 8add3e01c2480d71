// openid-client v6, unmodified, against a running idp: discovery, client_credentials,
// introspection and revocation for one client. Run by tests/test_clients_interop.py:
//
//   node tests/node/clients.mjs ISSUER CLIENT_ID METHOD
//
// METHOD is client_secret_basic or client_secret_post (the secret in IDP_CLIENT_SECRET), or
// private_key_jwt (the private key as a JWK in IDP_CLIENT_PRIVATE_JWK). IDP_SCOPE and
// IDP_RESOURCE go into the token request. Prints one JSON object; a library error is printed
// as {"error": ...} with exit status 1.
import * as client from 'openid-client';

const [issuer, clientId, method] = process.argv.slice(2);
if (!issuer || !clientId || !method) {
  console.error('usage: clients.mjs ISSUER CLIENT_ID METHOD');
  process.exit(2);
}

async function authentication() {
  switch (method) {
    case 'client_secret_basic':
      return client.ClientSecretBasic(process.env.IDP_CLIENT_SECRET);
    case 'client_secret_post':
      return client.ClientSecretPost(process.env.IDP_CLIENT_SECRET);
    case 'private_key_jwt': {
      const jwk = JSON.parse(process.env.IDP_CLIENT_PRIVATE_JWK);
      const key = await crypto.subtle.importKey(
        'jwk',
        jwk,
        { name: 'ECDSA', namedCurve: jwk.crv },
        false,
        ['sign'],
      );
      return client.PrivateKeyJwt({ key, kid: jwk.kid });
    }
    default:
      throw new Error(`unknown method ${method}`);
  }
}

try {
  // The issuer is plain http on loopback in the tests: the documented opt-in for that.
  const config = await client.discovery(
    new URL(issuer),
    clientId,
    undefined,
    await authentication(),
    { execute: [client.allowInsecureRequests] },
  );
  const parameters = {};
  if (process.env.IDP_SCOPE) parameters.scope = process.env.IDP_SCOPE;
  if (process.env.IDP_RESOURCE) parameters.resource = process.env.IDP_RESOURCE;
  const tokens = await client.clientCredentialsGrant(config, parameters);
  const introspection = await client.tokenIntrospection(config, tokens.access_token);
  await client.tokenRevocation(config, tokens.access_token);
  console.log(
    JSON.stringify({
      metadata: config.serverMetadata(),
      tokens: { ...tokens },
      expiresIn: tokens.expiresIn(),
      introspection: { ...introspection },
      revoked: true,
    }),
  );
} catch (error) {
  // A 401 with WWW-Authenticate comes as WWWAuthenticateChallengeError: its body is still
  // the RFC 6749 error object.
  let body = null;
  try {
    body = await error.response?.json();
  } catch {}
  console.log(
    JSON.stringify({
      error: error.name,
      code: error.code ?? null,
      message: error.message,
      oauthError: error.error ?? body?.error ?? null,
      status: error.status ?? null,
      challenges: error.code === 'OAUTH_WWW_AUTHENTICATE_CHALLENGE' ? error.cause : null,
    }),
  );
  process.exit(1);
}
