use crate::helpers::spawn_app;

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
