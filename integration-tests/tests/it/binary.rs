//! The real executable: start-up refusals, `config validate`, graceful
//! shutdown and what ends up in its logs.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::helpers::{
    ADMIN_KEY, MASTER_KEY_V1, PEPPER, TestConfig, create_database, db_password, edge_binary,
    free_port, identity_binary,
};

fn write(path: &Path, contents: &str, mode: u32) {
    std::fs::write(path, contents).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Runs the binary with only the given environment (plus PATH).
fn identity(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(identity_binary());
    command.args(args).env_clear();
    if let Ok(path) = std::env::var("PATH") {
        command.env("PATH", path);
    }
    command.envs(env.iter().copied());
    command
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn start_up_is_refused_without_an_admin_api_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("keysilo.toml");
    write(
        &config,
        "[[custody.master_keys]]\nversion = 1\nkey = \"${secret:master-key-v1}\"\n",
        0o600,
    );

    let output = identity(
        &["--config", config.to_str().unwrap(), "serve"],
        &[("KEYSILO_SECRET_MASTER_KEY_V1", MASTER_KEY_V1)],
    )
    .output()
    .unwrap();

    assert!(!output.status.success());
    let text = text(&output);
    assert!(text.contains("admin.api_key"), "{text}");
    assert!(text.contains("required"), "{text}");
}

#[test]
fn the_edge_checks_its_log_filter_and_serves_by_the_same_command_as_the_identity_service() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("edge.toml");
    let edge_config = |log_level: &str| {
        format!(
            r#"
            [edge]
            issuer_base = "http://127.0.0.1:1"
            identity_url = "http://127.0.0.1:1"
            audience = "data-plane"
            identity_api_key = "${{secret:edge-api-key}}"
            [telemetry]
            log_level = "{log_level}"
            "#
        )
    };
    let validate = |args: &[&str]| {
        let mut command = Command::new(edge_binary());
        command
            .args(["--config", config.to_str().unwrap()])
            .args(args)
            .env_clear()
            .env(
                "KEYSILO_SECRET_EDGE_API_KEY",
                "edge-key-0123456789-0123456789-0123456789",
            );
        command.output().unwrap()
    };

    write(&config, &edge_config("info,=[bad"), 0o600);
    let bad = validate(&["config", "validate"]);
    write(&config, &edge_config("info"), 0o600);
    let good = validate(&["config", "validate"]);
    let help = validate(&["--help"]);

    assert_eq!(bad.status.code(), Some(2), "{}", text(&bad));
    assert!(text(&bad).contains("telemetry.log_level"), "{}", text(&bad));
    assert_eq!(good.status.code(), Some(0), "{}", text(&good));
    assert!(text(&help).contains("serve"), "{}", text(&help));
}

#[test]
fn config_validate_reports_every_problem_at_once_and_exits_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let secrets = dir.path().join("secrets");
    std::fs::create_dir(&secrets).unwrap();
    write(&secrets.join("admin-api-key"), ADMIN_KEY, 0o644);
    let config = dir.path().join("keysilo.toml");
    write(
        &config,
        &format!(
            r#"
            [secrets]
            providers = ["file"]
            file_dir = "{}"
            [admin]
            api_key = "${{secret:admin-api-key}}"
            [[custody.master_keys]]
            version = 1
            key = "${{secret:master-key-v1}}"
            [server]
            port = 99999
            [telemetry]
            log_format = "xml"
            "#,
            secrets.display()
        ),
        0o600,
    );

    let output = identity(
        &["--config", config.to_str().unwrap(), "config", "validate"],
        &[],
    )
    .output()
    .unwrap();

    assert!(!output.status.success());
    let text = text(&output);
    let insecure = secrets.join("admin-api-key");
    for expected in [
        format!("chmod 600 {}", insecure.display()),
        "master-key-v1".to_owned(),
        "server".to_owned(),
        "telemetry".to_owned(),
    ] {
        assert!(text.contains(&expected), "missing {expected:?} in:\n{text}");
    }
    assert!(!text.contains(ADMIN_KEY), "a secret leaked:\n{text}");
}

#[test]
fn config_validate_accepts_a_good_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("keysilo.toml");
    write(&config, &TestConfig::new("keysilo").toml, 0o600);

    let output = identity(
        &["--config", config.to_str().unwrap(), "config", "validate"],
        &[
            ("KEYSILO_SECRET_ADMIN_API_KEY", ADMIN_KEY),
            ("KEYSILO_SECRET_MASTER_KEY_V1", MASTER_KEY_V1),
            ("KEYSILO_SECRET_CLIENT_SECRET_PEPPER", PEPPER),
            ("KEYSILO_SECRET_DATABASE_PASSWORD", &db_password()),
        ],
    )
    .output()
    .unwrap();

    assert!(output.status.success(), "{}", text(&output));
}

