//! Signing keys: rotation, revocation, custody, rewrap, replicas and the
//! scheduled, staged rotation.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::helpers::{
    MASTER_KEY_V2, TestApp, TestConfig, create_database, spawn_app, spawn_app_with,
};

fn status_of<'a>(keys: &'a [serde_json::Value], kid: &str) -> &'a str {
    keys.iter()
        .find(|k| k["kid"] == kid)
        .and_then(|k| k["status"].as_str())
        .unwrap_or("absent")
}

/// Signs a JWT with the replica's active key for `tenant` and verifies it
/// with jsonwebtoken (not the code under test) against the JWKS served
/// over HTTP.
async fn assert_signs_verifiably(app: &TestApp, tenant: &str) {
    let id = keysilo_types::TenantId::parse(tenant).unwrap();
    let entry = app.state.cache.get(&id).await.unwrap().unwrap();
    let signing = entry.signing.clone().expect("an active signing key");
    let mut header = josekit::jws::JwsHeader::new();
    header.set_token_type("JWT");
    let mut payload = josekit::jwt::JwtPayload::new();
    payload.set_subject("signature-check");
    let token = josekit::jwt::encode_with_signer(&payload, &header, signing.signer()).unwrap();

    let jwks: jsonwebtoken::jwk::JwkSet = app
        .get(&format!("/{tenant}/.well-known/jwks"))
        .await
        .json()
        .await
        .unwrap();
    let kid = jsonwebtoken::decode_header(&token).unwrap().kid.unwrap();
    let jwk = jwks.find(&kid).expect("the signing kid is published");
    let key = jsonwebtoken::DecodingKey::from_jwk(jwk).unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    let claims = jsonwebtoken::decode::<serde_json::Value>(&token, &key, &validation).unwrap();
    assert_eq!(claims.claims["sub"], "signature-check");
}

#[tokio::test]
async fn an_independent_jwk_library_verifies_a_signature_of_the_active_key() {
    let app = spawn_app().await;
    app.create_tenant("acme").await;

    assert_signs_verifiably(&app, "acme").await;
}

#[tokio::test]
async fn emergency_rotation_signs_with_the_new_key_at_once_and_keeps_the_old_one_published() {
    let app = spawn_app().await;
    app.create_tenant("acme").await;
    let old = app.keys("acme").await[0]["kid"]
        .as_str()
        .unwrap()
        .to_owned();
    app.get("/acme/.well-known/jwks").await; // warm the cache

    let new = app.rotate("acme").await;

    assert_ne!(new, old);
    let keys = app.keys("acme").await;
    assert_eq!(status_of(&keys, &new), "active");
    assert_eq!(status_of(&keys, &old), "retired");
    let retired = keys.iter().find(|k| k["kid"] == old).unwrap();
    assert!(retired["publish_until"].is_string());
    let kids = app.jwks_kids("acme").await;
    assert!(kids.contains(&new) && kids.contains(&old), "{kids:?}");
    assert_eq!(app.signing_kid("acme").await.as_deref(), Some(new.as_str()));
    assert_signs_verifiably(&app, "acme").await;
}

#[tokio::test]
async fn revoking_the_active_key_removes_it_at_once_and_another_key_signs() {
    let app = spawn_app().await;
    app.create_tenant("acme").await;
    let old = app.rotate("acme").await;
    let retired = app.keys("acme").await[1]["kid"]
        .as_str()
        .unwrap()
        .to_owned();
    app.get("/acme/.well-known/jwks").await;

    let response = app
        .admin_post(&format!("/tenants/acme/keys/{old}/revoke"), json!({}))
        .await;

    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    let active = body["active_kid"].as_str().unwrap().to_owned();
    assert_ne!(active, old);
    let kids = app.jwks_kids("acme").await;
    assert!(
        !kids.contains(&old),
        "a revoked key was still published: {kids:?}"
    );
    assert!(kids.contains(&active));
    assert_eq!(
        app.signing_kid("acme").await.as_deref(),
        Some(active.as_str())
    );
    let keys = app.keys("acme").await;
    assert_eq!(status_of(&keys, &old), "revoked");
    assert_eq!(keys.iter().filter(|k| k["status"] == "active").count(), 1);

    // A retired key can be revoked too, and revoking twice is harmless.
    for _ in 0..2 {
        let response = app
            .admin_post(&format!("/tenants/acme/keys/{retired}/revoke"), json!({}))
            .await;
        assert_eq!(response.status(), 200);
    }
    assert!(!app.jwks_kids("acme").await.contains(&retired));
    let unknown = app
        .admin_post("/tenants/acme/keys/no-such-kid/revoke", json!({}))
        .await;
    assert_eq!(unknown.status(), 404);
    let audit = app.audit("acme").await;
    assert_eq!(audit[0]["type"], "key.revoked");
    assert_eq!(audit[0]["actor"], "platform-admin");
}

