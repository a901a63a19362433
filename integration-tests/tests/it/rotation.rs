//! Rotation under the Redis lock across real processes: serialisation,
//! crashes, and fencing of a holder whose lock expired.

use std::time::{Duration, Instant};

use keysilo_types::TenantId;
use reqwest::Method;
use serde_json::json;

use crate::helpers::{IdentityProcess, TestConfig, create_database, redis, spawn_app_with};

async fn active_keys(sql: &tokio_postgres::Client) -> i64 {
    sql.query_one(
        "SELECT count(*) FROM signing_keys WHERE tenant_id = 'acme' AND status = 'active'",
        &[],
    )
    .await
    .unwrap()
    .get(0)
}

#[tokio::test]
async fn two_processes_rotating_one_tenant_concurrently_serialise_every_rotation() {
    let database = create_database().await;
    let config = TestConfig::new(&database);
    let a = IdentityProcess::start(&config).await;
    let b = IdentityProcess::start(&config).await;
    let created = a
        .admin(Method::POST, "/tenants")
        .json(&json!({ "id": "acme", "display_name": "Acme" }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let observer = spawn_app_with(config, database).await;
    let sql = observer.sql().await;

    // Watch the invariant while 2 × 10 rotations race.
    let watcher = {
        let sql = observer.sql().await;
        tokio::spawn(async move {
            let mut seen = Vec::new();
            for _ in 0..200 {
                seen.push(active_keys(&sql).await);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            seen
        })
    };
    let mut calls = Vec::new();
    for i in 0..20 {
        let replica = if i % 2 == 0 { &a } else { &b };
        calls.push(
            replica
                .admin(Method::POST, "/tenants/acme/keys/rotate")
                .send(),
        );
    }
    let responses = futures_util::future::join_all(calls).await;

    let mut new_kids = Vec::new();
    for response in responses {
        let response = response.unwrap();
        assert_eq!(response.status(), 200);
        let body: serde_json::Value = response.json().await.unwrap();
        new_kids.push(body["kid"].as_str().unwrap().to_owned());
    }
    new_kids.sort();
    new_kids.dedup();
    assert_eq!(new_kids.len(), 20, "every rotation made its own key");
    assert_eq!(active_keys(&sql).await, 1);
    let seen = watcher.await.unwrap();
    assert!(
        seen.iter().all(|&n| n == 1),
        "active key count seen: {seen:?}"
    );
    let total: i64 = sql
        .query_one(
            "SELECT count(*) FROM signing_keys WHERE tenant_id = 'acme'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(total, 21);
    // Each rotation retired exactly the key the previous one activated, and
    // committed with a larger fence than the one before it.
    let rows = sql
        .query(
            "SELECT details FROM audit_events WHERE type = 'key.rotated' ORDER BY id",
            &[],
        )
        .await
        .unwrap();
    let details: Vec<serde_json::Value> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(details.len(), 20);
    for pair in details.windows(2) {
        assert_eq!(pair[1]["retired_kid"], pair[0]["kid"], "{pair:?}");
        assert!(
            pair[1]["fence"].as_i64() > pair[0]["fence"].as_i64(),
            "{pair:?}"
        );
    }
}

#[tokio::test]
async fn a_lock_holder_killed_mid_rotation_leaves_no_partial_state_and_the_lock_expires() {
    let database = create_database().await;
    let config = TestConfig::new(&database)
        .set("KEYSILO_KEYS__LOCK_TTL_SECONDS", "2")
        .set("KEYSILO_KEYS__LOCK_WAIT_SECONDS", "10");
    let observer = spawn_app_with(
        TestConfig::new(&database).set("KEYSILO_KEYS__LOCK_TTL_SECONDS", "2"),
        database.clone(),
    )
    .await;
    observer.create_tenant("acme").await;
    let lock_key = format!("test:{database}:lock:tenant-keys:acme");
    let mut redis = redis().await;

    // Kill the process at a moment it holds the lock; rotations spend most
    // of their time generating keys outside it, so try a few times.
    let mut killed_while_holding = false;
    for _ in 0..10 {
        let mut victim = IdentityProcess::start(&config).await;
        let spammer = {
            let victim_address = victim.address.clone();
            tokio::spawn(async move {
                let client = reqwest::Client::new();
                loop {
                    let _ = client
                        .post(format!(
                            "{victim_address}/admin/v1/tenants/acme/keys/rotate"
                        ))
                        .bearer_auth(crate::helpers::ADMIN_KEY)
                        .send()
                        .await;
                }
            })
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            let held: bool = redis::cmd("EXISTS")
                .arg(&lock_key)
                .query_async::<i64>(&mut redis)
                .await
                .unwrap()
                == 1;
            if held {
                victim.child.kill().unwrap(); // SIGKILL
                victim.child.wait().unwrap();
                break;
            }
        }
        spammer.abort();
        let still_held: i64 = redis::cmd("EXISTS")
            .arg(&lock_key)
            .query_async(&mut redis)
            .await
            .unwrap();
        if still_held == 1 {
            killed_while_holding = true;
            break;
        }
    }
    assert!(
        killed_while_holding,
        "never caught the victim holding the lock"
    );

    let sql = observer.sql().await;
    assert_eq!(
        active_keys(&sql).await,
        1,
        "no tenant without, or with two, active keys"
    );
    let acme = TenantId::parse("acme").unwrap();
    for key in observer.state.store.keys(&acme).await.unwrap() {
        let wrapped = keysilo_custody::WrappedKey {
            ciphertext: key.wrapped.clone(),
            nonce: key.nonce,
            master_key_version: key.master_key_version,
        };
        observer
            .state
            .keys
            .ring()
            .unwrap(&acme, &key.kid, &wrapped)
            .expect("every stored key is readable");
    }

    // The dead holder's lock blocks the next rotation only until it expires.
    let started = Instant::now();
    let kid = observer.rotate("acme").await;
    let waited = started.elapsed();
    assert!(observer.jwks_kids("acme").await.contains(&kid));
    assert_eq!(active_keys(&sql).await, 1);
    assert!(waited < Duration::from_secs(10), "waited {waited:?}");
}

#[tokio::test]
async fn a_holder_whose_lock_expired_cannot_commit() {
    let database = create_database().await;
    let app = spawn_app_with(TestConfig::new(&database), database.clone()).await;
    app.create_tenant("acme").await;
    let acme = TenantId::parse("acme").unwrap();

    let stale = app
        .state
        .coord
        .acquire_lock(
            "tenant-keys",
            "acme",
            Duration::from_millis(600),
            Duration::ZERO,
        )
        .await
        .unwrap();
    // The lock vanishes as if it had expired while its holder was paused…
    let mut redis = redis().await;
    let _: i64 = redis::cmd("DEL")
        .arg(format!("test:{database}:lock:tenant-keys:acme"))
        .query_async(&mut redis)
        .await
        .unwrap();
    // …and another replica takes it and rotates.
    let rotated = app.rotate("acme").await;

    let now = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(2_000_000_000);
    let late = app
        .state
        .store
        .apply_key_change(
            stale.fence(),
            &acme,
            &keysilo_store::KeyChange::PromoteNext { publish_until: now },
            &keysilo_store::NewAuditEvent {
                tenant_id: Some(acme.clone()),
                kind: "test.late",
                actor: "test".into(),
                details: json!({}),
            },
            now,
        )
        .await;

    assert!(
        matches!(late, Err(keysilo_store::StoreError::StaleFence)),
        "{late:?}"
    );
    assert_eq!(
        app.signing_kid("acme").await.as_deref(),
        Some(rotated.as_str())
    );
    // Its next renewal tells the stale holder that it lost the lock.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(stale.is_lost());
}

#[tokio::test]
async fn a_busy_lock_makes_others_wait_and_release_only_frees_ones_own_lock() {
    let database = create_database().await;
    let app = spawn_app_with(TestConfig::new(&database), database.clone()).await;
    let coord = &app.state.coord;
    let ttl = Duration::from_secs(10);
    let key = format!("test:{database}:lock:tenant-keys:acme");
    let mut redis = redis().await;

    let first = coord
        .acquire_lock("tenant-keys", "acme", ttl, Duration::ZERO)
        .await
        .unwrap();
    let busy = coord
        .acquire_lock("tenant-keys", "acme", ttl, Duration::from_millis(100))
        .await;
    assert!(matches!(
        busy,
        Err(keysilo_coord::CoordError::LockBusy { .. })
    ));

    // First's lock expires (simulated) and second takes it over.
    let _: i64 = redis::cmd("DEL")
        .arg(&key)
        .query_async(&mut redis)
        .await
        .unwrap();
    let second = coord
        .acquire_lock("tenant-keys", "acme", ttl, Duration::ZERO)
        .await
        .unwrap();
    // First's late release must not free second's lock.
    first.release().await.unwrap();

    let held: i64 = redis::cmd("EXISTS")
        .arg(&key)
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(held, 1);
    assert!(!second.is_lost());
    second.release().await.unwrap();
    let held: i64 = redis::cmd("EXISTS")
        .arg(&key)
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(held, 0);
}

#[tokio::test]
async fn a_held_lock_is_renewed_past_its_ttl() {
    let database = create_database().await;
    let app = spawn_app_with(TestConfig::new(&database), database.clone()).await;

    let guard = app
        .state
        .coord
        .acquire_lock(
            "tenant-keys",
            "acme",
            Duration::from_millis(300),
            Duration::ZERO,
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1000)).await;

    assert!(!guard.is_lost());
    let busy = app
        .state
        .coord
        .acquire_lock(
            "tenant-keys",
            "acme",
            Duration::from_millis(300),
            Duration::ZERO,
        )
        .await;
    assert!(busy.is_err(), "the renewed lock must still be held");
    guard.release().await.unwrap();
}
