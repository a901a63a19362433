//! Tenants through the admin API, and the public documents they publish.

use reqwest::Method;
use serde_json::json;

use crate::helpers::spawn_app;

#[tokio::test]
async fn a_new_tenant_has_its_issuer_and_one_active_key_in_its_jwks() {
    let app = spawn_app().await;

    let tenant = app.create_tenant("acme").await;

    let issuer = format!("{}/acme", app.state.settings.server.public_base_url);
    assert_eq!(tenant["issuer"], issuer);
    assert_eq!(tenant["jwks_uri"], format!("{issuer}/.well-known/jwks"));
    assert_eq!(tenant["token_ttl_seconds"], 900);
    let keys = app.keys("acme").await;
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0]["status"], "active");
    assert_eq!(keys[0]["master_key_version"], 1);

    let response = app.get("/acme/.well-known/jwks").await;
    assert_eq!(response.status(), 200);
    let cache_control = response.headers()["cache-control"]
        .to_str()
        .unwrap()
        .to_owned();
    let max_age: u64 = cache_control
        .strip_prefix("public, max-age=")
        .unwrap()
        .parse()
        .unwrap();
    assert!(max_age <= 300);
    let etag = response.headers()["etag"].to_str().unwrap().to_owned();
    let jwks: serde_json::Value = response.json().await.unwrap();
    let jwk = &jwks["keys"][0];
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 1);
    assert_eq!(jwk["kid"], keys[0]["kid"]);
    assert_eq!(jwk["kty"], "RSA");
    assert_eq!(jwk["use"], "sig");
    assert_eq!(jwk["alg"], "RS256");
    assert_eq!(jwk["e"], "AQAB");
    assert!(
        jwk.get("d").is_none(),
        "private members must never be published"
    );

    let alias: serde_json::Value = app
        .get("/acme/.well-known/jwks.json")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(alias, jwks);
    let revalidated = app
        .client
        .get(format!("{}/acme/.well-known/jwks", app.address))
        .header("If-None-Match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(revalidated.status(), 304);
    let weak = app
        .client
        .get(format!("{}/acme/.well-known/jwks", app.address))
        .header("If-None-Match", format!("\"other\", W/{etag}"))
        .send()
        .await
        .unwrap();
    assert_eq!(weak.status(), 304);
}

#[tokio::test]
async fn metadata_is_served_at_every_well_known_path_with_the_exact_issuer() {
    let app = spawn_app().await;
    app.create_tenant("acme").await;

    let mut documents = Vec::new();
    for path in [
        "/.well-known/oauth-authorization-server/acme",
        "/acme/.well-known/oauth-authorization-server",
        "/acme/.well-known/openid-configuration",
    ] {
        let response = app.get(path).await;
        assert_eq!(response.status(), 200, "{path}");
        documents.push(response.json::<serde_json::Value>().await.unwrap());
    }

    assert!(documents.iter().all(|d| d == &documents[0]));
    let metadata = &documents[0];
    let issuer = format!("{}/acme", app.state.settings.server.public_base_url);
    assert_eq!(metadata["issuer"], issuer);
    assert_eq!(metadata["jwks_uri"], format!("{issuer}/.well-known/jwks"));
    assert_eq!(metadata["token_endpoint"], format!("{issuer}/oauth2/token"));
    assert_eq!(metadata["response_types_supported"], json!([]));
    assert!(metadata.get("authorization_endpoint").is_none());
    assert!(
        metadata
            .get("id_token_signing_alg_values_supported")
            .is_none()
    );
    assert!(metadata.get("userinfo_endpoint").is_none());
}

#[tokio::test]
async fn a_disabled_tenant_disappears_from_public_routes_but_not_from_the_admin_api() {
    let app = spawn_app().await;
    app.create_tenant("acme").await;
    app.get("/acme/.well-known/jwks").await; // warm this replica's cache

    let response = app
        .admin(Method::DELETE, "/tenants/acme")
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), 204);
    assert_eq!(app.get("/acme/.well-known/jwks").await.status(), 404);
    assert_eq!(
        app.get("/acme/.well-known/openid-configuration")
            .await
            .status(),
        404
    );
    let tenant: serde_json::Value = app.admin_get("/tenants/acme").await.json().await.unwrap();
    assert_eq!(tenant["disabled"], true);
    let again = app
        .admin(Method::DELETE, "/tenants/acme")
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 204);
    let types = app.audit_types("acme").await;
    assert_eq!(
        types,
        ["tenant.disabled", "tenant.created"],
        "newest first, once each"
    );
}