#[tokio::test]
async fn the_database_refuses_a_second_active_key_whatever_the_application_does() {
    let app = spawn_app().await;
    app.create_tenant("acme").await;
    let sql = app.sql().await;

    let result = sql
        .execute(
            "INSERT INTO signing_keys (tenant_id, kid, status, modulus_b64, exponent_b64, \
             wrapped_private_key, wrap_nonce, master_key_version) \
             SELECT tenant_id, 'second', 'active', modulus_b64, exponent_b64, \
             wrapped_private_key, wrap_nonce, master_key_version FROM signing_keys",
            &[],
        )
        .await;

    let err = result.unwrap_err();
    assert!(keysilo_store::is_unique_violation(&err), "{err}");
}

#[tokio::test]
async fn a_wrapped_key_copied_into_another_tenants_row_fails_to_unwrap() {
    let app = spawn_app().await;
    app.create_tenant("acme").await;
    app.create_tenant("evil").await;
    let sql = app.sql().await;
    sql.execute(
        "UPDATE signing_keys e SET wrapped_private_key = a.wrapped_private_key, \
         wrap_nonce = a.wrap_nonce FROM signing_keys a \
         WHERE e.tenant_id = 'evil' AND a.tenant_id = 'acme'",
        &[],
    )
    .await
    .unwrap();

    let store = &app.state.store;
    let evil = keysilo_types::TenantId::parse("evil").unwrap();
    let row = store.keys(&evil).await.unwrap().remove(0);
    let wrapped = keysilo_custody::WrappedKey {
        ciphertext: row.wrapped.clone(),
        nonce: row.nonce,
        master_key_version: row.master_key_version,
    };
    let err = app
        .state
        .keys
        .ring()
        .unwrap(&evil, &row.kid, &wrapped)
        .unwrap_err();
    assert!(matches!(err, keysilo_custody::CustodyError::UnwrapFailed));
    assert_eq!(
        err.to_string(),
        "the wrapped key cannot be unwrapped for this tenant and kid"
    );
    // The public documents still work; only signing is refused.
    assert_eq!(app.get("/evil/.well-known/jwks").await.status(), 200);
    assert_eq!(app.signing_kid("evil").await, None);
    assert!(app.signing_kid("acme").await.is_some());

    // The same material under a changed kid in its own tenant fails too.
    let acme = keysilo_types::TenantId::parse("acme").unwrap();
    let own = store.keys(&acme).await.unwrap().remove(0);
    let other_kid = keysilo_types::Kid::parse("renamed-kid").unwrap();
    let wrapped = keysilo_custody::WrappedKey {
        ciphertext: own.wrapped,
        nonce: own.nonce,
        master_key_version: own.master_key_version,
    };
    assert!(
        app.state
            .keys
            .ring()
            .unwrap(&acme, &other_kid, &wrapped)
            .is_err()
    );
}

