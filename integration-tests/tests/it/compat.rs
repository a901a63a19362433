//! Off-the-shelf clients in other languages against the real service:
//! panva's openid-client and oauth4webapi (Node) and authlib (Python), as
//! strict external suites use them. `scripts/test` installs them from
//! `integration-tests/clients/{package-lock.json,requirements.txt}`.

use std::process::Command;

use serde_json::json;

use crate::helpers::{TestConfig, create_database, free_port, spawn_app_with, workspace_root};

const PASSWORD: &str = "correct horse battery staple";

#[tokio::test]
async fn openid_client_oauth4webapi_and_authlib_use_the_server_as_they_are() {
    let clients = workspace_root().join("integration-tests/clients");
    assert!(
        clients.join("node_modules/openid-client").exists(),
        "run scripts/test, which installs the client libraries (npm ci, pip install)"
    );
    // Discovery needs the issuer to be where the service really listens.
    let port = free_port();
    let database = create_database().await;
    let config = TestConfig::new(&database)
        .set("KEYSILO_SERVER__PORT", port.to_string())
        .set(
            "KEYSILO_SERVER__PUBLIC_BASE_URL",
            format!("http://127.0.0.1:{port}"),
        );
    let app = spawn_app_with(config, database).await;
    let tenant = app.create_tenant("compat").await;
    let machine = app
        .create_client(
            "compat",
            json!({ "name": "m2m", "grant_types": ["client_credentials"], "scopes": ["read", "write"], "audience": ["compat-api"] }),
        )
        .await;
    let dashboard = app
        .create_client(
            "compat",
            json!({ "name": "dashboard", "grant_types": ["password", "refresh_token"], "scopes": ["read"] }),
        )
        .await;
    app.create_user("compat", "alice", PASSWORD, &[]).await;
    // Secure mode: a backend and a browser's public client.
    let backend = app
        .create_client(
            "compat",
            json!({ "name": "backend", "grant_types": ["auth_token"], "scopes": ["read"], "audience": ["compat-api"] }),
        )
        .await;
    let public = app
        .admin_post(
            "/tenants/compat/clients",
            json!({
                "name": "spa", "token_endpoint_auth_method": "none",
                "grant_types": ["urn:ietf:params:oauth:grant-type:token-exchange"],
                "scopes": ["read"], "audience": ["compat-api"],
                "allowed_origins": ["https://app.compat.test"],
            }),
        )
        .await;
    assert_eq!(public.status(), 201);
    let public: serde_json::Value = public.json().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tenant.json");
    std::fs::write(
        &file,
        json!({
            "issuer": tenant["issuer"],
            "audience": "compat-api",
            "machine_client_id": machine.0,
            "machine_client_secret": machine.1,
            "dashboard_client_id": dashboard.0,
            "dashboard_client_secret": dashboard.1,
            "username": "alice",
            "password": PASSWORD,
            "backend_client_id": backend.0,
            "backend_client_secret": backend.1,
            "public_client_id": public["client_id"],
            "public_origin": "https://app.compat.test",
        })
        .to_string(),
    )
    .unwrap();

    for (program, script) in [
        ("node", "openid_client.mjs"),
        ("python3", "authlib_client.py"),
    ] {
        let file = file.clone();
        let clients = clients.clone();
        let output = tokio::task::spawn_blocking(move || {
            Command::new(program)
                .arg(clients.join(script))
                .arg(&file)
                .current_dir(&clients)
                .output()
                .unwrap()
        })
        .await
        .unwrap();
        assert!(
            output.status.success(),
            "{script} failed:\n{}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}