#[tokio::test]
async fn tenant_ids_are_never_reused_even_after_disabling() {
    let app = spawn_app().await;
    app.create_tenant("acme").await;
    let body = json!({ "id": "acme", "display_name": "Again" });

    assert_eq!(app.admin_post("/tenants", body.clone()).await.status(), 409);
    let disabled = app
        .admin(Method::DELETE, "/tenants/acme")
        .send()
        .await
        .unwrap();
    assert_eq!(disabled.status(), 204);
    assert_eq!(app.admin_post("/tenants", body).await.status(), 409);
}

#[tokio::test]
async fn bad_tenant_requests_get_4xx_and_change_nothing() {
    let app = spawn_app().await;
    let cases = [
        (json!({ "id": "admin", "display_name": "x" }), 400),
        (json!({ "id": "healthz", "display_name": "x" }), 400),
        (json!({ "id": "Bad_Id", "display_name": "x" }), 400),
        (json!({ "id": "a", "display_name": "x" }), 400),
        (json!({ "id": "ok-id", "display_name": "" }), 400),
        (
            json!({ "id": "ok-id", "display_name": "x", "token_ttl_seconds": 4 }),
            400,
        ),
        (
            json!({ "id": "ok-id", "display_name": "x", "token_ttl_seconds": 86401 }),
            400,
        ),
        (
            json!({ "id": "ok-id", "display_name": "x", "extra": 1 }),
            400,
        ),
        (json!({ "id": 5, "display_name": "x" }), 400),
        (json!({ "display_name": "x" }), 400),
    ];
    for (body, status) in cases {
        let response = app.admin_post("/tenants", body.clone()).await;
        assert_eq!(response.status(), status, "{body}");
        let error: serde_json::Value = response.json().await.unwrap();
        assert!(error["error"].is_string(), "{body}: {error}");
    }
    let typed = app
        .admin_post(
            "/tenants",
            json!({ "id": "ok-id", "display_name": 918273645 }),
        )
        .await;
    assert_eq!(typed.status(), 400);
    let body = typed.text().await.unwrap();
    assert!(!body.contains("918273645"), "the value was echoed: {body}");
    let huge = json!({ "id": "ok-id", "display_name": "x".repeat(100_000) });
    assert_eq!(app.admin_post("/tenants", huge).await.status(), 413);
    let not_json = app
        .admin(Method::POST, "/tenants")
        .header("content-type", "text/plain")
        .body("id=ok-id")
        .send()
        .await
        .unwrap();
    assert_eq!(not_json.status(), 400);

    assert_eq!(app.admin_get("/tenants/ok-id").await.status(), 404);
    assert_eq!(app.admin_get("/tenants/NOT%20AN%20ID").await.status(), 404);
    assert_eq!(
        app.get("/no-such-tenant/.well-known/jwks").await.status(),
        404
    );
    assert_eq!(app.get("/Bad_Id/.well-known/jwks").await.status(), 404);
}

#[tokio::test]
async fn the_admin_api_needs_the_platform_key() {
    let app = spawn_app().await;
    let url = format!("{}/admin/v1/tenants/acme", app.address);

    let missing = app.client.get(&url).send().await.unwrap();
    assert_eq!(missing.status(), 401);
    assert_eq!(missing.headers()["www-authenticate"], "Bearer");

    let wrong = app
        .client
        .get(&url)
        .bearer_auth("nope")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    assert_eq!(
        wrong.headers()["www-authenticate"],
        r#"Bearer error="invalid_token""#
    );

    let create = app
        .client
        .post(format!("{}/admin/v1/tenants", app.address))
        .json(&json!({ "id": "acme", "display_name": "x" }))
        .send()
        .await
        .unwrap();
    assert_eq!(create.status(), 401);
    assert_eq!(app.admin_get("/tenants/acme").await.status(), 404);
}