#[tokio::test]
async fn a_change_on_one_replica_reaches_the_other_replicas_jwks_within_a_second() {
    let database = create_database().await;
    let a = spawn_app_with(TestConfig::new(&database), database.clone()).await;
    let b = spawn_app_with(TestConfig::new(&database), database.clone()).await;
    a.create_tenant("acme").await;
    let first = b.jwks_kids("acme").await; // B caches the JWKS now

    let rotated = a.rotate("acme").await;
    let started = Instant::now();
    while !b.jwks_kids("acme").await.contains(&rotated) {
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "B never saw the rotation"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let response = a
        .admin_post(&format!("/tenants/acme/keys/{rotated}/revoke"), json!({}))
        .await;
    assert_eq!(response.status(), 200);
    assert!(
        !a.jwks_kids("acme").await.contains(&rotated),
        "A still publishes it"
    );
    let started = Instant::now();
    while b.jwks_kids("acme").await.contains(&rotated) {
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "B kept publishing a revoked key"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(!first.contains(&rotated));
}

#[tokio::test]
async fn rewrap_moves_every_key_to_the_new_master_key_and_the_old_one_can_then_go() {
    let database = create_database().await;
    let v1 = spawn_app_with(TestConfig::new(&database), database.clone()).await;
    for tenant in ["acme", "globex"] {
        v1.create_tenant(tenant).await;
    }
    v1.rotate("acme").await;
    let mut before = HashMap::new();
    for tenant in ["acme", "globex"] {
        before.insert(
            tenant,
            v1.get(&format!("/{tenant}/.well-known/jwks"))
                .await
                .text()
                .await
                .unwrap(),
        );
    }

    let both = TestConfig::new(&database).with_both_master_keys(2);
    let v1_and_v2 = spawn_app_with(both, database.clone()).await;
    let response = v1_and_v2.admin_post("/master-key/rewrap", json!({})).await;
    assert_eq!(response.status(), 200);
    let report: serde_json::Value = response.json().await.unwrap();
    assert_eq!(report, json!({ "version": 2, "rewrapped": 3 }));
    let status: serde_json::Value = v1_and_v2
        .admin_get("/master-key")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        status["keys_per_version"],
        json!([{ "version": 2, "keys": 3 }])
    );

    let only_v2 = TestConfig::new(&database)
        .set("KEYSILO_SECRET_MASTER_KEY_V1", "")
        .set("KEYSILO_SECRET_MASTER_KEY_V2", MASTER_KEY_V2)
        .set(
            "KEYSILO_CUSTODY__MASTER_KEYS",
            r#"[{version = 2, key = "${secret:master-key-v2}"}]"#,
        );
    let v2 = spawn_app_with(only_v2, database.clone()).await;
    for tenant in ["acme", "globex"] {
        let after = v2
            .get(&format!("/{tenant}/.well-known/jwks"))
            .await
            .text()
            .await
            .unwrap();
        assert_eq!(after, before[tenant], "{tenant}'s JWKS changed");
        assert_signs_verifiably(&v2, tenant).await;
    }
}

#[tokio::test]
async fn a_scheduled_rotation_publishes_the_next_key_before_it_signs() {
    let database = create_database().await;
    let config = TestConfig::new(&database)
        .set("KEYSILO_KEYS__ROTATION_PERIOD_SECONDS", "4")
        .set("KEYSILO_KEYS__PUBLISH_AHEAD_SECONDS", "2")
        .set("KEYSILO_KEYS__JWKS_MAX_AGE_SECONDS", "1")
        .set("KEYSILO_KEYS__SCHEDULER_INTERVAL_SECONDS", "1");
    let app = spawn_app_with(config, database).await;
    app.create_tenant("acme").await;
    let first = app.signing_kid("acme").await.unwrap();

    let mut first_published: HashMap<String, Instant> = HashMap::new();
    let mut first_signing: HashMap<String, Instant> = HashMap::new();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(15) && first_signing.len() < 2 {
        let now = Instant::now();
        for kid in app.jwks_kids("acme").await {
            first_published.entry(kid).or_insert(now);
        }
        if let Some(kid) = app.signing_kid("acme").await {
            first_signing.entry(kid).or_insert(now);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let (second, signing_since) = first_signing
        .iter()
        .find(|(kid, _)| **kid != first)
        .expect("the scheduler rotated the key");
    let published_since = first_published[second];
    let lead = signing_since.duration_since(published_since);
    assert!(
        lead >= Duration::from_secs(1),
        "the next key was published only {lead:?} before it signed (JWKS max-age is 1 s)"
    );
    let keys = app.keys("acme").await;
    assert_eq!(status_of(&keys, &first), "retired");
    let scheduled: Vec<String> = app
        .audit("acme")
        .await
        .iter()
        .filter(|e| e["actor"] == "scheduler")
        .map(|e| e["type"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        scheduled.iter().any(|t| t == "key.staged") && scheduled.iter().any(|t| t == "key.rotated"),
        "{scheduled:?}"
    );
}

#[tokio::test]
async fn a_retired_key_leaves_the_jwks_when_its_grace_period_ends() {
    let database = create_database().await;
    let config = TestConfig::new(&database)
        .set("KEYSILO_KEYS__CLOCK_SKEW_SECONDS", "1")
        .set("KEYSILO_KEYS__CACHE_MAX_AGE_SECONDS", "1");
    let app = spawn_app_with(config, database).await;
    let created = app
        .admin_post(
            "/tenants",
            json!({ "id": "brief", "display_name": "Brief", "token_ttl_seconds": 5 }),
        )
        .await;
    assert_eq!(created.status(), 201);
    let old = app.keys("brief").await[0]["kid"]
        .as_str()
        .unwrap()
        .to_owned();

    let new = app.rotate("brief").await;

    let kids = app.jwks_kids("brief").await;
    assert!(kids.contains(&old) && kids.contains(&new));
    // Grace = token lifetime (5 s) + skew (1 s) + replica cache age (1 s).
    tokio::time::sleep(Duration::from_millis(7500)).await;
    let kids = app.jwks_kids("brief").await;
    assert_eq!(kids, [new]);
}

#[tokio::test]
async fn an_emergency_rotation_withdraws_a_staged_next_key() {
    let database = create_database().await;
    let config = TestConfig::new(&database)
        .set("KEYSILO_KEYS__ROTATION_PERIOD_SECONDS", "30")
        .set("KEYSILO_KEYS__PUBLISH_AHEAD_SECONDS", "29")
        .set("KEYSILO_KEYS__JWKS_MAX_AGE_SECONDS", "1")
        .set("KEYSILO_KEYS__SCHEDULER_INTERVAL_SECONDS", "1");
    let app = spawn_app_with(config, database).await;
    app.create_tenant("acme").await;
    let started = Instant::now();
    let staged = loop {
        let keys = app.keys("acme").await;
        if let Some(next) = keys.iter().find(|k| k["status"] == "next") {
            break next["kid"].as_str().unwrap().to_owned();
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no key was staged"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    let emergency = app.rotate("acme").await;

    let keys = app.keys("acme").await;
    assert_eq!(status_of(&keys, &emergency), "active");
    assert_eq!(status_of(&keys, &staged), "revoked");
    assert!(!app.jwks_kids("acme").await.contains(&staged));
}

#[tokio::test]
async fn a_replica_that_missed_the_event_signs_with_the_new_key_within_its_cache_age() {
    let database = create_database().await;
    let config = TestConfig::new(&database).set("KEYSILO_KEYS__CACHE_MAX_AGE_SECONDS", "1");
    let deaf = spawn_app_with(config, database.clone()).await;
    deaf.create_tenant("acme").await;
    let first = deaf.signing_kid("acme").await.unwrap();
    // The entry expires and is reloaded with the keys unchanged: the same
    // signer carries on.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(deaf.signing_kid("acme").await.unwrap(), first);

    // Another replica on other Redis keys rotates: no event reaches `deaf`.
    let config = TestConfig::new(&database).set("KEYSILO_REDIS__KEY_PREFIX", "elsewhere:");
    let other = spawn_app_with(config, database).await;
    let new = other.rotate("acme").await;
    assert_eq!(deaf.signing_kid("acme").await.unwrap(), first);

    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(deaf.signing_kid("acme").await.unwrap(), new);
    assert!(!deaf.jwks_kids("acme").await.is_empty());
    assert_eq!(deaf.jwks_kids("acme").await[0], new);
}
