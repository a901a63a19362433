// panva's openid-client and oauth4webapi against a Keysilo tenant, exactly
// as an application and a resource server would use them. Argument: a JSON
// file with issuer, machine/dashboard client credentials, username,
// password and audience. Exits non-zero on the first failure.
import * as client from 'openid-client';
import * as oauth from 'oauth4webapi';
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
console.log('openid-client and oauth4webapi: all checks passed');
