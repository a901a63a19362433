//! Audit events: persisted, published on Redis, and free of secrets.

use std::time::Duration;

use futures_util::StreamExt as _;
use keysilo_coord::Received;
use reqwest::Method;
use serde_json::json;

use crate::helpers::{
    ADMIN_KEY, MASTER_KEY_V1, MASTER_KEY_V2, PEPPER, TestConfig, create_database, redis,
    redis_port, spawn_app_with, start_edge,
};
use crate::leaks::{Secrets, add_tenant_private_keys, scan};

#[tokio::test]
async fn every_audited_change_is_published_on_redis_without_secrets() {
    let database = create_database().await;
    let config = TestConfig::new(&database).with_both_master_keys(1);
    let app = spawn_app_with(config, database.clone()).await;
    let events = app.state.coord.subscribe().await.unwrap();
    let mut events = std::pin::pin!(events);
    // The same channel read raw, for the leak scan of what really travels.
    let mut raw = redis::Client::open(format!("redis://127.0.0.1:{}", redis_port()))
        .unwrap()
        .get_async_pubsub()
        .await
        .unwrap();
    raw.subscribe(app.state.coord.key("events")).await.unwrap();
    let mut raw = raw.into_on_message();

    app.create_tenant("acme").await;
    let kid = app.rotate("acme").await;
    app.admin_post(&format!("/tenants/acme/keys/{kid}/revoke"), json!({}))
        .await;
    let v2 = spawn_app_with(
        TestConfig::new(&database).with_both_master_keys(2),
        database.clone(),
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
        let received = tokio::time::timeout(Duration::from_secs(5), events.next())
            .await
            .expect("an event within 5 s")
            .unwrap();
        let Received::Event(envelope) = received else {
            panic!("an event this build does not understand: {received:?}");
        };
        kinds.push(envelope.event.kind());
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
    let mut payloads = Vec::new();
    while payloads.len() < 5 {
        let message = tokio::time::timeout(Duration::from_secs(5), raw.next())
            .await
            .expect("a raw message within 5 s")
            .unwrap();
        payloads.push(message.get_payload::<String>().unwrap());
    }

    // Every secret the service holds, the tenants' private keys included,
    // in every form the leak scanner knows, against the raw payloads and
    // the audit trail.
    let mut secrets = Secrets::default();
    secrets.add("platform admin key", ADMIN_KEY);
    secrets.add("client-secret pepper", PEPPER);
    secrets.add_master_key("master key v1", MASTER_KEY_V1);
    secrets.add_master_key("master key v2", MASTER_KEY_V2);
    let keys = add_tenant_private_keys(&database, &mut secrets).await;
    assert!(keys >= 2, "{keys} private keys found to scan for");
    let audit = app
        .admin_get("/tenants/acme/audit")
        .await
        .text()
        .await
        .unwrap();
    let mut findings = scan(&secrets.items, "audit trail", &audit);
    for (i, payload) in payloads.iter().enumerate() {
        findings.extend(scan(&secrets.items, &format!("event {i}"), payload));
    }
    assert!(findings.is_empty(), "{findings:?}");
    // Nor the wrapped keys: PostgreSQL wraps base64 every 76 characters, so
    // the newlines go before comparing.
    let sql = app.sql().await;
    let leaked: i64 = sql
        .query_one(
            "SELECT count(*) FROM audit_events a, signing_keys k \
             WHERE a.details::text LIKE '%' || k.modulus_b64 || '%' \
                OR a.details::text LIKE '%' || \
                   replace(encode(k.wrapped_private_key, 'base64'), E'\\n', '') || '%'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(leaked, 0, "key material in an audit event");
}

#[tokio::test]
async fn edges_can_resynchronise_from_a_revocation_snapshot() {
    let database = create_database().await;
    let edge_key = "edge-key-0123456789-0123456789-0123456789";
    let config = TestConfig::new(&database)
        .set("KEYSILO_ADMIN__EDGE_API_KEY", "${secret:edge-api-key}")
        .set("KEYSILO_SECRET_EDGE_API_KEY", edge_key);
    let app = spawn_app_with(config, database).await;
    app.create_tenant("acme").await;
    app.create_tenant("gone").await;
    let kid = app.rotate("acme").await;
    app.admin_post(&format!("/tenants/acme/keys/{kid}/revoke"), json!({}))
        .await;
    let (client, _) = app
        .create_client(
            "acme",
            json!({ "name": "x", "grant_types": ["client_credentials"] }),
        )
        .await;
    app.admin(Method::DELETE, &format!("/tenants/acme/clients/{client}"))
        .send()
        .await
        .unwrap();
    app.admin(Method::DELETE, "/tenants/gone")
        .send()
        .await
        .unwrap();
    let url = format!("{}/internal/v1/revocations", app.address);

    let anonymous = app.client.get(&url).send().await.unwrap();
    let wrong = app
        .client
        .get(&url)
        .bearer_auth("nope")
        .send()
        .await
        .unwrap();
    let snapshot: serde_json::Value = app
        .client
        .get(&url)
        .bearer_auth(edge_key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();

    assert_eq!(anonymous.status(), 401);
    assert_eq!(wrong.status(), 401);
    assert_eq!(snapshot["tenants"], json!(["gone"]));
    assert_eq!(snapshot["kids"], json!([["acme", kid]]));
    assert_eq!(snapshot["clients"], json!([["acme", client]]));
    assert!(snapshot["generated_at"].as_u64().unwrap() > 0);
}

/// The value of the counter `name` in a Prometheus text page.
fn counter(page: &str, name: &str) -> f64 {
    page.lines()
        .find_map(|line| line.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn an_event_neither_service_understands_is_counted_by_both() {
    let database = create_database().await;
    let app = spawn_app_with(TestConfig::new(&database).with_edge_key(), database).await;
    let edge = start_edge(&app, redis_port(), "").await;
    let mut redis = redis().await;
    let channel = app.state.coord.key("events");
    let http = reqwest::Client::new();

    // Published until both have counted one: the subscribers may still be
    // connecting when the first goes out.
    let mut counted = (0.0, 0.0);
    for _ in 0..50 {
        let _: i64 = redis::cmd("PUBLISH")
            .arg(&channel)
            .arg(r#"{"v":1,"kind":"key.vanished","tenant":"acme"}"#)
            .query_async(&mut redis)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let identity = app.get("/metrics").await.text().await.unwrap();
        let edge_page = http
            .get(format!("http://{edge}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        counted = (
            counter(&identity, "keysilo_unknown_events_total"),
            counter(&edge_page, "keysilo_edge_unknown_events_total"),
        );
        if counted.0 >= 1.0 && counted.1 >= 1.0 {
            break;
        }
    }

    assert!(counted.0 >= 1.0, "the identity service did not count it");
    assert!(counted.1 >= 1.0, "the edge did not count it");
}
