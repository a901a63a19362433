//! Property-based testing of both services against their own
//! `/openapi.json` with Schemathesis (pinned in `clients/requirements.txt`):
//! generated and mutated requests, bounded per operation, must never get a
//! 5xx, and every answer must be one the document declares (status, content
//! type, headers and body schema).

use std::path::Path;
use std::process::Command;

use serde_json::json;

use crate::helpers::{
    ADMIN_KEY, TestConfig, create_database, redis_port, spawn_app_with, start_edge,
};

/// The checks that make up "no 5xx and nothing the document does not
/// declare".
const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,\
                      response_headers_conformance,response_schema_conformance";

/// Test cases per operation and phase; CI's bound.
const EXAMPLES: &str = "25";

/// Runs Schemathesis on `schema`; `args` add authentication and filters.
async fn schemathesis(config: &Path, schema: &str, args: &[&str]) {
    let mut command = Command::new("schemathesis");
    command
        .arg("--config-file")
        .arg(config)
        .args(["run", schema, "--checks", CHECKS, "-n", EXAMPLES])
        .args(["--workers", "2", "--request-timeout", "10"])
        // The examples phase trips over a Hypothesis bug on this Python
        // (an AST recursion error while describing a lambda).
        .args(["--phases", "coverage,fuzzing,stateful"])
        .args(args)
        .env("SCHEMATHESIS_TELEMETRY", "false")
        .env("NO_COLOR", "1");
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .expect("schemathesis (installed by scripts/test from integration-tests/clients/requirements.txt)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "schemathesis found problems with {schema}:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let summary = stdout
        .lines()
        .skip_while(|l| !l.contains("Test cases:"))
        .nth(1)
        .unwrap_or_default();
    println!("{schema}: {}", summary.trim());
}

#[tokio::test]
async fn both_services_answer_generated_requests_as_their_openapi_documents_say() {
    let database = create_database().await;
    let config = TestConfig::new(&database).with_edge_key();
    let app = spawn_app_with(config, database).await;
    app.create_tenant("acme").await;
    let (id, secret) = app
        .create_client(
            "acme",
            json!({
                "name": "everything", "grant_types": ["client_credentials", "password", "refresh_token"],
                "scopes": ["read"], "audience": ["data-plane"]
            }),
        )
        .await;
    app.create_user("acme", "alice", "correct horse battery", &[])
        .await;
    let token: serde_json::Value = app
        .token(
            "acme",
            (&id, &secret),
            &[("grant_type", "client_credentials")],
        )
        .await
        .json()
        .await
        .unwrap();
    let token = token["access_token"].as_str().unwrap().to_owned();

    // Path parameters named `tenant` get the tenant that exists (generated
    // ones too, so both found and not-found answers are exercised).
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("schemathesis.toml");
    std::fs::write(&config, "[parameters]\n\"path.tenant\" = \"acme\"\n").unwrap();
    let identity = format!("{}/openapi.json", app.address);

    // The OAuth2 endpoints as the registered client, the edge with a valid
    // token, then everything else as the platform admin (which ends by
    // disabling the tenant, so it goes last).
    let basic = format!("{id}:{secret}");
    schemathesis(
        &config,
        &identity,
        &["--include-tag", "oauth2", "-a", &basic],
    )
    .await;
    let edge = format!("http://{}", start_edge(&app, redis_port(), "").await);
    let bearer = format!("Authorization: Bearer {token}");
    schemathesis(&config, &format!("{edge}/openapi.json"), &["-H", &bearer]).await;
    let bearer = format!("Authorization: Bearer {ADMIN_KEY}");
    schemathesis(
        &config,
        &identity,
        &["--exclude-tag", "oauth2", "-H", &bearer],
    )
    .await;
}
