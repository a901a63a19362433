//! Dependency outages under load: PostgreSQL and Redis really stopped (each
//! test runs its own server, so no other test is disturbed) and started
//! again, with the service running throughout.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::json;

use crate::helpers::{TestApp, TestConfig, free_port, spawn_app_with, start_edge};

/// The newest PostgreSQL server binaries installed.
fn pg_bin() -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL (installed by scripts/stack up)")
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|d| d.join("initdb").exists())
        .collect();
    dirs.sort_by_key(|d| {
        d.parent()
            .and_then(Path::file_name)
            .and_then(|n| n.to_str())
            .and_then(|n| n.parse::<u32>().ok())
    });
    dirs.pop().expect("a PostgreSQL with initdb")
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

/// A PostgreSQL cluster of this test's own, run as `postgres` when the
/// test runs as root (PostgreSQL refuses root), as `scripts/stack` does.
struct OwnPostgres {
    dir: tempfile::TempDir,
    port: u16,
    bin: PathBuf,
}

impl OwnPostgres {
    fn tool(&self, name: &str) -> Command {
        let program = self.bin.join(name);
        let mut command = if is_root() {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(program);
            command
        } else {
            Command::new(program)
        };
        command
            .current_dir("/")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        command
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        if is_root() {
            let chowned = Command::new("chown")
                .args(["postgres"])
                .arg(dir.path())
                .status()
                .unwrap();
            assert!(chowned.success());
        }
        let postgres = Self {
            dir,
            port: free_port(),
            bin: pg_bin(),
        };
        let data = postgres.data();
        let initialised = postgres
            .tool("initdb")
            .args(["-D", &data, "-U", "postgres", "-A", "trust", "-N"])
            .args(["-E", "UTF8", "--locale=C.UTF-8"])
            .status()
            .unwrap();
        assert!(initialised.success(), "initdb failed");
        postgres.run();
        postgres
    }

    /// A connection as the superuser.
    async fn sql(&self) -> tokio_postgres::Client {
        let config = format!(
            "host=127.0.0.1 port={} user=postgres dbname=postgres",
            self.port
        );
        let (client, connection) = tokio_postgres::connect(&config, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        client
    }

    /// Starts the server (again).
    fn run(&self) {
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("postgres.log").display().to_string();
        let started = self
            .tool("pg_ctl")
            .args([
                "-D",
                &self.data(),
                "-l",
                &log,
                "-w",
                "-t",
                "60",
                "-o",
                &options,
                "start",
            ])
            .status()
            .unwrap();
        assert!(started.success(), "pg_ctl start failed");
    }

    /// Stops the server the way an operator would (`-m fast`: sessions
    /// are ended, the server shuts down cleanly).
    fn stop(&self) {
        let stopped = self
            .tool("pg_ctl")
            .args(["-D", &self.data(), "-m", "fast", "-w", "stop"])
            .status()
            .unwrap();
        assert!(stopped.success(), "pg_ctl stop failed");
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        let _ = self
            .tool("pg_ctl")
            .args(["-D", &self.data(), "-m", "immediate", "stop"])
            .status();
    }
}

/// A Redis of this test's own.
struct OwnRedis {
    port: u16,
    child: Option<Child>,
}

impl OwnRedis {
    fn start() -> Self {
        let mut redis = Self {
            port: free_port(),
            child: None,
        };
        redis.run();
        redis
    }

