// panva's openid-client and oauth4webapi against a Keysilo tenant, exactly
// as an application and a resource server would use them. Argument: a JSON
// file with issuer, machine/dashboard client credentials, username,
// password and audience. Exits non-zero on the first failure.
import * as client from 'openid-client';
import * as oauth from 'oauth4webapi';
import * as jose from 'jose';
import assert from 'node:assert/strict';
import fs from 'node:fs';

const demo = JSON.parse(fs.readFileSync(process.argv[2]));
const issuer = new URL(demo.issuer);
const insecure = { execute: [client.allowInsecureRequests] };

for (const algorithm of ['oidc', 'oauth2']) {
  const config = await client.discovery(issuer, demo.machine_client_id, demo.machine_client_secret,
    client.ClientSecretBasic(demo.machine_client_secret), { ...insecure, algorithm });
  const cc = await client.clientCredentialsGrant(config, { scope: 'read' });
  assert.equal(cc.token_type, 'bearer');
  assert.equal(cc.expires_in, 900);
  const active = await client.tokenIntrospection(config, cc.access_token);
  assert.equal(active.active, true);
  await client.tokenRevocation(config, cc.access_token);
  assert.equal((await client.tokenIntrospection(config, cc.access_token)).active, false);
}

const dashboard = await client.discovery(issuer, demo.dashboard_client_id, demo.dashboard_client_secret,
  client.ClientSecretPost(demo.dashboard_client_secret), insecure);
const login = await client.genericGrantRequest(dashboard, 'password',
  { username: demo.username, password: demo.password, scope: 'read' });
assert.ok(login.refresh_token);
const refreshed = await client.refreshTokenGrant(dashboard, login.refresh_token);
assert.notEqual(refreshed.refresh_token, login.refresh_token);
await assert.rejects(client.refreshTokenGrant(dashboard, login.refresh_token),
  (err) => err.error === 'invalid_grant');

// A resource server validating an access token per RFC 9068.
const as = await oauth.processDiscoveryResponse(issuer,
  await oauth.discoveryRequest(issuer, { [oauth.allowInsecureRequests]: true }));
const config = await client.discovery(issuer, demo.machine_client_id, demo.machine_client_secret,
  client.ClientSecretBasic(demo.machine_client_secret), insecure);
const { access_token } = await client.clientCredentialsGrant(config);
const request = new Request('http://127.0.0.1/resource', { headers: { authorization: `Bearer ${access_token}` } });
const claims = await oauth.validateJwtAccessToken(as, request, demo.audience, { [oauth.allowInsecureRequests]: true });
assert.equal(claims.client_id, demo.machine_client_id);

// Secure mode: the backend mints an auth token (plain HTTP, as a backend
// would); the browser, a public client, redeems it with RFC 8693 token
// exchange through openid-client; jose verifies the result on the JWKS.
const minted = await fetch(`${demo.issuer}/oauth2/auth-token`, {
  method: 'POST',
  headers: {
    authorization: 'Basic ' + Buffer.from(`${demo.backend_client_id}:${demo.backend_client_secret}`).toString('base64'),
    'content-type': 'application/x-www-form-urlencoded',
  },
  body: new URLSearchParams({ subject: 'user-42', public_client_id: demo.public_client_id }),
});
assert.equal(minted.status, 200);
const { auth_token } = await minted.json();
const browser = await client.discovery(issuer, demo.public_client_id, undefined, client.None(), insecure);
const exchanged = await client.genericGrantRequest(browser, 'urn:ietf:params:oauth:grant-type:token-exchange', {
  subject_token: auth_token,
  subject_token_type: 'urn:keysilo:params:oauth:token-type:auth-token',
});
assert.equal(exchanged.issued_token_type, 'urn:ietf:params:oauth:token-type:access_token');
const jwks = jose.createRemoteJWKSet(new URL(browser.serverMetadata().jwks_uri));
const { payload, protectedHeader } = await jose.jwtVerify(exchanged.access_token, jwks,
  { issuer: demo.issuer, audience: demo.audience, typ: 'at+jwt' });
assert.equal(protectedHeader.alg, 'RS256');
assert.equal(payload.sub, 'user-42');
assert.equal(payload.client_id, demo.public_client_id);
assert.deepEqual(payload.act, { sub: demo.backend_client_id });
assert.deepEqual(payload.allowed_origins, [demo.public_origin]);
await assert.rejects(client.genericGrantRequest(browser, 'urn:ietf:params:oauth:grant-type:token-exchange', {
  subject_token: auth_token,
  subject_token_type: 'urn:keysilo:params:oauth:token-type:auth-token',
}), (err) => err.error === 'invalid_grant');
console.log('openid-client and oauth4webapi: all checks passed');
