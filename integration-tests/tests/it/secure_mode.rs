//! Secure mode (contract "Secure mode"): a tenant's backend mints
//! single-use auth tokens, browsers redeem them as public clients with the
//! RFC 8693 token exchange; CORS for public clients' origins; the
//! lost-refresh grace; subject revocation reaching introspection and live
//! sessions.

use std::time::Duration;

use futures_util::StreamExt as _;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

use crate::helpers::{
    TestApp, TestConfig, closed_with, create_database, redis_port, spawn_app_with, start_edge,
};

const EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const AUTH_TOKEN: &str = "urn:keysilo:params:oauth:token-type:auth-token";
const ORIGIN: &str = "https://app.acme.test";
const PASSWORD: &str = "correct horse battery staple";

/// A tenant `acme` with a backend (`auth_token`), a browser public client
/// (token exchange and refresh), and a second public client.
struct World {
    identity: TestApp,
    backend: (String, String),
    browser: String,
    other_browser: String,
}

async fn world_with(tenant: Value) -> World {
    let database = create_database().await;
    let config = TestConfig::new(&database).with_edge_key();
    let identity = spawn_app_with(config, database).await;
    let created = identity.admin_post("/tenants", tenant).await;
    assert_eq!(created.status(), 201, "{}", created.text().await.unwrap());
    let backend = identity
        .create_client(
            "acme",
            json!({ "name": "backend", "grant_types": ["auth_token"], "scopes": ["read", "write", "billing"], "audience": ["data-plane"] }),
        )
        .await;
    let browser = public_client(&identity, "acme", &[EXCHANGE, "refresh_token"], ORIGIN).await;
    let other_browser =
        public_client(&identity, "acme", &[EXCHANGE], "https://other.acme.test").await;
    World {
        identity,
        backend,
        browser,
        other_browser,
    }
}

async fn world() -> World {
    world_with(json!({ "id": "acme", "display_name": "Acme" })).await
}

/// Registers a public client of `tenant`; returns its id.
async fn public_client(identity: &TestApp, tenant: &str, grants: &[&str], origin: &str) -> String {
    let response = identity
        .admin_post(
            &format!("/tenants/{tenant}/clients"),
            json!({
                "name": "spa", "token_endpoint_auth_method": "none", "grant_types": grants,
                "scopes": ["read", "write"], "audience": ["data-plane"], "allowed_origins": [origin],
            }),
        )
        .await;
    assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
    let body: Value = response.json().await.unwrap();
    assert!(body.get("client_secret").is_none(), "{body}");
    assert_eq!(body["token_endpoint_auth_method"], "none");
    body["client_id"].as_str().unwrap().to_owned()
}

impl World {
    /// The backend's `/auth-token` answer.
    async fn mint(&self, form: &[(&str, &str)]) -> reqwest::Response {
        self.identity
            .oauth_basic(
                "acme",
                "auth-token",
                (&self.backend.0, &self.backend.1),
                form,
            )
            .await
    }

    /// An auth token for `subject` and the browser client.
    async fn auth_token(&self, subject: &str) -> String {
        let response = self
            .mint(&[("subject", subject), ("public_client_id", &self.browser)])
            .await;
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.unwrap();
        body["auth_token"].as_str().unwrap().to_owned()
    }

    /// A token request of a public client (its id in the body, no secret).
    async fn public(
        &self,
        tenant: &str,
        endpoint: &str,
        form: &[(&str, &str)],
    ) -> reqwest::Response {
        self.identity
            .client
            .post(format!(
                "{}/{tenant}/oauth2/{endpoint}",
                self.identity.address
            ))
            .form(form)
            .send()
            .await
            .unwrap()
    }

    async fn redeem(&self, client: &str, auth_token: &str) -> reqwest::Response {
        self.public(
            "acme",
            "token",
            &[
                ("grant_type", EXCHANGE),
                ("client_id", client),
                ("subject_token", auth_token),
                ("subject_token_type", AUTH_TOKEN),
            ],
        )
        .await
    }

    async fn refresh(&self, refresh_token: &str) -> reqwest::Response {
        self.public(
            "acme",
            "token",
            &[
                ("grant_type", "refresh_token"),
                ("client_id", &self.browser),
                ("refresh_token", refresh_token),
            ],
        )
        .await
    }

