"""authlib (and requests) against a Keysilo tenant, as an application would
use them. Argument: the same JSON file as openid_client.mjs."""
import json
import sys
import warnings

import requests
from authlib.integrations.base_client.errors import OAuthError
from authlib.integrations.requests_client import OAuth2Session

warnings.simplefilter("ignore")
from authlib.jose import JsonWebKey, jwt  # noqa: E402

demo = json.load(open(sys.argv[1]))
meta = requests.get(demo["issuer"] + "/.well-known/openid-configuration", timeout=5).json()
assert meta["issuer"] == demo["issuer"]

for method in ["client_secret_basic", "client_secret_post"]:
    machine = OAuth2Session(demo["machine_client_id"], demo["machine_client_secret"],
                            token_endpoint_auth_method=method, scope="read")
    token = machine.fetch_token(meta["token_endpoint"], grant_type="client_credentials")
    assert token["token_type"] == "Bearer" and token["expires_in"] == 900, token

keys = JsonWebKey.import_key_set(requests.get(meta["jwks_uri"], timeout=5).json())
claims = jwt.decode(token["access_token"], keys)
claims.validate()
assert claims["iss"] == demo["issuer"]

dashboard = OAuth2Session(demo["dashboard_client_id"], demo["dashboard_client_secret"],
                          token_endpoint_auth_method="client_secret_post")
login = dashboard.fetch_token(meta["token_endpoint"], username=demo["username"],
                              password=demo["password"], scope="read")
renewed = dashboard.refresh_token(meta["token_endpoint"], refresh_token=login["refresh_token"])
assert renewed["refresh_token"] != login["refresh_token"]
assert dashboard.introspect_token(meta["introspection_endpoint"], token=renewed["access_token"]).json()["active"]
assert dashboard.revoke_token(meta["revocation_endpoint"], token=renewed["refresh_token"]).status_code == 200
try:
    machine.fetch_token(meta["token_endpoint"], grant_type="client_credentials", scope="nonexistent")
    raise SystemExit("an invalid scope was accepted")
except OAuthError as err:
    assert err.error == "invalid_scope", err.error

# Secure mode: the backend mints, the browser's public client exchanges
# (RFC 8693) with authlib, and the token verifies on the JWKS.
minted = requests.post(meta["issuer"] + "/oauth2/auth-token", timeout=5,
                       auth=(demo["backend_client_id"], demo["backend_client_secret"]),
                       data={"subject": "user-7", "public_client_id": demo["public_client_id"]})
assert minted.status_code == 200, minted.text
browser = OAuth2Session(demo["public_client_id"], token_endpoint_auth_method="none")
exchanged = browser.fetch_token(meta["token_endpoint"],
                                grant_type="urn:ietf:params:oauth:grant-type:token-exchange",
                                subject_token=minted.json()["auth_token"],
                                subject_token_type="urn:keysilo:params:oauth:token-type:auth-token")
assert exchanged["issued_token_type"] == "urn:ietf:params:oauth:token-type:access_token", exchanged
claims = jwt.decode(exchanged["access_token"], keys)
claims.validate()
assert claims["sub"] == "user-7" and claims["act"] == {"sub": demo["backend_client_id"]}, claims
print("authlib: all checks passed")