#[tokio::test]
async fn a_start_up_and_token_flows_at_debug_level_log_no_secret_and_it_stops_on_sigterm() {
    let database = create_database().await;
    let dir = tempfile::tempdir().unwrap();
    let secrets = dir.path().join("secrets");
    std::fs::create_dir(&secrets).unwrap();
    // The admin key comes from a file, the others from the environment, so
    // both providers are exercised.
    write(&secrets.join("admin-api-key"), ADMIN_KEY, 0o600);
    let config = dir.path().join("keysilo.toml");
    let toml = TestConfig::new(&database).toml.replace(
        "[server]",
        &format!("[secrets]\nfile_dir = \"{}\"\n[server]", secrets.display()),
    );
    write(&config, &toml, 0o600);
    let port = free_port();
    let password = db_password();

    let child = identity(
        &["--config", config.to_str().unwrap(), "serve"],
        &[
            ("KEYSILO_SECRET_MASTER_KEY_V1", MASTER_KEY_V1),
            ("KEYSILO_SECRET_CLIENT_SECRET_PEPPER", PEPPER),
            ("KEYSILO_SECRET_DATABASE_PASSWORD", &password),
            ("KEYSILO_SERVER__PORT", &port.to_string()),
            ("KEYSILO_TELEMETRY__LOG_LEVEL", "debug"),
        ],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();

    let client = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let mut ready = false;
    for _ in 0..100 {
        if let Ok(response) = client.get(format!("{base}/readyz")).send().await {
            ready = response.status() == 200;
            if ready {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    client
        .get(format!("{base}/metrics"))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap();
    let flows = exercise_token_flows(&client, &base).await;
    let pid = child.id().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(killed.success());
    let output = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();

    let logs = text(&output);
    assert!(ready, "the service never became ready:\n{logs}");
    assert!(
        output.status.success(),
        "SIGTERM should stop it cleanly:\n{logs}"
    );
    assert!(logs.contains("identity service stopped"), "{logs}");
    assert!(logs.lines().count() > 3, "expected debug logs:\n{logs}");
    for secret in [ADMIN_KEY, MASTER_KEY_V1, PEPPER, password.as_str()]
        .into_iter()
        .chain(flows.iter().map(String::as_str))
    {
        assert!(
            !logs.contains(secret),
            "a secret leaked into the logs:\n{logs}"
        );
    }
    for line in logs.lines().filter(|l| l.starts_with('{')) {
        serde_json::from_str::<serde_json::Value>(line)
            .unwrap_or_else(|err| panic!("not a JSON log line ({err}): {line}"));
    }
}

#[tokio::test]
async fn the_cli_reports_master_key_status_and_rewraps() {
    let database = create_database().await;
    let app = crate::helpers::spawn_app_with(TestConfig::new(&database), database.clone()).await;
    app.create_tenant("acme").await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("keysilo.toml");
    let toml = TestConfig::new(&database).toml.replace(
        "[[custody.master_keys]]",
        "[custody]\ncurrent_master_key_version = 2\n\n[[custody.master_keys]]\nversion = 2\nkey = \"${secret:master-key-v2}\"\n\n[[custody.master_keys]]",
    );
    write(&config, &toml, 0o600);
    let password = db_password();
    let env = [
        ("KEYSILO_SECRET_ADMIN_API_KEY", ADMIN_KEY),
        ("KEYSILO_SECRET_MASTER_KEY_V1", MASTER_KEY_V1),
        ("KEYSILO_SECRET_CLIENT_SECRET_PEPPER", PEPPER),
        (
            "KEYSILO_SECRET_MASTER_KEY_V2",
            crate::helpers::MASTER_KEY_V2,
        ),
        ("KEYSILO_SECRET_DATABASE_PASSWORD", password.as_str()),
    ];
    let run = |args: &[&str]| {
        let mut all = vec!["--config", config.to_str().unwrap()];
        all.extend_from_slice(args);
        let output = identity(&all, &env).output().unwrap();
        assert!(output.status.success(), "{}", text(&output));
        serde_json::from_slice::<serde_json::Value>(&output.stdout).unwrap()
    };

    let before = run(&["master-key", "status"]);
    let report = run(&["master-key", "rewrap"]);
    let after = run(&["master-key", "status"]);

    assert_eq!(before["current_version"], 2);
    assert_eq!(
        before["keys_per_version"],
        serde_json::json!([{ "version": 1, "keys": 1 }])
    );
    assert_eq!(report, serde_json::json!({ "version": 2, "rewrapped": 1 }));
    assert_eq!(
        after["keys_per_version"],
        serde_json::json!([{ "version": 2, "keys": 1 }])
    );
}

#[tokio::test]
async fn bootstrap_makes_a_usable_demo_tenant_once_and_keeps_its_credentials_private() {
    let database = create_database().await;
    let app = crate::helpers::spawn_app_with(TestConfig::new(&database), database.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("keysilo.toml");
    write(&config, &TestConfig::new(&database).toml, 0o600);
    let output = dir.path().join("demo.json");
    let password = db_password();
    let env = [
        ("KEYSILO_SECRET_ADMIN_API_KEY", ADMIN_KEY),
        ("KEYSILO_SECRET_MASTER_KEY_V1", MASTER_KEY_V1),
        ("KEYSILO_SECRET_CLIENT_SECRET_PEPPER", PEPPER),
        ("KEYSILO_SECRET_DATABASE_PASSWORD", password.as_str()),
    ];
    let run = || {
        let output = identity(
            &[
                "--config",
                config.to_str().unwrap(),
                "bootstrap",
                "--tenant",
                "demo",
                "--output",
                output.to_str().unwrap(),
            ],
            &env,
        )
        .output()
        .unwrap();
        assert!(output.status.success(), "{}", text(&output));
        serde_json::from_slice::<serde_json::Value>(&output.stdout).unwrap()
    };

    let first = run();
    let second = run();

    assert_eq!(first, second);
    let mode = std::fs::metadata(&output).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let machine = (
        first["machine_client_id"].as_str().unwrap(),
        first["machine_client_secret"].as_str().unwrap(),
    );
    let token = app
        .token("demo", machine, &[("grant_type", "client_credentials")])
        .await;
    assert_eq!(token.status(), 200);
    let dashboard = (
        first["dashboard_client_id"].as_str().unwrap(),
        first["dashboard_client_secret"].as_str().unwrap(),
    );
    let login = app
        .token(
            "demo",
            dashboard,
            &[
                ("grant_type", "password"),
                ("username", "admin"),
                ("password", first["password"].as_str().unwrap()),
                ("scope", "admin"),
            ],
        )
        .await;
    assert_eq!(login.status(), 200);
}

/// Creates a tenant, a client and a user, then runs the password and
/// refresh grants, introspection and revocation, including failures.
/// Returns every secret value that went over the wire.
/// The answer of `response`, which must have `status`; its body as JSON
/// (`null` if none).
async fn expect(
    what: &str,
    status: u16,
    response: Result<reqwest::Response, reqwest::Error>,
) -> serde_json::Value {
    let response = response.unwrap();
    let got = response.status().as_u16();
    let body = response.text().await.unwrap();
    assert_eq!(got, status, "{what}: {body}");
    serde_json::from_str(&body).unwrap_or(serde_json::Value::Null)
}

async fn exercise_token_flows(client: &reqwest::Client, base: &str) -> Vec<String> {
    let admin = |path: &str, body: serde_json::Value| {
        client
            .post(format!("{base}/admin/v1{path}"))
            .bearer_auth(ADMIN_KEY)
            .json(&body)
            .send()
    };
    let tenant = serde_json::json!({ "id": "acme", "display_name": "Acme" });
    expect("create a tenant", 201, admin("/tenants", tenant).await).await;
    let app = serde_json::json!({ "name": "app", "grant_types": ["password", "refresh_token"] });
    let created = expect(
        "register a client",
        201,
        admin("/tenants/acme/clients", app).await,
    )
    .await;
    let user_password = "a very secret password 123";
    let alice = serde_json::json!({ "username": "alice", "password": user_password });
    expect(
        "create a user",
        201,
        admin("/tenants/acme/users", alice).await,
    )
    .await;
    let id = created["client_id"].as_str().unwrap().to_owned();
    let secret = created["client_secret"].as_str().unwrap().to_owned();
    let post = |endpoint: &str, form: Vec<(&str, String)>| {
        client
            .post(format!("{base}/acme/oauth2/{endpoint}"))
            .basic_auth(&id, Some(&secret))
            .form(&form)
            .send()
    };
    let login = vec![
        ("grant_type", "password".into()),
        ("username", "alice".into()),
        ("password", user_password.into()),
    ];
    let login = expect("password grant", 200, post("token", login).await).await;
    let access = login["access_token"].as_str().unwrap().to_owned();
    let refresh = login["refresh_token"].as_str().unwrap().to_owned();
    let wrong = vec![
        ("grant_type", "password".into()),
        ("username", "alice".into()),
        ("password", "wrong horse".into()),
    ];
    expect("wrong password", 400, post("token", wrong).await).await;
    let renew = vec![
        ("grant_type", "refresh_token".into()),
        ("refresh_token", refresh.clone()),
    ];
    let renewed = expect("refresh", 200, post("token", renew.clone()).await).await;
    // Reuse of the spent token, then introspection and revocation.
    expect("refresh token reuse", 400, post("token", renew).await).await;
    let introspected = expect(
        "introspection",
        200,
        post("introspect", vec![("token", access.clone())]).await,
    )
    .await;
    // Reuse revoked the family, and with it the access tokens issued from
    // it (contract, "Revocation, made exact").
    assert_eq!(introspected["active"], false, "{introspected}");
    expect(
        "revocation",
        200,
        post("revoke", vec![("token", access.clone())]).await,
    )
    .await;
    let renewed_refresh = renewed["refresh_token"].as_str().unwrap().to_owned();
    vec![
        secret,
        user_password.to_owned(),
        access,
        refresh,
        renewed_refresh,
    ]
}

/// A stand-in OTLP/HTTP collector: answers 200 to everything and reports
/// each request line with its content type.
async fn fake_collector() -> (u16, tokio::sync::mpsc::UnboundedReceiver<(String, Vec<u8>)>) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut received = Vec::new();
                let mut buffer = [0u8; 8192];
                loop {
                    let Ok(n) = stream.read(&mut buffer).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    received.extend_from_slice(&buffer[..n]);
                    let text = String::from_utf8_lossy(&received).to_string();
                    let Some(end) = text.find("\r\n\r\n") else {
                        continue;
                    };
                    let head = &text[..end];
                    let length: usize = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse().unwrap_or(0))
                        })
                        .unwrap_or(0);
                    if received.len() < end + 4 + length {
                        continue;
                    }
                    let line = head.lines().next().unwrap_or_default().to_owned();
                    let kind = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-type:")
                                .map(|v| v.trim().to_owned())
                        })
                        .unwrap_or_default();
                    let body = received[end + 4..end + 4 + length].to_vec();
                    let _ = tx.send((format!("{line} {kind}"), body));
                    let _ = stream
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                        .await;
                    received.clear();
                }
            });
        }
    });
    (port, rx)
}

