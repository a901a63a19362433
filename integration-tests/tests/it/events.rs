//! Audit events: persisted, published on Redis, and free of secrets.

use std::time::Duration;

use futures_util::StreamExt as _;
use reqwest::Method;
use serde_json::json;

use crate::helpers::{ADMIN_KEY, MASTER_KEY_V2, TestConfig, create_database, spawn_app_with};

#[tokio::test]
async fn every_audited_change_is_published_on_redis_without_secrets() {
    let database = create_database().await;
    let config = TestConfig::new(&database).with_both_master_keys(1);
    let app = spawn_app_with(config, database.clone()).await;
    let events = app.state.coord.subscribe().await.unwrap();
    let mut events = std::pin::pin!(events);

    app.create_tenant("acme").await;
    let kid = app.rotate("acme").await;
    app.admin_post(&format!("/tenants/acme/keys/{kid}/revoke"), json!({}))
        .await;
    let v2 = spawn_app_with(
        TestConfig::new(&database).with_both_master_keys(2),
        database,
    )
    .await;
    assert_eq!(
        v2.admin_post("/master-key/rewrap", json!({}))
            .await
            .status(),
        200
    );
    app.admin(Method::DELETE, "/tenants/acme")
        .send()
        .await
        .unwrap();

    let mut kinds = Vec::new();
    while kinds.len() < 5 {
        let event = tokio::time::timeout(Duration::from_secs(5), events.next())
            .await
            .expect("an event within 5 s")
            .unwrap();
        kinds.push(event.kind);
    }
    assert_eq!(
        kinds,
        [
            "tenant.created",
            "key.rotated",
            "key.revoked",
            "master_key.rewrapped",
            "tenant.disabled"
        ]
    );

    let audit = app
        .admin_get("/tenants/acme/audit")
        .await
        .text()
        .await
        .unwrap();
    for secret in [ADMIN_KEY, MASTER_KEY_V2, crate::helpers::MASTER_KEY_V1] {
        assert!(!audit.contains(secret));
    }
    let sql = app.sql().await;
    let leaked: i64 = sql
        .query_one(
            "SELECT count(*) FROM audit_events a, signing_keys k \
             WHERE a.details::text LIKE '%' || k.modulus_b64 || '%' \
                OR a.details::text LIKE '%' || encode(k.wrapped_private_key, 'base64') || '%'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(leaked, 0, "key material in an audit event");
}