    async fn introspect(&self, token: &str) -> Value {
        let response = self
            .identity
            .oauth_basic(
                "acme",
                "introspect",
                (&self.backend.0, &self.backend.1),
                &[("token", token)],
            )
            .await;
        assert_eq!(response.status(), 200);
        response.json().await.unwrap()
    }
}

async fn error_of(response: reqwest::Response) -> (u16, String) {
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap();
    (
        status,
        body["error"].as_str().unwrap_or_default().to_owned(),
    )
}

/// The claims of a JWT, unverified (the edge and the compat clients verify).
fn claims(token: &str) -> Value {
    use base64::Engine as _;
    let payload = token.split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

#[tokio::test]
async fn a_backend_mints_and_a_browser_redeems_once_for_a_token_the_edge_admits_from_its_origin() {
    let w = world().await;
    let minted = w
        .mint(&[
            ("subject", "user-42"),
            ("public_client_id", &w.browser),
            ("scope", "read"),
        ])
        .await;
    assert_eq!(minted.status(), 200);
    assert_eq!(minted.headers()["cache-control"], "no-store");
    let minted: Value = minted.json().await.unwrap();
    assert_eq!(minted["expires_in"], 60);
    let auth_token = minted["auth_token"].as_str().unwrap().to_owned();
    // ≥ 256 bits, base64url.
    assert!(auth_token.len() >= 43, "{auth_token}");

    let response = w.redeem(&w.browser, &auth_token).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body["issued_token_type"],
        "urn:ietf:params:oauth:token-type:access_token"
    );
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 900);
    assert_eq!(body["scope"], "read");
    assert!(body["refresh_token"].is_string(), "{body}");
    let access = body["access_token"].as_str().unwrap().to_owned();
    let c = claims(&access);
    assert_eq!(c["sub"], "user-42");
    assert_eq!(c["client_id"], w.browser.as_str());
    assert_eq!(c["allowed_origins"], json!([ORIGIN]));
    assert_eq!(c["scope"], "read");
    assert_eq!(c["act"], json!({ "sub": w.backend.0 }));
    assert_eq!(c["tid"], "acme");
    assert_eq!(c["aud"], "data-plane");

    // Once only.
    assert_eq!(
        error_of(w.redeem(&w.browser, &auth_token).await).await,
        (400, "invalid_grant".into())
    );

    // Introspection sees the subject and the actor.
    let state = w.introspect(&access).await;
    assert_eq!(state["active"], true);
    assert_eq!(state["sub"], "user-42");
    assert_eq!(state["act"]["sub"], w.backend.0.as_str());

    // The refresh token continues the sign-in with the same claims.
    let refreshed = w.refresh(body["refresh_token"].as_str().unwrap()).await;
    assert_eq!(refreshed.status(), 200);
    let refreshed: Value = refreshed.json().await.unwrap();
    let again = claims(refreshed["access_token"].as_str().unwrap());
    assert_eq!(again["sub"], "user-42");
    assert_eq!(again["act"], json!({ "sub": w.backend.0 }));

    // Audited with client and subject, never the token.
    let audit = w.identity.audit("acme").await;
    let event = audit
        .iter()
        .find(|e| e["type"] == "auth_token.minted")
        .expect("auth_token.minted audited");
    assert_eq!(event["details"]["client_id"], w.backend.0.as_str());
    assert_eq!(event["details"]["subject"], "user-42");
    assert!(!serde_json::to_string(&audit).unwrap().contains(&auth_token));
    let metrics = w.identity.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains(r#"keysilo_auth_tokens_total{outcome="minted",tenant="acme"} 1"#),
        "{metrics}"
    );

    // The edge admits it from the registered origin only.
    let edge = start_edge(&w.identity, redis_port(), "").await;
    let auth = |origin: &'static str| {
        reqwest::Client::new()
            .get(format!("http://{edge}/auth"))
            .bearer_auth(&access)
            .header("origin", origin)
            .send()
    };
    assert_eq!(auth(ORIGIN).await.unwrap().status(), 200);
    assert_eq!(auth("https://evil.test").await.unwrap().status(), 403);
}

