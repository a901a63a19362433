//! What PostgreSQL and Redis see per request, counted on the servers
//! themselves: PostgreSQL's `pg_stat_statements` (loaded by `scripts/stack`)
//! for the app's own database, and `INFO commandstats` of a Redis server
//! started for this test alone, so no other test's traffic is counted.
//! The figures are written down in docs/scaling.md; this test keeps them
//! true.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::helpers::{TestApp, TestConfig, create_database, free_port, spawn_app_with};

/// A Redis server of this test's own, stopped on drop.
struct OwnRedis {
    child: Child,
    port: u16,
    /// The test's own connection, opened once so that its handshake is
    /// not counted between two readings.
    probe: redis::aio::MultiplexedConnection,
}

impl OwnRedis {
    async fn start() -> Self {
        let port = free_port();
        let mut child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server (installed by scripts/stack)");
        for _ in 0..100 {
            if let Some(probe) = connect(port).await {
                return Self { child, port, probe };
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("redis-server on {port} did not start");
    }

    /// Commands executed so far, `INFO` (this test's own) excluded.
    async fn commands(&mut self) -> u64 {
        let info: String = redis::cmd("INFO")
            .arg("commandstats")
            .query_async(&mut self.probe)
            .await
            .unwrap();
        info.lines()
            .filter(|line| line.starts_with("cmdstat_") && !line.starts_with("cmdstat_info:"))
            .filter_map(|line| {
                let calls = line.split("calls=").nth(1)?;
                calls.split(',').next()?.parse::<u64>().ok()
            })
            .sum()
    }
}

async fn connect(port: u16) -> Option<redis::aio::MultiplexedConnection> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).ok()?;
    let mut connection = client.get_multiplexed_async_connection().await.ok()?;
    let _: String = redis::cmd("PING").query_async(&mut connection).await.ok()?;
    Some(connection)
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Statements executed in `database` so far (BEGIN and COMMIT included).
async fn statements(app: &TestApp) -> u64 {
    let sql = crate::helpers::admin_sql().await;
    let row = sql
        .query_one(
            "SELECT coalesce(sum(s.calls), 0)::bigint FROM pg_stat_statements s \
             JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = $1",
            &[&app.database],
        )
        .await
        .unwrap();
    u64::try_from(row.get::<_, i64>(0)).unwrap()
}

/// Per-request averages of `n` runs of one request kind.
struct Footprint {
    statements: f64,
    redis: f64,
}

async fn measure<F, Fut>(app: &TestApp, redis: &mut OwnRedis, n: u32, mut request: F) -> Footprint
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    // Once unmeasured, so caches are as they are in steady state.
    request().await;
    let (pg_before, redis_before) = (statements(app).await, redis.commands().await);
    for _ in 0..n {
        request().await;
    }
    let (pg_after, redis_after) = (statements(app).await, redis.commands().await);
    Footprint {
        statements: (pg_after - pg_before) as f64 / f64::from(n),
        redis: (redis_after - redis_before) as f64 / f64::from(n),
    }
}

