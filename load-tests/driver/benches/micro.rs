//! Criterion micro-benchmarks of the hot operations, one thread each:
//! signing and verifying an access token, unwrapping a tenant key, checking
//! a client secret, and the edge's verified-token (cached) path through the
//! real `validate` pipeline.
//!
//! `cargo bench -p keysilo-load --bench micro`; CI runs each once with
//! `cargo test -p keysilo-load --benches`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::hint::black_box;
use std::io::{Read as _, Write as _};
use std::net::TcpListener;
use std::time::{SystemTime, UNIX_EPOCH};

use criterion::{Criterion, criterion_group, criterion_main};
use keysilo_config::{EdgeSettings, Secret};
use keysilo_custody::{GeneratedKey, MasterKey, MasterKeyRing, generate_rsa_key};
use keysilo_identity::oauth::credentials::{SecretHasher, same_digest};
use keysilo_tokens::{AccessTokenClaims, Expectations, KeySet, SigningKey};
use keysilo_types::TenantId;

fn now() -> u64 {
    #[allow(clippy::disallowed_methods)]
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn claims(issuer: &str, tenant: &TenantId) -> AccessTokenClaims {
    let now = now();
    AccessTokenClaims {
        issuer: issuer.to_owned(),
        subject: "client-1".into(),
        audience: vec!["bench-api".into()],
        client_id: "client-1".into(),
        scope: "read".into(),
        tenant: tenant.clone(),
        jti: "8f14e45f-ceea-467f-a0e6-1a2b3c4d5e6f".into(),
        issued_at: now,
        expires_at: now + 900,
        allowed_origins: Vec::new(),
        roles: Vec::new(),
        certificate_thumbprint: None,
        actor: None,
    }
}

fn tokens(c: &mut Criterion, key: &GeneratedKey, tenant: &TenantId) {
    let issuer = "https://id.example/bench";
    let signing = SigningKey::from_der(key.kid.clone(), key.private.as_der()).unwrap();
    let claims = claims(issuer, tenant);
    c.bench_function("token/sign", |b| {
        b.iter(|| keysilo_tokens::mint(black_box(&claims), &signing).unwrap())
    });
    let token = keysilo_tokens::mint(&claims, &signing).unwrap();
    let keys = KeySet::from_jwks(&[key.public.to_jwk(&key.kid)]).unwrap();
    let expect = Expectations {
        issuer,
        audience: Some("bench-api"),
        now: now(),
        skew: 60,
    };
    c.bench_function("token/verify", |b| {
        b.iter(|| keysilo_tokens::verify(black_box(&token), &keys, &expect).unwrap())
    });
}

fn custody(c: &mut Criterion, key: &GeneratedKey, tenant: &TenantId) {
    let ring = MasterKeyRing::new(1, vec![MasterKey::from_bytes(1, [7; 32])]).unwrap();
    let wrapped = ring.wrap(tenant, &key.kid, &key.private).unwrap();
    c.bench_function("custody/unwrap", |b| {
        b.iter(|| ring.unwrap(tenant, &key.kid, black_box(&wrapped)).unwrap())
    });
}

fn client_secret(c: &mut Criterion) {
    let hasher = SecretHasher::new(&Secret::new("p".repeat(32))).unwrap();
    let secret = "U1MeSv-NqmtvDe-6K6iEsB_00u1sXR-ahroX4xVwEPE";
    let stored = hasher.hash(secret).unwrap();
    c.bench_function("client_secret/check", |b| {
        b.iter(|| {
            let presented = hasher.hash(black_box(secret)).unwrap();
            assert!(same_digest(&presented, &stored));
        })
    });
}

/// Serves `body` as every tenant's JWKS over HTTP/1.1 on a thread, for
/// the edge's first (uncached) fetch.
fn jwks_server(body: String) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                 cache-control: public, max-age=300\r\ncontent-length: {}\r\n\
                 connection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    port
}

fn edge_cached(c: &mut Criterion, key: &GeneratedKey, tenant: &TenantId) {
    let jwks = serde_json::json!({ "keys": [key.public.to_jwk(&key.kid)] }).to_string();
    let port = jwks_server(jwks);
    let base = format!("http://127.0.0.1:{port}");
    let toml = format!(
        "[edge]\nissuer_base = \"{base}\"\naudience = \"bench-api\"\n\
         identity_api_key = \"${{secret:bench}}\"\n\
         [redis]\nurl = \"redis://127.0.0.1:1\"\n"
    );
    let env = [("KEYSILO_SECRET_BENCH".to_owned(), "e".repeat(40))]
        .into_iter()
        .collect();
    let settings = EdgeSettings::from_sources(Some(&toml), &env).unwrap();
    // The pool is lazy: nothing here talks to Redis.
    let coord = keysilo_coord::Coord::new(&settings.redis).unwrap();
    let state = keysilo_edge::state::EdgeState::new(settings, coord, None).unwrap();
    // As if the first revocation snapshot had merged (an empty one): the
    // edge admits nothing before.
    state
        .snapshot_merged
        .store(true, std::sync::atomic::Ordering::Release);
    let signing = SigningKey::from_der(key.kid.clone(), key.private.as_der()).unwrap();
    let token =
        keysilo_tokens::mint(&claims(&format!("{base}/{tenant}"), tenant), &signing).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // The first call fetches the JWKS and verifies; every later one is the
    // cached path.
    runtime
        .block_on(keysilo_edge::validate::validate(
            &state,
            Some(&token),
            None,
            None,
        ))
        .unwrap();
    c.bench_function("edge/cached_token", |b| {
        b.iter(|| {
            runtime
                .block_on(keysilo_edge::validate::validate(
                    &state,
                    Some(black_box(&token)),
                    None,
                    None,
                ))
                .unwrap()
        })
    });
}

fn benches(c: &mut Criterion) {
    let key = generate_rsa_key().unwrap();
    let tenant = TenantId::parse("bench").unwrap();
    tokens(c, &key, &tenant);
    custody(c, &key, &tenant);
    client_secret(c);
    edge_cached(c, &key, &tenant);
}

criterion_group!(micro, benches);
criterion_main!(micro);
