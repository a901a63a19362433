//! Readiness follows the dependencies without a restart of the service.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::helpers::{TestConfig, create_database, free_port, spawn_app_with};

/// A Redis of this test's own, so stopping it disturbs no other test.
struct OwnRedis {
    port: u16,
    child: Child,
}

impl OwnRedis {
    fn start(port: u16) -> Self {
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server (installed by scripts/stack up)");
        Self { port, child }
    }

    fn stop(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn readiness(app: &crate::helpers::TestApp) -> (u16, serde_json::Value) {
    let response = app.get("/readyz").await;
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

async fn wait_for_status(app: &crate::helpers::TestApp, wanted: u16) -> serde_json::Value {
    let mut last = None;
    for _ in 0..100 {
        let (status, body) = readiness(app).await;
        if status == wanted {
            return body;
        }
        last = Some((status, body));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("readyz never answered {wanted}; last: {last:?}");
}

#[tokio::test]
async fn readyz_turns_503_naming_redis_when_it_stops_and_200_when_it_returns() {
    let mut redis = OwnRedis::start(free_port());
    let database = create_database().await;
    let config = TestConfig::new(&database).set(
        "KEYSILO_REDIS__URL",
        format!("redis://127.0.0.1:{}", redis.port),
    );
    let app = spawn_app_with(config, database).await;
    wait_for_status(&app, 200).await;

    redis.stop();
    let body = wait_for_status(&app, 503).await;
    assert_eq!(body["checks"]["redis"], "down");
    assert_eq!(body["checks"]["postgres"], "up");

    let _redis = OwnRedis::start(redis.port);
    let body = wait_for_status(&app, 200).await;
    assert_eq!(body["checks"]["redis"], "up");
}

#[tokio::test]
async fn readyz_names_postgres_when_it_cannot_be_reached() {
    let database = create_database().await;
    // Nothing listens on this port, as if PostgreSQL were stopped.
    let config = TestConfig::new(&database)
        .set("KEYSILO_DATABASE__PORT", free_port().to_string())
        .set("KEYSILO_DATABASE__MIGRATE_ON_START", "false");
    let app = spawn_app_with(config, database).await;

    let (status, body) = readiness(&app).await;

    assert_eq!(status, 503);
    assert_eq!(body["checks"]["postgres"], "down");
    assert_eq!(body["checks"]["redis"], "up");
}