#[tokio::test]
async fn statements_and_redis_commands_per_request_are_as_documented() {
    let mut redis = OwnRedis::start().await;
    let database = create_database().await;
    let config = TestConfig::new(&database)
        .set(
            "KEYSILO_REDIS__URL",
            format!("redis://127.0.0.1:{}", redis.port),
        )
        // No scheduler or purge pass inside the measurement.
        .set("KEYSILO_KEYS__SCHEDULER_INTERVAL_SECONDS", "3600");
    let app = spawn_app_with(config, database).await;
    app.create_tenant("acme").await;
    let machine = app
        .create_client(
            "acme",
            serde_json::json!({"name": "m", "grant_types": ["client_credentials"]}),
        )
        .await;
    let login = app
        .create_client(
            "acme",
            serde_json::json!({"name": "l", "grant_types": ["password", "refresh_token"]}),
        )
        .await;
    app.create_user("acme", "alice", "correct horse battery", &[])
        .await;
    let (machine, login) = (
        (machine.0.as_str(), machine.1.as_str()),
        (login.0.as_str(), login.1.as_str()),
    );

    let n = 20;
    let client_credentials = measure(&app, &mut redis, n, || async {
        let response = app
            .token("acme", machine, &[("grant_type", "client_credentials")])
            .await;
        assert_eq!(response.status(), 200);
    })
    .await;
    let sign_in = || {
        app.token(
            "acme",
            login,
            &[
                ("grant_type", "password"),
                ("username", "alice"),
                ("password", "correct horse battery"),
            ],
        )
    };
    let password = measure(&app, &mut redis, n, || async {
        assert_eq!(sign_in().await.status(), 200);
    })
    .await;
    let first: serde_json::Value = sign_in().await.json().await.unwrap();
    let current = std::cell::RefCell::new(first["refresh_token"].as_str().unwrap().to_owned());
    let refresh = measure(&app, &mut redis, n, || async {
        let token = current.borrow().clone();
        let response = app
            .token(
                "acme",
                login,
                &[("grant_type", "refresh_token"), ("refresh_token", &token)],
            )
            .await;
        assert_eq!(response.status(), 200);
        let body: serde_json::Value = response.json().await.unwrap();
        *current.borrow_mut() = body["refresh_token"].as_str().unwrap().to_owned();
    })
    .await;
    let jwks = measure(&app, &mut redis, n, || async {
        assert_eq!(app.get("/acme/.well-known/jwks").await.status(), 200);
    })
    .await;

    // Secure mode: a browser's preflight is answered from memory; minting
    // and redeeming an auth token each touch its row.
    let backend = app
        .create_client(
            "acme",
            serde_json::json!({"name": "b", "grant_types": ["auth_token"], "scopes": ["read"]}),
        )
        .await;
    let response = app
        .admin_post(
            "/tenants/acme/clients",
            serde_json::json!({
                "name": "spa", "token_endpoint_auth_method": "none", "scopes": ["read"],
                "grant_types": ["urn:ietf:params:oauth:grant-type:token-exchange"],
                "allowed_origins": ["https://app.acme.test"],
            }),
        )
        .await;
    let public: serde_json::Value = response.json().await.unwrap();
    let public = public["client_id"].as_str().unwrap().to_owned();
    let preflight = measure(&app, &mut redis, n, || async {
        let response = app
            .client
            .request(
                reqwest::Method::OPTIONS,
                format!("{}/acme/oauth2/token", app.address),
            )
            .header("origin", "https://app.acme.test")
            .header("access-control-request-method", "POST")
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.headers()["access-control-allow-origin"],
            "https://app.acme.test"
        );
    })
    .await;
    let mint = || async {
        let response = app
            .oauth_basic(
                "acme",
                "auth-token",
                (&backend.0, &backend.1),
                &[("subject", "u1"), ("public_client_id", &public)],
            )
            .await;
        assert_eq!(response.status(), 200);
        let body: serde_json::Value = response.json().await.unwrap();
        body["auth_token"].as_str().unwrap().to_owned()
    };
    let auth_token = measure(&app, &mut redis, n, || async {
        mint().await;
    })
    .await;
    let pool = std::cell::RefCell::new(Vec::new());
    for _ in 0..=n {
        let token = mint().await;
        pool.borrow_mut().push(token);
    }
    let exchange = measure(&app, &mut redis, n, || async {
        let token = pool.borrow_mut().pop().unwrap();
        let response = app
            .client
            .post(format!("{}/acme/oauth2/token", app.address))
            .form(&[
                (
                    "grant_type",
                    "urn:ietf:params:oauth:grant-type:token-exchange",
                ),
                ("client_id", public.as_str()),
                ("subject_token", token.as_str()),
                (
                    "subject_token_type",
                    "urn:keysilo:params:oauth:token-type:auth-token",
                ),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    })
    .await;

    // (request, measured, PostgreSQL statements and Redis commands as
    // docs/scaling.md states them).
    let table = [
        ("client_credentials", &client_credentials, 0.0, 0.0),
        ("password", &password, 2.0, 0.0),
        ("refresh_token", &refresh, 3.0, 0.0),
        ("jwks", &jwks, 0.0, 0.0),
        ("cors_preflight", &preflight, 0.0, 0.0),
        ("auth_token", &auth_token, 1.0, 0.0),
        ("token_exchange", &exchange, 1.0, 0.0),
    ];
    println!("| request | PostgreSQL statements | Redis commands |");
    for (name, measured, _, _) in &table {
        println!(
            "| {name} | {:.2} | {:.2} |",
            measured.statements, measured.redis
        );
    }
    for (name, measured, statements, commands) in table {
        assert_eq!(measured.statements, statements, "{name}: statements");
        assert_eq!(measured.redis, commands, "{name}: Redis commands");
    }

    // The zeros above mean something only if this Redis is the one the
    // service talks to: a rotation takes the tenant's lock, releases it
    // and publishes an event, all counted here.
    let rotation = measure(&app, &mut redis, 3, || async {
        app.rotate("acme").await;
    })
    .await;
    println!(
        "| rotation | {:.2} | {:.2} |",
        rotation.statements, rotation.redis
    );
    assert!(
        rotation.redis >= 3.0,
        "a rotation was seen to send {} Redis commands",
        rotation.redis
    );
}