#[tokio::test]
async fn every_wrong_redemption_is_the_contracts_error_and_one_of_twenty_concurrent_wins() {
    let w = world().await;
    // Another public client.
    let token = w.auth_token("u1").await;
    assert_eq!(
        error_of(w.redeem(&w.other_browser, &token).await).await,
        (400, "invalid_grant".into())
    );
    // ... which did not spend it.
    assert_eq!(w.redeem(&w.browser, &token).await.status(), 200);

    // Expired.
    let token = w.auth_token("u1").await;
    w.identity
        .sql()
        .await
        .execute(
            "UPDATE auth_tokens SET expires_at = now() - interval '1 second'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        error_of(w.redeem(&w.browser, &token).await).await,
        (400, "invalid_grant".into())
    );

    // Another tenant's: the same client id does not exist there, and an
    // auth token of `acme` is unknown to `beta`'s public client.
    w.identity.create_tenant("beta").await;
    let beta_browser = public_client(&w.identity, "beta", &[EXCHANGE], ORIGIN).await;
    let token = w.auth_token("u1").await;
    let foreign = w
        .public(
            "beta",
            "token",
            &[
                ("grant_type", EXCHANGE),
                ("client_id", &beta_browser),
                ("subject_token", &token),
                ("subject_token_type", AUTH_TOKEN),
            ],
        )
        .await;
    assert_eq!(error_of(foreign).await, (400, "invalid_grant".into()));

    // Wrong or missing token type, missing token.
    let form = |kind: &'static str| {
        vec![
            ("grant_type", EXCHANGE.to_owned()),
            ("client_id", w.browser.clone()),
            ("subject_token", token.clone()),
            ("subject_token_type", kind.to_owned()),
        ]
    };
    for kind in ["urn:ietf:params:oauth:token-type:access_token", "x"] {
        let pairs = form(kind);
        let pairs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
        assert_eq!(
            error_of(w.public("acme", "token", &pairs).await).await,
            (400, "invalid_request".into())
        );
    }
    let missing = w
        .public(
            "acme",
            "token",
            &[("grant_type", EXCHANGE), ("client_id", &w.browser)],
        )
        .await;
    assert_eq!(error_of(missing).await, (400, "invalid_request".into()));
    // None of that spent it.
    assert_eq!(w.redeem(&w.browser, &token).await.status(), 200);
    // Garbage never is a 500.
    assert_eq!(
        error_of(w.redeem(&w.browser, &"x".repeat(5000)).await).await,
        (400, "invalid_grant".into())
    );

    // Twenty browsers race for one token: exactly one wins.
    let token = w.auth_token("u1").await;
    let attempts = (0..20).map(|_| w.redeem(&w.browser, &token));
    let statuses: Vec<u16> = futures_util::future::join_all(attempts)
        .await
        .into_iter()
        .map(|r| r.status().as_u16())
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 400).count(),
        19,
        "{statuses:?}"
    );
}