    fn run(&mut self) {
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server (installed by scripts/stack up)");
        self.child = Some(child);
        std::thread::sleep(Duration::from_millis(200));
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `client_credentials` requests in a loop until stopped; the statuses.
fn issue_in_background(
    app: &TestApp,
    client: (String, String),
    running: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<BTreeMap<u16, usize>> {
    let url = format!("{}/acme/oauth2/token", app.address);
    tokio::spawn(async move {
        let http = reqwest::Client::new();
        let mut statuses = BTreeMap::new();
        while running.load(Ordering::Relaxed) {
            let status = http
                .post(&url)
                .basic_auth(&client.0, Some(&client.1))
                .form(&[("grant_type", "client_credentials")])
                .send()
                .await
                .map_or(0, |r| r.status().as_u16());
            *statuses.entry(status).or_insert(0) += 1;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        statuses
    })
}

async fn wait_ready(app: &TestApp, what: &str) {
    for _ in 0..300 {
        if app.get("/readyz").await.status() == 200 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("not ready again after {what} returned");
}

async fn error_of(response: reqwest::Response) -> (u16, String) {
    let status = response.status().as_u16();
    let body: serde_json::Value = response.json().await.unwrap_or(json!({}));
    (
        status,
        body["error"].as_str().unwrap_or_default().to_owned(),
    )
}

const PASSWORD: &str = "correct horse battery staple";

#[tokio::test]
async fn a_postgres_outage_keeps_client_credentials_issuing_refuses_the_rest_with_503_and_heals() {
    let postgres = OwnPostgres::start();
    let prefix = format!("test:pg-outage-{}:", uuid::Uuid::new_v4().simple());
    let config = TestConfig::new("postgres")
        .set("KEYSILO_DATABASE__PORT", postgres.port.to_string())
        .set("KEYSILO_DATABASE__USER", "postgres")
        .set("KEYSILO_DATABASE__CONNECT_TIMEOUT_SECONDS", "1")
        .set("KEYSILO_REDIS__KEY_PREFIX", prefix)
        // Entries expire during the outage, so the cached copies must be
        // served past their age.
        .set("KEYSILO_KEYS__CACHE_MAX_AGE_SECONDS", "1");
    let app = spawn_app_with(config, "postgres".into()).await;
    app.create_tenant("acme").await;
    let machine = app
        .create_client(
            "acme",
            json!({ "name": "m2m", "grant_types": ["client_credentials"] }),
        )
        .await;
    let login = app
        .create_client(
            "acme",
            json!({ "name": "app", "grant_types": ["password", "refresh_token"] }),
        )
        .await;
    app.create_user("acme", "alice", PASSWORD, &[]).await;
    let password_form = [
        ("grant_type", "password"),
        ("username", "alice"),
        ("password", PASSWORD),
    ];
    let tokens: serde_json::Value = app
        .token("acme", (&login.0, &login.1), &password_form)
        .await
        .json()
        .await
        .unwrap();
    let refresh = tokens["refresh_token"].as_str().unwrap().to_owned();
    let clients_before: i64 = postgres
        .sql()
        .await
        .query_one("SELECT count(*) FROM clients", &[])
        .await
        .unwrap()
        .get(0);

    let running = Arc::new(AtomicBool::new(true));
    let load = issue_in_background(&app, machine.clone(), running.clone());
    tokio::time::sleep(Duration::from_millis(300)).await;
    postgres.stop();
    // Longer than the cache age: every entry has expired meanwhile.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let unavailable = (503, "temporarily_unavailable".to_owned());
    let response = app
        .token("acme", (&login.0, &login.1), &password_form)
        .await;
    assert!(response.headers().contains_key("retry-after"));
    assert_eq!(error_of(response).await, unavailable);
    let form = [
        ("grant_type", "refresh_token"),
        ("refresh_token", refresh.as_str()),
    ];
    let response = app.token("acme", (&login.0, &login.1), &form).await;
    assert_eq!(error_of(response).await, unavailable);
    // Admin writes: refused whole.
    let response = app
        .admin_post(
            "/tenants/acme/clients",
            json!({ "name": "late", "grant_types": ["client_credentials"] }),
        )
        .await;
    assert_eq!(error_of(response).await, unavailable);
    let response = app
        .admin_post(
            "/tenants",
            json!({ "id": "during", "display_name": "During" }),
        )
        .await;
    assert_eq!(error_of(response).await.0, 503);
    let response = app.admin_post("/tenants/acme/keys/rotate", json!({})).await;
    assert_eq!(error_of(response).await.0, 503);
    assert_eq!(app.get("/readyz").await.status(), 503);
    // Password attempts that could not be checked are no failures: no
    // back-off waits for alice when the database returns.
    for _ in 0..6 {
        let response = app
            .token("acme", (&login.0, &login.1), &password_form)
            .await;
        assert_eq!(response.status(), 503);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    postgres.run();
    wait_ready(&app, "PostgreSQL").await;
    running.store(false, Ordering::Relaxed);
    let statuses = load.await.unwrap();
    println!("client_credentials during the outage: {statuses:?}");
    assert_eq!(
        statuses.keys().copied().collect::<Vec<_>>(),
        [200],
        "{statuses:?}"
    );
    assert!(statuses[&200] > 50, "{statuses:?}");

    // Healed without a restart; the refused refresh token was not spent.
    let response = app
        .token("acme", (&login.0, &login.1), &password_form)
        .await;
    assert_eq!(response.status(), 200);
    let response = app.token("acme", (&login.0, &login.1), &form).await;
    assert_eq!(response.status(), 200);
    // Nothing half-written: no tenant, no client from the refused writes.
    assert_eq!(app.admin_get("/tenants/during").await.status(), 404);
    let clients_after: i64 = postgres
        .sql()
        .await
        .query_one("SELECT count(*) FROM clients", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(clients_after, clients_before);
    assert_eq!(app.keys("acme").await.len(), 1);
    let response = app
        .admin_post(
            "/tenants",
            json!({ "id": "during", "display_name": "During" }),
        )
        .await;
    assert_eq!(response.status(), 201);
}

#[tokio::test]
async fn a_redis_outage_keeps_issuing_defers_rotations_and_loses_no_revocation() {
    let mut redis = OwnRedis::start();
    let database = crate::helpers::create_database().await;
    let config = TestConfig::new(&database)
        .set(
            "KEYSILO_REDIS__URL",
            format!("redis://127.0.0.1:{}", redis.port),
        )
        .with_edge_key()
        .set("KEYSILO_KEYS__LOCK_WAIT_SECONDS", "1");
    let app = spawn_app_with(config, database.clone()).await;
    app.create_tenant("acme").await;
    let machine = app
        .create_client(
            "acme",
            json!({ "name": "m2m", "grant_types": ["client_credentials"], "audience": ["data-plane"] }),
        )
        .await;
    let edge = format!(
        "http://{}",
        start_edge(&app, redis.port, "poll_interval_seconds = 1").await
    );
    let first = machine_token(&app, &machine).await;
    assert_eq!(edge_auth(&edge, &first).await, 200);

    let running = Arc::new(AtomicBool::new(true));
    let load = issue_in_background(&app, machine.clone(), running.clone());
    redis.stop();
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Rotations need the lock: refused, and nothing changes.
    let kids = app.jwks_kids("acme").await;
    let response = app.admin_post("/tenants/acme/keys/rotate", json!({})).await;
    assert_eq!(error_of(response).await.0, 503);
    // A scheduled step that is due is deferred, not done without the lock.
    app.sql()
        .await
        .execute(
            "UPDATE signing_keys SET activated_at = now() - interval '400 days' WHERE status = 'active'",
            &[],
        )
        .await
        .unwrap();
    let pass = app.state.keys.run_due_rotations().await;
    assert!(
        pass.as_ref().map_or(true, |p| p.done == 0 && p.failed > 0),
        "{pass:?}"
    );
    assert_eq!(app.keys("acme").await.len(), 1);
    assert_eq!(app.jwks_kids("acme").await, kids);

    // A revocation made while Redis is down reaches the edge by polling.
    let revoked = machine_token(&app, &machine).await;
    assert_eq!(edge_auth(&edge, &revoked).await, 200);
    let response = app
        .oauth_basic(
            "acme",
            "revoke",
            (&machine.0, &machine.1),
            &[("token", revoked.as_str())],
        )
        .await;
    assert_eq!(response.status(), 200);
    let refused = wait_for_edge(&edge, &revoked, 401).await;
    println!("edge refused a revocation made without Redis after {refused:?}");

    redis.run();
    // Resynchronised: after the reconnect, events flow again and the
    // deferred rotation step is done by the scheduler's next pass.
    wait_ready(&app, "Redis").await;
    running.store(false, Ordering::Relaxed);
    let statuses = load.await.unwrap();
    println!("client_credentials during the Redis outage: {statuses:?}");
    assert_eq!(
        statuses.keys().copied().collect::<Vec<_>>(),
        [200],
        "{statuses:?}"
    );

    let pass = app.state.keys.run_due_rotations().await.unwrap();
    assert_eq!(pass.done, 1, "{pass:?}");
    assert_eq!(app.keys("acme").await.len(), 2);
    // Still refused after the edge resubscribed (the snapshot taken on
    // reconnect keeps it), and a new revocation arrives by event.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(edge_auth(&edge, &revoked).await, 401);
    let later = machine_token(&app, &machine).await;
    assert_eq!(edge_auth(&edge, &later).await, 200);
    // Only events feed the lag histogram (polls do not), so its count
    // rising proves the event path works again, whatever the poll does.
    let events_before = events_applied(&edge).await;
    app.oauth_basic(
        "acme",
        "revoke",
        (&machine.0, &machine.1),
        &[("token", later.as_str())],
    )
    .await;
    wait_for_edge(&edge, &later, 401).await;
    let start = std::time::Instant::now();
    while events_applied(&edge).await <= events_before {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "no event reached the edge after Redis came back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(edge_auth(&edge, &first).await, 200);
}

/// How many events the edge has applied (the count of its
/// `revocation_lag_seconds` histogram, which only events feed).
async fn events_applied(edge: &str) -> u64 {
    let page = reqwest::get(format!("{edge}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    page.lines()
        .find_map(|line| {
            line.strip_prefix("keysilo_edge_revocation_lag_seconds_count ")?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

async fn machine_token(app: &TestApp, machine: &(String, String)) -> String {
    let response = app
        .token(
            "acme",
            (&machine.0, &machine.1),
            &[("grant_type", "client_credentials")],
        )
        .await;
    let body: serde_json::Value = response.json().await.unwrap();
    body["access_token"].as_str().unwrap().to_owned()
}

async fn edge_auth(edge: &str, token: &str) -> u16 {
    reqwest::Client::new()
        .get(format!("{edge}/auth"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Waits (up to 10 s) until the edge answers `status` for `token`.
async fn wait_for_edge(edge: &str, token: &str, status: u16) -> Duration {
    let start = std::time::Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        if edge_auth(edge, token).await == status {
            return start.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the edge never answered {status}");
}
