#!/usr/bin/env python3
"""Writes the seed corpora under fuzz/corpus/<target>/seed-*.

Deterministic and key-free: tokens carry made-up signatures (the fuzzing
key is generated when a target starts; `token_claims` signs at run time),
and JWKS moduli are SHA-256 chains, numbers of the right size rather than
keys. Run it again after changing a seed; it rewrites only seed-* files.
"""

import base64
import hashlib
import json
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent / "corpus"
NOW = 1_700_000_000


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def compact(value) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def number(label: str, size: int) -> bytes:
    """`size` bytes derived from `label`: top bit set, odd."""
    out = b""
    block = label.encode()
    while len(out) < size:
        block = hashlib.sha256(block).digest()
        out += block
    out = bytearray(out[:size])
    out[0] |= 0x80
    out[-1] |= 0x01
    return bytes(out)


HEADER = {"alg": "RS256", "typ": "at+jwt", "kid": "fuzz-key"}
CLAIMS = {
    "iss": "https://id.example/acme",
    "sub": "user-1",
    "aud": "api",
    "exp": NOW + 900,
    "iat": NOW,
    "jti": "jti-1",
    "client_id": "client-1",
    "scope": "read write",
    "tid": "acme",
    "allowed_origins": ["https://app.example"],
    "roles": ["viewer"],
}


def token(header, claims, signature: bytes = number("sig", 256)) -> bytes:
    return f"{b64(compact(header))}.{b64(compact(claims))}.{b64(signature)}".encode()


def seeds():
    yield "token", "valid-shape", token(HEADER, CLAIMS)
    yield "token", "alg-none", token({"alg": "none", "typ": "at+jwt"}, CLAIMS, b"")
    yield "token", "hs256", token({**HEADER, "alg": "HS256"}, CLAIMS)
    yield "token", "crit", token({**HEADER, "crit": ["b64"], "b64": False}, CLAIMS)
    yield "token", "unknown-kid", token({**HEADER, "kid": "other"}, CLAIMS)
    yield "token", "bound", token(HEADER, {**CLAIMS, "cnf": {"x5t#S256": "abc"}})
    yield "token", "garbage", b"eyJ.eyJ.e30"
    yield "token", "origin", b"https://App.Example:443/"

    claims_lines = [
        ("valid", HEADER, CLAIMS, None),
        ("aud-array-bound", {**HEADER, "typ": "application/at+jwt"},
         {**CLAIMS, "aud": ["a", "api"], "cnf": {"x5t#S256": "thumb"}, "roles": "admin"}, None),
        ("nbf", HEADER, {**CLAIMS, "nbf": NOW + 30}, None),
        ("minimal", HEADER, {k: CLAIMS[k] for k in
                             ("iss", "sub", "aud", "exp", "iat", "jti", "client_id", "scope", "tid")},
         None),
        ("expired-clock", HEADER, CLAIMS, f"{NOW + 2000} 60"),
        ("float-exp", HEADER, {**CLAIMS, "exp": 1.7e9}, "0 18446744073709551615"),
    ]
    for name, header, claims, clock in claims_lines:
        text = compact(header) + b"\n" + compact(claims)
        if clock is not None:
            text += b"\n" + clock.encode()
        yield "token_claims", name, text

    def jwk(label, bits=2048, **extra):
        key = {"kty": "RSA", "use": "sig", "alg": "RS256", "kid": label,
               "n": b64(number(label, bits // 8)), "e": "AQAB"}
        key.update(extra)
        return key

    yield "jwks", "one-key", compact({"keys": [jwk("k1")]})
    yield "jwks", "rotation", compact({"keys": [jwk("k1"), jwk("k2", 4096)]})
    yield "jwks", "mixed", compact({"keys": [
        {"kty": "EC", "crv": "P-256", "kid": "ec", "x": b64(number("x", 32)),
         "y": b64(number("y", 32))},
        jwk("enc", use="enc"),
        jwk("no-alg", alg=None),
        {k: v for k, v in jwk("bare").items() if k not in ("alg", "use")},
    ]})
    yield "jwks", "small-modulus", compact({"keys": [jwk("small", 1024)]})
    yield "jwks", "exponent-3", compact([jwk("e3", e=b64(b"\x03"))])
    yield "jwks", "single-jwk", compact(jwk("single"))
    yield "jwks", "empty", b'{"keys":[]}'

    basic = base64.b64encode(b"client-1:s3cret%2Bvalue").decode()
    yield "form", "basic-client-credentials", \
        f"Basic {basic}\ngrant_type=client_credentials&scope=read+write".encode()
    yield "form", "post-password", (
        b"grant_type=password&username=alice&password=p%40ss+w%C3%B6rd"
        b"&client_id=client-1&client_secret=s3cret&scope=admin")
    yield "form", "refresh", \
        f"basic {basic}\ngrant_type=refresh_token&refresh_token=abc-_def".encode()
    yield "form", "tls-client-auth", b"grant_type=client_credentials&client_id=client-1&scope="
    yield "form", "both-methods", \
        f"Basic {basic}\nclient_id=other&client_secret=x&grant_type=client_credentials".encode()
    yield "form", "repeated", b"grant_type=a&grant_type=b"
    yield "form", "introspect-bearer", b"Bearer abc\ntoken=eyJ.eyJ.sig&token_type_hint=access_token"

    yield "json", "tenant", compact({"id": "acme-prod", "display_name": " Acme  Prod ",
                                     "token_ttl_seconds": 900})
    yield "json", "tenant-reserved", compact({"id": "admin", "display_name": "x"})
    yield "json", "client-secret", compact({
        "name": "Billing worker", "grant_types": ["client_credentials"],
        "scopes": ["read", "write"], "audience": ["api"],
        "allowed_origins": ["https://App.Example:443", "http://localhost:3000/"],
        "token_endpoint_auth_method": "client_secret_post"})
    yield "json", "client-dn", compact({
        "name": "worker", "grant_types": ["client_credentials", "refresh_token"],
        "token_endpoint_auth_method": "tls_client_auth",
        "tls_client_auth_subject_dn": "CN=worker 7,O=Example\\, Inc.,2.5.4.11=ops,C=SE"})
    yield "json", "client-ip", compact({
        "name": "worker", "grant_types": ["password"],
        "token_endpoint_auth_method": "tls_client_auth",
        "tls_client_auth_san_ip": "::ffff:10.0.0.7",
        "tls_client_certificate_bound_access_tokens": False})
    yield "json", "client-email", compact({
        "name": "w", "grant_types": ["client_credentials"],
        "token_endpoint_auth_method": "tls_client_auth",
        "tls_client_auth_san_email": "Ops@Example.test",
        "tls_client_auth_san_dns": "Worker.Example.test"})
    yield "json", "user", compact({"username": "alice", "password": "correct horse battery",
                                   "roles": ["tenant-admin", "viewer"]})
    yield "json", "user-unknown-field", compact({"username": "a", "password": "x", "admin": True})


def main():
    for target, name, data in seeds():
        directory = ROOT / target
        directory.mkdir(parents=True, exist_ok=True)
        (directory / f"seed-{name}").write_bytes(data)


if __name__ == "__main__":
    main()