#[tokio::test]
async fn minting_and_registration_follow_the_rules_for_public_and_auth_token_clients() {
    let w = world().await;
    // A confidential client without `auth_token` cannot mint.
    let plain = w
        .identity
        .create_client(
            "acme",
            json!({ "name": "m2m", "grant_types": ["client_credentials"], "scopes": ["read"] }),
        )
        .await;
    let refused = w
        .identity
        .oauth_basic(
            "acme",
            "auth-token",
            (&plain.0, &plain.1),
            &[("subject", "u1"), ("public_client_id", &w.browser)],
        )
        .await;
    assert_eq!(error_of(refused).await, (400, "unauthorized_client".into()));
    // Wrong secret, bad subject, unknown or confidential public client,
    // a scope outside both clients.
    let wrong = w
        .identity
        .oauth_basic(
            "acme",
            "auth-token",
            (&w.backend.0, "nope"),
            &[("subject", "u1"), ("public_client_id", &w.browser)],
        )
        .await;
    assert_eq!(error_of(wrong).await, (401, "invalid_client".into()));
    let long = "x".repeat(256);
    for (subject, public, scope, expected) in [
        ("", w.browser.as_str(), "", "invalid_request"),
        (long.as_str(), w.browser.as_str(), "", "invalid_request"),
        ("a\u{7}b", w.browser.as_str(), "", "invalid_request"),
        ("u1", "unknown", "", "invalid_request"),
        ("u1", plain.0.as_str(), "", "invalid_request"),
        ("u1", w.browser.as_str(), "billing", "invalid_scope"),
        ("u1", w.browser.as_str(), "admin", "invalid_scope"),
    ] {
        let mut form = vec![("public_client_id", public)];
        if !subject.is_empty() {
            form.push(("subject", subject));
        }
        if !scope.is_empty() {
            form.push(("scope", scope));
        }
        assert_eq!(
            error_of(w.mint(&form).await).await,
            (400, expected.into()),
            "{subject:?} {public} {scope}"
        );
    }
    // A subject is counted in characters.
    let wide = "é".repeat(255);
    let minted = w
        .mint(&[("subject", &wide), ("public_client_id", &w.browser)])
        .await;
    assert_eq!(minted.status(), 200);
    // The default scope is what both clients hold.
    let token = w.auth_token("u1").await;
    let body: Value = w.redeem(&w.browser, &token).await.json().await.unwrap();
    assert_eq!(body["scope"], "read write");

    // Public clients: only browser grants, at least one origin, never
    // `admin`, never a secret or a certificate.
    for (body, why) in [
        (
            json!({ "grant_types": ["client_credentials"], "allowed_origins": [ORIGIN] }),
            "client_credentials",
        ),
        (
            json!({ "grant_types": ["password"], "allowed_origins": [ORIGIN] }),
            "password",
        ),
        (json!({ "grant_types": [EXCHANGE] }), "no origin"),
        (
            json!({ "grant_types": [EXCHANGE], "allowed_origins": [ORIGIN], "scopes": ["admin"] }),
            "admin",
        ),
        (
            json!({ "grant_types": [EXCHANGE], "allowed_origins": [ORIGIN], "tls_client_auth_san_dns": "a.test" }),
            "certificate",
        ),
    ] {
        let mut body = body;
        body["name"] = "spa".into();
        body["token_endpoint_auth_method"] = "none".into();
        let response = w.identity.admin_post("/tenants/acme/clients", body).await;
        assert_eq!(response.status(), 400, "{why}");
    }
    // Token exchange is for public clients only.
    let response = w
        .identity
        .admin_post(
            "/tenants/acme/clients",
            json!({ "name": "c", "grant_types": [EXCHANGE] }),
        )
        .await;
    assert_eq!(response.status(), 400);

    // Shown as public by GET, with no secret; a public client cannot
    // authenticate with a secret, by Basic, nor introspect.
    let shown: Value = w
        .identity
        .admin_get(&format!("/tenants/acme/clients/{}", w.browser))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(shown["token_endpoint_auth_method"], "none");
    assert!(shown.get("client_secret").is_none());
    assert_eq!(
        w.identity
            .admin_get("/tenants/acme/clients/nope")
            .await
            .status(),
        404
    );
    let with_secret = w
        .public(
            "acme",
            "token",
            &[
                ("grant_type", "refresh_token"),
                ("client_id", &w.browser),
                ("client_secret", "x"),
                ("refresh_token", "x"),
            ],
        )
        .await;
    assert_eq!(error_of(with_secret).await, (401, "invalid_client".into()));
    let basic = w
        .identity
        .token(
            "acme",
            (&w.browser, ""),
            &[("grant_type", "refresh_token"), ("refresh_token", "x")],
        )
        .await;
    assert_eq!(basic.status(), 401);
    let introspect = w
        .public(
            "acme",
            "introspect",
            &[("client_id", &w.browser), ("token", "x")],
        )
        .await;
    assert_eq!(introspect.status(), 400);

    // The metadata says so.
    let metadata: Value = w
        .identity
        .get("/acme/.well-known/oauth-authorization-server")
        .await
        .json()
        .await
        .unwrap();
    assert!(
        metadata["token_endpoint_auth_methods_supported"]
            .as_array()
            .unwrap()
            .contains(&json!("none"))
    );
    assert!(
        !metadata["introspection_endpoint_auth_methods_supported"]
            .as_array()
            .unwrap()
            .contains(&json!("none"))
    );
    assert!(
        metadata["grant_types_supported"]
            .as_array()
            .unwrap()
            .contains(&json!(EXCHANGE))
    );

    // Once its backend is disabled, a sign-in it vouched for ends: the
    // refresh token no longer works.
    let token = w.auth_token("u1").await;
    let body: Value = w.redeem(&w.browser, &token).await.json().await.unwrap();
    let refresh = body["refresh_token"].as_str().unwrap().to_owned();
    let disabled = w
        .identity
        .admin(
            reqwest::Method::DELETE,
            &format!("/tenants/acme/clients/{}", w.backend.0),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(disabled.status(), 204);
    assert_eq!(
        error_of(w.refresh(&refresh).await).await,
        (400, "invalid_grant".into())
    );
}

#[tokio::test]
async fn tenant_settings_are_set_at_creation_and_by_patch_within_their_ranges() {
    let w = world_with(json!({
        "id": "acme", "display_name": "Acme",
        "auth_token_ttl_seconds": 30, "refresh_reuse_grace_seconds": 5,
    }))
    .await;
    let tenant: Value = w
        .identity
        .admin_get("/tenants/acme")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(tenant["auth_token_ttl_seconds"], 30);
    assert_eq!(tenant["refresh_reuse_grace_seconds"], 5);
    assert_eq!(tenant["token_ttl_seconds"], 900);
    let minted: Value = w
        .mint(&[("subject", "u1"), ("public_client_id", &w.browser)])
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(minted["expires_in"], 30);

    let patch = |body: Value| {
        w.identity
            .admin(reqwest::Method::PATCH, "/tenants/acme")
            .header("content-type", "application/merge-patch+json")
            .body(body.to_string())
            .send()
    };
    let changed = patch(json!({ "auth_token_ttl_seconds": 600, "display_name": "Acme Inc" }))
        .await
        .unwrap();
    assert_eq!(changed.status(), 200);
    let changed: Value = changed.json().await.unwrap();
    assert_eq!(changed["auth_token_ttl_seconds"], 600);
    assert_eq!(changed["display_name"], "Acme Inc");
    assert_eq!(changed["refresh_reuse_grace_seconds"], 5);
    // Every replica reloads the tenant: the next auth token lives 600 s.
    let minted: Value = w
        .mint(&[("subject", "u1"), ("public_client_id", &w.browser)])
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(minted["expires_in"], 600);

    for bad in [
        json!({ "auth_token_ttl_seconds": 9 }),
        json!({ "auth_token_ttl_seconds": 601 }),
        json!({ "refresh_reuse_grace_seconds": -1 }),
        json!({ "refresh_reuse_grace_seconds": 61 }),
        json!({ "token_ttl_seconds": 4 }),
        json!({ "region": "eu" }),
        json!({}),
    ] {
        assert_eq!(patch(bad.clone()).await.unwrap().status(), 400, "{bad}");
    }
    let unchanged: Value = w
        .identity
        .admin_get("/tenants/acme")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(unchanged["auth_token_ttl_seconds"], 600);
    for bad in [
        json!({ "id": "x1", "display_name": "X", "auth_token_ttl_seconds": 601 }),
        json!({ "id": "x2", "display_name": "X", "refresh_reuse_grace_seconds": 61 }),
    ] {
        assert_eq!(w.identity.admin_post("/tenants", bad).await.status(), 400);
    }
    assert!(
        w.identity
            .audit_types("acme")
            .await
            .contains(&"tenant.updated".to_owned())
    );
}

#[tokio::test]
async fn cors_answers_only_the_origins_of_the_tenants_public_clients() {
    let w = world().await;
    let preflight = |path: &'static str, origin: &'static str| {
        w.identity
            .client
            .request(
                reqwest::Method::OPTIONS,
                format!("{}/acme/oauth2/{path}", w.identity.address),
            )
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "content-type")
            .send()
    };
    for path in ["token", "revoke"] {
        let allowed = preflight(path, ORIGIN).await.unwrap();
        assert!(allowed.status().is_success(), "{path}");
        let h = allowed.headers();
        assert_eq!(h["access-control-allow-origin"], ORIGIN);
        assert!(h["vary"].to_str().unwrap().contains("Origin"));
        assert!(
            h["access-control-allow-methods"]
                .to_str()
                .unwrap()
                .contains("POST")
        );
        assert!(
            h["access-control-allow-headers"]
                .to_str()
                .unwrap()
                .to_ascii_lowercase()
                .contains("content-type")
        );
        let refused = preflight(path, "https://evil.test").await.unwrap();
        assert!(
            refused
                .headers()
                .keys()
                .all(|name| !name.as_str().starts_with("access-control-allow")),
            "{path}: {:?}",
            refused.headers()
        );
    }
    // Never on /auth-token or the admin API.
    for path in ["auth-token"] {
        let response = preflight(path, ORIGIN).await.unwrap();
        assert!(
            response
                .headers()
                .keys()
                .all(|name| !name.as_str().starts_with("access-control-")),
            "{path}"
        );
    }
    let admin = w
        .identity
        .client
        .request(
            reqwest::Method::OPTIONS,
            format!("{}/admin/v1/tenants/acme", w.identity.address),
        )
        .header("origin", ORIGIN)
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert!(admin.headers().get("access-control-allow-origin").is_none());

    // The actual request: a browser redeeming, and its error answers too.
    let token = w.auth_token("u1").await;
    let redeem = |origin: &'static str, token: String| {
        let browser = w.browser.clone();
        w.identity
            .client
            .post(format!("{}/acme/oauth2/token", w.identity.address))
            .header("origin", origin)
            .form(&[
                ("grant_type", EXCHANGE.to_owned()),
                ("client_id", browser),
                ("subject_token", token),
                ("subject_token_type", AUTH_TOKEN.to_owned()),
            ])
            .send()
    };
    let ok = redeem(ORIGIN, token.clone()).await.unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.headers()["access-control-allow-origin"], ORIGIN);
    let again = redeem(ORIGIN, token.clone()).await.unwrap();
    assert_eq!(again.status(), 400);
    assert_eq!(again.headers()["access-control-allow-origin"], ORIGIN);
    let evil = redeem("https://evil.test", token).await.unwrap();
    assert!(evil.headers().get("access-control-allow-origin").is_none());
    // The backend's endpoint never answers a browser.
    let minted = w
        .identity
        .client
        .post(format!("{}/acme/oauth2/auth-token", w.identity.address))
        .basic_auth(&w.backend.0, Some(&w.backend.1))
        .header("origin", ORIGIN)
        .form(&[
            ("subject", "u1"),
            ("public_client_id", w.other_browser.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(minted.status(), 200);
    assert!(
        minted
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
}

#[tokio::test]
async fn a_lost_refresh_answer_is_answered_again_within_the_grace_only() {
    let w = world_with(
        json!({ "id": "acme", "display_name": "Acme", "refresh_reuse_grace_seconds": 30 }),
    )
    .await;
    let sign_in = || async {
        let token = w.auth_token("u1").await;
        let body: Value = w.redeem(&w.browser, &token).await.json().await.unwrap();
        body["refresh_token"].as_str().unwrap().to_owned()
    };
    let refresh_token = |response: Value| response["refresh_token"].as_str().unwrap().to_owned();

    // R1 → R2 (answer lost); R1 again → R3, and R2 stops working without
    // revoking the family.
    let r1 = sign_in().await;
    let first = w.refresh(&r1).await;
    assert_eq!(first.status(), 200);
    let r2 = refresh_token(first.json().await.unwrap());
    let replay = w.refresh(&r1).await;
    assert_eq!(replay.status(), 200);
    let r3 = refresh_token(replay.json().await.unwrap());
    assert_ne!(r2, r3);
    assert_eq!(
        error_of(w.refresh(&r2).await).await,
        (400, "invalid_grant".into())
    );
    assert_eq!(w.introspect(&r2).await["active"], false);
    assert_eq!(w.introspect(&r3).await["active"], true);
    let next = w.refresh(&r3).await;
    assert_eq!(next.status(), 200);
    let r4 = refresh_token(next.json().await.unwrap());
    // R1 is now two rotations old: reuse, the family dies.
    assert_eq!(
        error_of(w.refresh(&r1).await).await,
        (400, "invalid_grant".into())
    );
    assert_eq!(
        error_of(w.refresh(&r4).await).await,
        (400, "invalid_grant".into())
    );
    assert!(
        w.identity
            .audit_types("acme")
            .await
            .contains(&"refresh_token.reused".to_owned())
    );

    // Outside the grace: reuse revokes the family.
    let r1 = sign_in().await;
    let r2 = refresh_token(w.refresh(&r1).await.json().await.unwrap());
    w.identity
        .sql()
        .await
        .execute(
            "UPDATE refresh_tokens SET spent_at = spent_at - interval '31 seconds' WHERE spent_at IS NOT NULL",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        error_of(w.refresh(&r1).await).await,
        (400, "invalid_grant".into())
    );
    assert_eq!(
        error_of(w.refresh(&r2).await).await,
        (400, "invalid_grant".into())
    );

    // Two redemptions of one token at once inside the grace: both are
    // answered, and exactly one of the successors lives.
    let r1 = sign_in().await;
    let (a, b) = tokio::join!(w.refresh(&r1), w.refresh(&r1));
    assert_eq!((a.status().as_u16(), b.status().as_u16()), (200, 200));
    let (a, b) = (
        refresh_token(a.json().await.unwrap()),
        refresh_token(b.json().await.unwrap()),
    );
    let (a, b) = tokio::join!(w.refresh(&a), w.refresh(&b));
    let mut statuses = [a.status().as_u16(), b.status().as_u16()];
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 400]);
}

#[tokio::test]
async fn without_a_grace_presenting_a_spent_refresh_token_revokes_the_family() {
    let w = world().await;
    let token = w.auth_token("u1").await;
    let body: Value = w.redeem(&w.browser, &token).await.json().await.unwrap();
    let r1 = body["refresh_token"].as_str().unwrap().to_owned();
    let second: Value = w.refresh(&r1).await.json().await.unwrap();
    let r2 = second["refresh_token"].as_str().unwrap().to_owned();
    assert_eq!(
        error_of(w.refresh(&r1).await).await,
        (400, "invalid_grant".into())
    );
    assert_eq!(
        error_of(w.refresh(&r2).await).await,
        (400, "invalid_grant".into())
    );
}

#[tokio::test]
async fn revoking_a_subject_closes_its_sessions_and_refuses_its_earlier_tokens_only() {
    let w = world().await;
    let dashboard = w
        .identity
        .create_client(
            "acme",
            json!({ "name": "dash", "grant_types": ["password", "refresh_token"], "scopes": ["read"], "audience": ["data-plane"], "allowed_origins": [ORIGIN] }),
        )
        .await;
    let alice = w.identity.create_user("acme", "alice", PASSWORD, &[]).await;
    let edge = start_edge(&w.identity, redis_port(), "").await;
    let login = || async {
        let response = w
            .identity
            .token(
                "acme",
                (&dashboard.0, &dashboard.1),
                &[
                    ("grant_type", "password"),
                    ("username", "alice"),
                    ("password", PASSWORD),
                ],
            )
            .await;
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.unwrap();
        (
            body["access_token"].as_str().unwrap().to_owned(),
            body["refresh_token"].as_str().unwrap().to_owned(),
        )
    };
    let open = |token: String| {
        let edge = edge.clone();
        async move {
            let mut request = format!("ws://{edge}/ws").into_client_request().unwrap();
            let headers = request.headers_mut();
            headers.insert("authorization", format!("Bearer {token}").parse().unwrap());
            headers.insert("origin", ORIGIN.parse().unwrap());
            tokio_tungstenite::connect_async(request).await.unwrap().0
        }
    };
    let (user_token, user_refresh) = login().await;
    let secure = {
        let token = w.auth_token("user-42").await;
        let body: Value = w.redeem(&w.browser, &token).await.json().await.unwrap();
        body
    };
    let secure_token = secure["access_token"].as_str().unwrap().to_owned();
    let mut user_socket = open(user_token.clone()).await;
    let mut secure_socket = open(secure_token.clone()).await;
    // A bystander of another subject stays connected.
    let bystander_token = {
        let token = w.auth_token("user-7").await;
        let body: Value = w.redeem(&w.browser, &token).await.json().await.unwrap();
        body["access_token"].as_str().unwrap().to_owned()
    };
    let mut bystander = open(bystander_token.clone()).await;

    for subject in [alice.as_str(), "user-42"] {
        let response = w
            .identity
            .admin(
                reqwest::Method::POST,
                &format!("/tenants/acme/subjects/{subject}/revoke"),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 204);
    }
    for socket in [&mut user_socket, &mut secure_socket] {
        assert_eq!(
            closed_with(socket, Duration::from_secs(1)).await,
            Some(1008)
        );
    }
    assert!(
        tokio::time::timeout(Duration::from_millis(300), bystander.next())
            .await
            .is_err(),
        "the bystander's session must stay open"
    );
    assert_eq!(w.introspect(&user_token).await["active"], false);
    assert_eq!(w.introspect(&secure_token).await["active"], false);
    assert_eq!(w.introspect(&bystander_token).await["active"], true);
    // Its refresh families are revoked.
    let response = w
        .identity
        .token(
            "acme",
            (&dashboard.0, &dashboard.1),
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", &user_refresh),
            ],
        )
        .await;
    assert_eq!(error_of(response).await, (400, "invalid_grant".into()));
    assert_eq!(
        error_of(w.refresh(secure["refresh_token"].as_str().unwrap()).await).await,
        (400, "invalid_grant".into())
    );
    // A sign-in after the call is not caught by it, at the identity or
    // the edge.
    let (fresh, _) = login().await;
    assert_eq!(w.introspect(&fresh).await["active"], true);
    let auth = |token: String| {
        reqwest::Client::new()
            .get(format!("http://{edge}/auth"))
            .bearer_auth(token)
            .header("origin", ORIGIN)
            .send()
    };
    assert_eq!(auth(fresh.clone()).await.unwrap().status(), 200);
    assert_eq!(auth(user_token.clone()).await.unwrap().status(), 401);
    // An edge started later learns it from the snapshot.
    let late = start_edge(&w.identity, redis_port(), "").await;
    let late_auth = reqwest::Client::new()
        .get(format!("http://{late}/auth"))
        .bearer_auth(&secure_token)
        .header("origin", ORIGIN)
        .send()
        .await
        .unwrap();
    assert_eq!(late_auth.status(), 401);
    let audit = w.identity.audit("acme").await;
    let revoked: Vec<&Value> = audit
        .iter()
        .filter(|e| e["type"] == "subject.revoked")
        .collect();
    assert_eq!(revoked.len(), 2);
    assert_eq!(revoked[0]["details"]["subject"], "user-42");
}

