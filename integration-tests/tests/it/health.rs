use crate::helpers::{TestApp, TestConfig, create_database, spawn_app, spawn_app_with};

#[tokio::test]
async fn healthz_answers_ok() {
    let app = spawn_app().await;

    let response = app.get("/healthz").await;

    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["status"], "ok");
}

#[tokio::test]
async fn readyz_is_200_when_postgres_and_redis_answer() {
    let app = spawn_app().await;

    let response = app.get("/readyz").await;

    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["checks"]["postgres"], "up");
    assert_eq!(body["checks"]["redis"], "up");
}

#[tokio::test]
async fn metrics_are_prometheus_text_counting_requests_by_route() {
    let app = spawn_app().await;
    app.get("/healthz").await;

    let response = app.get("/metrics").await;

    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let body = response.text().await.unwrap();
    assert!(
        body.lines()
            .any(|l| l.starts_with("keysilo_http_requests_total{")
                && l.contains(r#"route="/healthz""#)
                && l.contains(r#"status="200""#)),
        "{body}"
    );
}

#[tokio::test]
async fn an_unknown_path_is_a_json_404() {
    let app = spawn_app().await;

    let response = app.get("/no/such/thing").await;

    assert_eq!(response.status(), 404);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"], "not_found");
}

#[tokio::test]
async fn migrations_create_the_schema_owned_by_the_application_role() {
    let app = spawn_app().await;

    let config = format!(
        "host=127.0.0.1 port={} user=keysilo password={} dbname={}",
        crate::helpers::pg_port(),
        crate::helpers::db_password(),
        app.database
    );
    let (client, connection) = tokio_postgres::connect(&config, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let rows = client
        .query(
            "SELECT tablename, tableowner FROM pg_tables WHERE schemaname = 'public' ORDER BY 1",
            &[],
        )
        .await
        .unwrap();
    let tables: Vec<(String, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();

    for table in ["tenants", "signing_keys", "audit_events", "lock_fences"] {
        assert!(
            tables
                .iter()
                .any(|(name, owner)| name == table && owner == "keysilo"),
            "{table} missing or not owned by keysilo: {tables:?}"
        );
    }
    let superuser: bool = client
        .query_one(
            "SELECT rolsuper FROM pg_roles WHERE rolname = current_user",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(!superuser, "the service must not need a superuser");
}

/// The value of the series whose line starts with `series`.
pub(crate) async fn metric(app: &TestApp, series: &str) -> Option<f64> {
    let body = app.get("/metrics").await.text().await.unwrap();
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test]
async fn the_metrics_operators_alert_on_are_exported() {
    let database = create_database().await;
    let config = TestConfig::new(&database)
        .set("KEYSILO_LIMITS__TOKEN_PER_CLIENT_PER_SECOND", "1")
        .set("KEYSILO_LIMITS__TOKEN_BURST", "1");
    let app = spawn_app_with(config, database).await;
    app.create_tenant("acme").await;
    // Present from the start, so an alert on `increase()` sees the first one.
    let failed = r#"keysilo_key_rotations_total{result="failed",trigger="scheduled"}"#;
    assert_eq!(metric(&app, failed).await, Some(0.0));
    assert_eq!(
        metric(&app, "keysilo_master_key_current_version").await,
        Some(1.0)
    );
    let age = metric(&app, "keysilo_master_key_age_seconds")
        .await
        .unwrap();
    assert!((0.0..60.0).contains(&age), "{age}");

    let (id, secret) = app
        .create_client(
            "acme",
            serde_json::json!({ "name": "m", "grant_types": ["client_credentials", "password"] }),
        )
        .await;
    app.create_user("acme", "alice", "correct horse battery", &[])
        .await;
    let wrong = app
        .token(
            "acme",
            (&id, "wrong"),
            &[("grant_type", "client_credentials")],
        )
        .await;
    assert_eq!(wrong.status(), 401);
    let client = r#"keysilo_auth_failures_total{reason="invalid_client",tenant="acme"}"#;
    assert_eq!(metric(&app, client).await, Some(1.0));

    let form = [
        ("grant_type", "password"),
        ("username", "alice"),
        ("password", "wrong password"),
    ];
    assert_eq!(app.token("acme", (&id, &secret), &form).await.status(), 400);
    let grant = r#"keysilo_auth_failures_total{reason="invalid_grant",tenant="acme"}"#;
    assert_eq!(metric(&app, grant).await, Some(1.0));

    // One a second allowed: the next ones in the same second are refused.
    let mut limited = 0;
    for _ in 0..3 {
        let response = app
            .token(
                "acme",
                (&id, &secret),
                &[("grant_type", "client_credentials")],
            )
            .await;
        limited += usize::from(response.status() == 429);
    }
    assert!(limited > 0);
    // Counted by the limit that refused: mostly the client's, though with a
    // burst of 1 a loaded machine can also trip the per-address limit.
    let mut counted = 0.0;
    for limit in ["client", "address", "password"] {
        let series = format!("keysilo_rate_limited_total{{limit=\"{limit}\"}}");
        counted += metric(&app, &series).await.unwrap();
    }
    assert_eq!(counted, limited as f64);

    app.rotate("acme").await;
    let manual = r#"keysilo_key_rotations_total{result="ok",trigger="manual"}"#;
    assert_eq!(metric(&app, manual).await, Some(1.0));
}