#[tokio::test]
async fn traces_are_exported_over_otlp_http_when_an_endpoint_is_configured() {
    let (collector, mut received) = fake_collector().await;
    let database = create_database().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("keysilo.toml");
    write(&config, &TestConfig::new(&database).toml, 0o600);
    let port = free_port();
    let password = db_password();
    let endpoint = format!("http://127.0.0.1:{collector}/v1/traces");
    let mut child = identity(
        &["--config", config.to_str().unwrap(), "serve"],
        &[
            ("KEYSILO_SECRET_ADMIN_API_KEY", ADMIN_KEY),
            ("KEYSILO_SECRET_MASTER_KEY_V1", MASTER_KEY_V1),
            ("KEYSILO_SECRET_CLIENT_SECRET_PEPPER", PEPPER),
            ("KEYSILO_SECRET_DATABASE_PASSWORD", &password),
            ("KEYSILO_SERVER__PORT", &port.to_string()),
            ("KEYSILO_TELEMETRY__OTLP_ENDPOINT", &endpoint),
            ("OTEL_BSP_SCHEDULE_DELAY", "200"),
        ],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    let client = reqwest::Client::new();
    for _ in 0..100 {
        if client
            .get(format!("http://127.0.0.1:{port}/healthz"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let export = tokio::time::timeout(Duration::from_secs(10), received.recv()).await;
    let _ = child.kill();
    let _ = child.wait();

    let (export, body) = export.expect("no OTLP export within 10 s").unwrap();
    assert!(export.starts_with("POST /v1/traces"), "{export}");
    assert!(export.ends_with("application/x-protobuf"), "{export}");
    // The body is a real OTLP request: spans of this service.
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    use prost::Message as _;
    let request = ExportTraceServiceRequest::decode(body.as_slice()).unwrap();
    let services: Vec<String> = request
        .resource_spans
        .iter()
        .flat_map(|r| r.resource.iter().flat_map(|r| &r.attributes))
        .filter(|a| a.key == "service.name")
        .filter_map(|a| match a.value.as_ref()?.value.as_ref()? {
            Value::StringValue(name) => Some(name.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(services, ["keysilo-identity"], "{request:?}");
    let spans: Vec<&str> = request
        .resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .flat_map(|s| &s.spans)
        .map(|s| s.name.as_str())
        .collect();
    assert!(!spans.is_empty(), "{request:?}");
    println!("exported spans: {spans:?}");
}