#[tokio::test]
async fn revoking_a_refresh_family_revokes_its_access_tokens_and_closes_their_sessions() {
    let w = world().await;
    let edge = start_edge(&w.identity, redis_port(), "").await;
    let sign_in = || async {
        let token = w.auth_token("u1").await;
        let body: Value = w.redeem(&w.browser, &token).await.json().await.unwrap();
        body
    };
    let field = |body: &Value, name: &str| body[name].as_str().unwrap().to_owned();

    // Reuse detection: R1 presented after its rotation.
    let first = sign_in().await;
    let second: Value = w
        .refresh(&field(&first, "refresh_token"))
        .await
        .json()
        .await
        .unwrap();
    let mut request = format!("ws://{edge}/ws").into_client_request().unwrap();
    request.headers_mut().insert(
        "authorization",
        format!("Bearer {}", field(&second, "access_token"))
            .parse()
            .unwrap(),
    );
    request
        .headers_mut()
        .insert("origin", ORIGIN.parse().unwrap());
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    assert_eq!(
        error_of(w.refresh(&field(&first, "refresh_token")).await).await,
        (400, "invalid_grant".into())
    );
    for token in [
        field(&first, "access_token"),
        field(&second, "access_token"),
    ] {
        assert_eq!(w.introspect(&token).await["active"], false);
    }
    assert_eq!(
        closed_with(&mut socket, Duration::from_secs(1)).await,
        Some(1008)
    );

    // RFC 7009 on a refresh token, by the public client itself.
    let other = sign_in().await;
    let revoked = w
        .public(
            "acme",
            "revoke",
            &[
                ("client_id", &w.browser),
                ("token", &field(&other, "refresh_token")),
            ],
        )
        .await;
    assert_eq!(revoked.status(), 200);
    assert_eq!(
        w.introspect(&field(&other, "access_token")).await["active"],
        false
    );
    // The edge learns of it within a second.
    let started = tokio::time::Instant::now();
    loop {
        let auth = reqwest::Client::new()
            .get(format!("http://{edge}/auth"))
            .bearer_auth(field(&other, "access_token"))
            .header("origin", ORIGIN)
            .send()
            .await
            .unwrap();
        if auth.status() == 401 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(1), "still admitted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
