//! The token endpoint, introspection and revocation, end to end.

use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};

use crate::helpers::{TestApp, TestConfig, create_database, spawn_app, spawn_app_with};

const PASSWORD: &str = "correct horse battery staple";

/// A tenant `acme` with an M2M client and a dashboard client (password +
/// refresh), a user and a tenant admin.
struct Fixture {
    app: TestApp,
    m2m: (String, String),
    dashboard: (String, String),
    user: String,
    admin: String,
}

impl Fixture {
    async fn new() -> Self {
        Self::on(spawn_app().await).await
    }

    async fn on(app: TestApp) -> Self {
        app.create_tenant("acme").await;
        let m2m = app
            .create_client(
                "acme",
                json!({
                    "name": "m2m",
                    "grant_types": ["client_credentials"],
                    "scopes": ["read", "write"],
                    "audience": ["https://api.acme.test"],
                    "allowed_origins": ["https://app.acme.test:443", "http://localhost:3000"],
                }),
            )
            .await;
        let dashboard = app
            .create_client(
                "acme",
                json!({
                    "name": "dashboard",
                    "grant_types": ["password", "refresh_token"],
                    "scopes": ["read", "profile", "admin"],
                }),
            )
            .await;
        let user = app
            .create_user("acme", "alice", PASSWORD, &["viewer"])
            .await;
        let admin = app
            .create_user("acme", "root", PASSWORD, &["tenant-admin"])
            .await;
        Self {
            app,
            m2m,
            dashboard,
            user,
            admin,
        }
    }

    fn m2m(&self) -> (&str, &str) {
        (&self.m2m.0, &self.m2m.1)
    }

    fn dashboard(&self) -> (&str, &str) {
        (&self.dashboard.0, &self.dashboard.1)
    }

    async fn password(&self, username: &str, extra: &[(&str, &str)]) -> reqwest::Response {
        let mut form = vec![
            ("grant_type", "password"),
            ("username", username),
            ("password", PASSWORD),
        ];
        form.extend_from_slice(extra);
        self.app.token("acme", self.dashboard(), &form).await
    }

    async fn ok(&self, response: reqwest::Response) -> Value {
        let status = response.status();
        let body = response.text().await.unwrap();
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }

    async fn introspect(&self, token: &str) -> Value {
        let response = self
            .app
            .oauth_basic("acme", "introspect", self.m2m(), &[("token", token)])
            .await;
        self.ok(response).await
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

fn claims_of(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

/// Verifies with jsonwebtoken (not the code under test) against the JWKS.
async fn verify_independently(app: &TestApp, token: &str, audience: &str) -> Value {
    let jwks: jsonwebtoken::jwk::JwkSet = app
        .get("/acme/.well-known/jwks")
        .await
        .json()
        .await
        .unwrap();
    let header = jsonwebtoken::decode_header(token).unwrap();
    assert_eq!(header.typ.as_deref(), Some("at+jwt"));
    let jwk = jwks.find(header.kid.as_deref().unwrap()).unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.set_audience(&[audience]);
    validation.set_issuer(&[format!(
        "{}/acme",
        app.state.settings.server.public_base_url
    )]);
    validation.set_required_spec_claims(&["exp", "iat", "iss", "sub", "aud"]);
    jsonwebtoken::decode::<Value>(
        token,
        &jsonwebtoken::DecodingKey::from_jwk(jwk).unwrap(),
        &validation,
    )
    .unwrap()
    .claims
}

#[tokio::test]
async fn client_credentials_issues_an_rfc_9068_token_that_verifies_independently() {
    let f = Fixture::new().await;

    let response = f
        .app
        .token("acme", f.m2m(), &[("grant_type", "client_credentials")])
        .await;

    assert_eq!(response.headers()["cache-control"], "no-store");
    let body = f.ok(response).await;
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 900);
    assert_eq!(body["scope"], "read write");
    assert!(body.get("refresh_token").is_none());
    let token = body["access_token"].as_str().unwrap();
    let claims = verify_independently(&f.app, token, "https://api.acme.test").await;
    assert_eq!(claims["sub"], f.m2m.0);
    assert_eq!(claims["client_id"], f.m2m.0);
    assert_eq!(claims["tid"], "acme");
    assert_eq!(claims["scope"], "read write");
    assert_eq!(claims["aud"], "https://api.acme.test");
    assert_eq!(
        claims["allowed_origins"],
        json!(["http://localhost:3000", "https://app.acme.test"])
    );
    assert_eq!(
        claims["exp"].as_u64().unwrap(),
        claims["iat"].as_u64().unwrap() + 900
    );
    assert!(claims["jti"].as_str().unwrap().len() >= 16);
    assert!(claims.get("roles").is_none());
}

#[tokio::test]
async fn client_secret_post_works_too_and_both_methods_at_once_do_not() {
    let f = Fixture::new().await;
    let url = format!("{}/acme/oauth2/token", f.app.address);
    let form = [
        ("grant_type", "client_credentials"),
        ("client_id", f.m2m.0.as_str()),
        ("client_secret", f.m2m.1.as_str()),
        ("scope", "read"),
    ];

    let post = f.app.client.post(&url).form(&form).send().await.unwrap();
    let body = f.ok(post).await;
    assert_eq!(body["scope"], "read");

    let both = f
        .app
        .client
        .post(&url)
        .basic_auth(&f.m2m.0, Some(&f.m2m.1))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(both).await, (400, "invalid_request".into()));
}

#[tokio::test]
async fn scopes_are_checked_and_machines_never_get_admin() {
    let f = Fixture::new().await;

    let narrow = f
        .app
        .token(
            "acme",
            f.m2m(),
            &[("grant_type", "client_credentials"), ("scope", "write")],
        )
        .await;
    assert_eq!(f.ok(narrow).await["scope"], "write");
    for scope in ["delete", "read delete", "admin"] {
        let response = f
            .app
            .token(
                "acme",
                f.m2m(),
                &[("grant_type", "client_credentials"), ("scope", scope)],
            )
            .await;
        assert_eq!(
            error_of(response).await,
            (400, "invalid_scope".into()),
            "{scope}"
        );
    }
    let machine_admin = f
        .app
        .admin_post(
            "/tenants/acme/clients",
            json!({ "name": "bad", "grant_types": ["client_credentials"], "scopes": ["admin"] }),
        )
        .await;
    assert_eq!(machine_admin.status(), 400);
}

#[tokio::test]
async fn the_password_grant_returns_user_tokens_and_a_refresh_token() {
    let f = Fixture::new().await;

    let body = f.ok(f.password("alice", &[]).await).await;

    assert_eq!(body["scope"], "profile read");
    let refresh = body["refresh_token"].as_str().unwrap();
    assert!(refresh.len() >= 43, "256 bits of randomness");
    let claims =
        verify_independently(&f.app, body["access_token"].as_str().unwrap(), "keysilo").await;
    assert_eq!(claims["sub"], f.user);
    assert_eq!(claims["client_id"], f.dashboard.0);
    assert_eq!(claims["roles"], json!(["viewer"]));
}

#[tokio::test]
async fn admin_scope_needs_the_tenant_admin_role() {
    let f = Fixture::new().await;

    let denied = f.password("alice", &[("scope", "admin")]).await;
    assert_eq!(error_of(denied).await, (400, "invalid_scope".into()));

    let granted = f
        .ok(f.password("root", &[("scope", "admin read")]).await)
        .await;
    assert_eq!(granted["scope"], "admin read");
    let claims = claims_of(granted["access_token"].as_str().unwrap());
    assert_eq!(claims["sub"], f.admin);
    // Admin tokens are for the issuer's own admin API, nobody else's.
    let issuer = format!("{}/acme", f.app.state.settings.server.public_base_url);
    assert_eq!(claims["aud"], issuer);
    // Without `admin` in its registration, a client cannot obtain it.
    let (id, secret) = f
        .app
        .create_client(
            "acme",
            json!({ "name": "plain", "grant_types": ["password"], "scopes": ["read"] }),
        )
        .await;
    let refused = f
        .app
        .token(
            "acme",
            (&id, &secret),
            &[
                ("grant_type", "password"),
                ("username", "root"),
                ("password", PASSWORD),
                ("scope", "admin"),
            ],
        )
        .await;
    assert_eq!(error_of(refused).await, (400, "invalid_scope".into()));
}

#[tokio::test]
async fn refresh_tokens_rotate_and_reuse_revokes_the_whole_family() {
    let f = Fixture::new().await;
    let first = f.ok(f.password("alice", &[]).await).await;
    let r1 = first["refresh_token"].as_str().unwrap().to_owned();

    let second = f
        .ok(f
            .app
            .token(
                "acme",
                f.dashboard(),
                &[
                    ("grant_type", "refresh_token"),
                    ("refresh_token", &r1),
                    ("scope", "read"),
                ],
            )
            .await)
        .await;
    let r2 = second["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(r1, r2);
    assert_eq!(second["scope"], "read");
    let wider = f
        .app
        .token(
            "acme",
            f.dashboard(),
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", &r2),
                ("scope", "read profile delete"),
            ],
        )
        .await;
    assert_eq!(error_of(wider).await, (400, "invalid_scope".into()));

    // r1 is spent: presenting it again is reuse, and kills r2 as well.
    let reuse = f
        .app
        .token(
            "acme",
            f.dashboard(),
            &[("grant_type", "refresh_token"), ("refresh_token", &r1)],
        )
        .await;
    assert_eq!(error_of(reuse).await, (400, "invalid_grant".into()));
    let descendant = f
        .app
        .token(
            "acme",
            f.dashboard(),
            &[("grant_type", "refresh_token"), ("refresh_token", &r2)],
        )
        .await;
    assert_eq!(error_of(descendant).await, (400, "invalid_grant".into()));
    assert!(
        f.app
            .audit_types("acme")
            .await
            .contains(&"refresh_token.reused".to_owned())
    );
    // Another login's family is untouched.
    let other = f.ok(f.password("alice", &[]).await).await;
    let renewed = f
        .app
        .token(
            "acme",
            f.dashboard(),
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", other["refresh_token"].as_str().unwrap()),
            ],
        )
        .await;
    f.ok(renewed).await;
}

/// One row of the error table: client credentials, form, status, error.
type BasicCase<'a> = ((&'a str, &'a str), &'a [(&'a str, &'a str)], u16, &'a str);

#[tokio::test]
async fn every_token_error_comes_in_its_rfc_6749_case() {
    let f = Fixture::new().await;
    let url = format!("{}/acme/oauth2/token", f.app.address);
    let (m2m, dashboard) = (f.m2m(), f.dashboard());
    let cc = [("grant_type", "client_credentials")];

    // Requests authenticated with HTTP Basic: (client, form, status, error).
    let basic: &[BasicCase<'_>] = &[
        (m2m, &[], 400, "invalid_request"),
        ((m2m.0, "wrong"), &cc, 401, "invalid_client"),
        (("nobody", "nothing"), &cc, 401, "invalid_client"),
        (dashboard, &cc, 400, "unauthorized_client"),
        (
            m2m,
            &[("grant_type", "refresh_token"), ("refresh_token", "x")],
            400,
            "unauthorized_client",
        ),
        (
            m2m,
            &[("grant_type", "authorization_code"), ("code", "x")],
            400,
            "unsupported_grant_type",
        ),
        (
            dashboard,
            &[("grant_type", "refresh_token"), ("refresh_token", "forged")],
            400,
            "invalid_grant",
        ),
        (
            dashboard,
            &[("grant_type", "password"), ("username", "alice")],
            400,
            "invalid_request",
        ),
    ];
    for (client, form, status, error) in basic {
        let response = f.app.token("acme", *client, form).await;
        let challenge = response.headers().get("www-authenticate").cloned();
        assert_eq!(
            error_of(response).await,
            (*status, (*error).to_owned()),
            "{form:?}"
        );
        // RFC 6749 §5.2: a failed Basic authentication carries its challenge.
        if *status == 401 {
            assert!(challenge.is_some_and(|c| c.to_str().unwrap().starts_with("Basic")));
        }
    }

    // Requests built by hand: (request, status, error).
    let client = &f.app.client;
    let raw = [
        (
            client
                .post(&url)
                .basic_auth(m2m.0, Some(m2m.1))
                .header("content-type", "application/x-www-form-urlencoded")
                .body("grant_type=client_credentials&scope=read&scope=write"),
            400,
            "invalid_request",
        ),
        (
            client
                .post(&url)
                .basic_auth(m2m.0, Some(m2m.1))
                .json(&json!({ "grant_type": "client_credentials" })),
            400,
            "invalid_request",
        ),
        (
            client.post(&url).form(&[
                ("grant_type", "client_credentials"),
                ("client_id", m2m.0),
                ("client_secret", "wrong"),
            ]),
            401,
            "invalid_client",
        ),
        (client.post(&url).form(&cc), 401, "invalid_client"),
        (
            client.post(&url).basic_auth(m2m.0, Some(m2m.1)).form(&[
                ("grant_type", "client_credentials"),
                ("scope", &"x".repeat(20_000)),
            ]),
            413,
            "invalid_request",
        ),
    ];
    for (request, status, error) in raw {
        let response = request.send().await.unwrap();
        assert_eq!(error_of(response).await, (status, error.to_owned()));
    }

    assert_eq!(f.app.token("nope", m2m, &cc).await.status(), 404);
}

#[tokio::test]
async fn an_unknown_user_and_a_wrong_password_get_the_same_answer() {
    let f = Fixture::new().await;
    let attempt = |username: &'static str, password: &'static str| {
        let f = &f;
        async move {
            let started = Instant::now();
            let response = f
                .app
                .token(
                    "acme",
                    f.dashboard(),
                    &[
                        ("grant_type", "password"),
                        ("username", username),
                        ("password", password),
                    ],
                )
                .await;
            let status = response.status();
            (status, response.text().await.unwrap(), started.elapsed())
        }
    };

    let checks = |user: &'static str| {
        let app = &f.app;
        async move {
            crate::health::metric(
                app,
                &format!("keysilo_password_checks_total{{user=\"{user}\"}}"),
            )
            .await
            .unwrap()
        }
    };
    let before = (checks("known").await, checks("unknown").await);

    let (wrong_status, wrong_body, wrong_time) = attempt("alice", "not her password").await;
    let (unknown_status, unknown_body, unknown_time) =
        attempt("mallory", "whatever password").await;

    assert_eq!(wrong_status, 400);
    assert_eq!((wrong_status, &wrong_body), (unknown_status, &unknown_body));
    assert!(wrong_body.contains("invalid_grant"));
    // Both ran an argon2id check, which is what the dummy hash is for:
    // counted by the service, not timed here (the figures are reported).
    let after = (checks("known").await, checks("unknown").await);
    assert_eq!(after, (before.0 + 1.0, before.1 + 1.0));
    println!("wrong password {wrong_time:?}, unknown user {unknown_time:?}");
}

#[tokio::test]
async fn a_rotated_secret_overlaps_with_the_old_one_which_then_expires() {
    let database = create_database().await;
    let config =
        TestConfig::new(&database).set("KEYSILO_TOKENS__CLIENT_SECRET_OVERLAP_SECONDS", "2");
    let f = Fixture::on(spawn_app_with(config, database).await).await;
    let cc = [("grant_type", "client_credentials")];

    let response = f
        .app
        .admin_post(
            &format!("/tenants/acme/clients/{}/secret", f.m2m.0),
            json!({}),
        )
        .await;
    let body = f.ok(response).await;
    let new_secret = body["client_secret"].as_str().unwrap().to_owned();
    assert_ne!(new_secret, f.m2m.1);

    f.ok(f.app.token("acme", (&f.m2m.0, &new_secret), &cc).await)
        .await;
    f.ok(f.app.token("acme", f.m2m(), &cc).await).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    f.ok(f.app.token("acme", (&f.m2m.0, &new_secret), &cc).await)
        .await;
    let old = f.app.token("acme", f.m2m(), &cc).await;
    assert_eq!(error_of(old).await, (401, "invalid_client".into()));
}

#[tokio::test]
async fn a_disabled_client_fails_at_once_on_another_replica() {
    let database = create_database().await;
    let a = spawn_app_with(TestConfig::new(&database), database.clone()).await;
    let b = spawn_app_with(TestConfig::new(&database), database).await;
    let f = Fixture::on(a).await;
    let cc = [("grant_type", "client_credentials")];
    // B has the client cached.
    f.ok(b.token("acme", f.m2m(), &cc).await).await;

    let response = f
        .app
        .admin(
            reqwest::Method::DELETE,
            &format!("/tenants/acme/clients/{}", f.m2m.0),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);

    let on_b = b.token("acme", f.m2m(), &cc).await;
    assert_eq!(error_of(on_b).await, (401, "invalid_client".into()));
}

#[tokio::test]
async fn introspection_and_revocation_follow_rfc_7662_and_7009() {
    let f = Fixture::new().await;
    let login = f.ok(f.password("alice", &[]).await).await;
    let access = login["access_token"].as_str().unwrap().to_owned();
    let refresh = login["refresh_token"].as_str().unwrap().to_owned();

    let active = f.introspect(&access).await;
    assert_eq!(active["active"], true);
    assert_eq!(active["sub"], f.user);
    assert_eq!(active["username"], "alice");
    assert_eq!(active["client_id"], f.dashboard.0);
    assert_eq!(f.introspect(&refresh).await["active"], true);
    assert_eq!(f.introspect("garbage").await, json!({ "active": false }));
    let anonymous = f
        .app
        .client
        .post(format!("{}/acme/oauth2/introspect", f.app.address))
        .form(&[("token", access.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);

    // Another client cannot revoke the dashboard's tokens; the dashboard can.
    let foreign = f
        .app
        .oauth_basic("acme", "revoke", f.m2m(), &[("token", &access)])
        .await;
    assert_eq!(foreign.status(), 200);
    assert_eq!(f.introspect(&access).await["active"], true);
    for token in [&access, &refresh] {
        let revoked = f
            .app
            .oauth_basic("acme", "revoke", f.dashboard(), &[("token", token)])
            .await;
        assert_eq!(revoked.status(), 200);
        assert_eq!(f.introspect(token).await["active"], false);
    }
    let dead = f
        .app
        .token(
            "acme",
            f.dashboard(),
            &[("grant_type", "refresh_token"), ("refresh_token", &refresh)],
        )
        .await;
    assert_eq!(error_of(dead).await, (400, "invalid_grant".into()));
    let unknown = f
        .app
        .oauth_basic("acme", "revoke", f.dashboard(), &[("token", "whatever")])
        .await;
    assert_eq!(unknown.status(), 200);
}

#[tokio::test]
async fn a_token_of_another_tenant_is_inactive() {
    let f = Fixture::new().await;
    f.app.create_tenant("other").await;
    let (id, secret) = f
        .app
        .create_client(
            "other",
            json!({ "name": "x", "grant_types": ["client_credentials"], "scopes": ["read"] }),
        )
        .await;
    let foreign = f
        .ok(f
            .app
            .token(
                "other",
                (&id, &secret),
                &[("grant_type", "client_credentials")],
            )
            .await)
        .await;

    let answer = f
        .introspect(foreign["access_token"].as_str().unwrap())
        .await;

    assert_eq!(answer, json!({ "active": false }));
}

#[tokio::test]
async fn disabling_a_user_kills_its_refresh_tokens_and_access_tokens() {
    let f = Fixture::new().await;
    let login = f.ok(f.password("alice", &[]).await).await;

    let response = f
        .app
        .admin(
            reqwest::Method::DELETE,
            &format!("/tenants/acme/users/{}", f.user),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);

    assert_eq!(
        f.introspect(login["access_token"].as_str().unwrap()).await["active"],
        false
    );
    let refresh = f
        .app
        .token(
            "acme",
            f.dashboard(),
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", login["refresh_token"].as_str().unwrap()),
            ],
        )
        .await;
    assert_eq!(error_of(refresh).await, (400, "invalid_grant".into()));
    let again = f.password("alice", &[]).await;
    assert_eq!(error_of(again).await, (400, "invalid_grant".into()));
}

#[tokio::test]
async fn a_tenant_admin_is_confined_to_its_own_tenant() {
    let f = Fixture::new().await;
    f.app.create_tenant("other").await;
    let login = f.ok(f.password("root", &[("scope", "admin")]).await).await;
    let token = login["access_token"].as_str().unwrap();
    let viewer = f.ok(f.password("alice", &[]).await).await;
    let call = |method: reqwest::Method, path: &str, bearer: &str| {
        f.app
            .client
            .request(method, format!("{}/admin/v1{path}", f.app.address))
            .bearer_auth(bearer)
            .json(&json!({ "name": "by-admin", "grant_types": ["client_credentials"], "scopes": ["read"] }))
            .send()
    };

    let own_keys = call(reqwest::Method::GET, "/tenants/acme/keys", token)
        .await
        .unwrap();
    assert_eq!(own_keys.status(), 200);
    let own_client = call(reqwest::Method::POST, "/tenants/acme/clients", token)
        .await
        .unwrap();
    assert_eq!(own_client.status(), 201);
    assert_eq!(
        f.app.audit("acme").await[0]["actor"],
        format!("user:{}", f.admin)
    );

    for (method, path) in [
        (reqwest::Method::GET, "/tenants/other/keys"),
        (reqwest::Method::POST, "/tenants/other/clients"),
        (reqwest::Method::POST, "/tenants"),
        (reqwest::Method::DELETE, "/tenants/acme"),
        (reqwest::Method::POST, "/master-key/rewrap"),
        (reqwest::Method::GET, "/master-key"),
    ] {
        let response = call(method.clone(), path, token).await.unwrap();
        assert!(
            matches!(response.status().as_u16(), 401 | 403),
            "{method} {path}: {}",
            response.status()
        );
    }
    let without_admin_scope = call(
        reqwest::Method::GET,
        "/tenants/acme/keys",
        viewer["access_token"].as_str().unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(without_admin_scope.status(), 403);
}

#[tokio::test]
async fn a_burst_beyond_the_client_limit_gets_429_with_retry_after() {
    let database = create_database().await;
    let config = TestConfig::new(&database)
        .set("KEYSILO_LIMITS__TOKEN_PER_CLIENT_PER_SECOND", "1")
        .set("KEYSILO_LIMITS__TOKEN_BURST", "3");
    let f = Fixture::on(spawn_app_with(config, database).await).await;

    let mut statuses = Vec::new();
    let mut retry_after = None;
    for _ in 0..6 {
        let response = f
            .app
            .token("acme", f.m2m(), &[("grant_type", "client_credentials")])
            .await;
        if response.status() == 429 {
            retry_after = response.headers().get("retry-after").cloned();
        }
        statuses.push(response.status().as_u16());
    }

    assert_eq!(&statuses[..3], [200, 200, 200]);
    assert!(statuses.contains(&429), "{statuses:?}");
    let seconds: u64 = retry_after.unwrap().to_str().unwrap().parse().unwrap();
    assert!(seconds >= 1);
}

#[tokio::test]
async fn repeated_wrong_passwords_back_off_with_429() {
    let f = Fixture::new().await;

    let mut statuses = Vec::new();
    for _ in 0..7 {
        let response = f
            .app
            .token(
                "acme",
                f.dashboard(),
                &[
                    ("grant_type", "password"),
                    ("username", "alice"),
                    ("password", "wrong password"),
                ],
            )
            .await;
        statuses.push(response.status().as_u16());
    }

    assert_eq!(&statuses[..5], [400, 400, 400, 400, 400], "{statuses:?}");
    assert_eq!(statuses[5], 429, "{statuses:?}");
}

/// The `oauth2` crate, driven exactly as an application would drive it,
/// with its HTTP calls made by reqwest.
#[tokio::test]
async fn a_third_party_oauth2_client_obtains_and_refreshes_tokens() {
    use oauth2::basic::BasicClient;
    use oauth2::{
        AuthType, ClientId, ClientSecret, ResourceOwnerPassword, ResourceOwnerUsername, Scope,
        TokenResponse as _, TokenUrl,
    };

    let f = Fixture::new().await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let send = |request: oauth2::HttpRequest| {
        let http = http.clone();
        async move {
            let mut builder = http
                .request(request.method().clone(), request.uri().to_string())
                .body(request.body().clone());
            for (name, value) in request.headers() {
                builder = builder.header(name, value);
            }
            let response = builder.send().await?;
            let mut out = oauth2::http::Response::builder().status(response.status());
            for (name, value) in response.headers() {
                out = out.header(name, value);
            }
            Ok::<_, reqwest::Error>(out.body(response.bytes().await?.to_vec()).unwrap())
        }
    };
    let token_url = TokenUrl::new(format!("{}/acme/oauth2/token", f.app.address)).unwrap();

    let machine = BasicClient::new(ClientId::new(f.m2m.0.clone()))
        .set_client_secret(ClientSecret::new(f.m2m.1.clone()))
        .set_auth_type(AuthType::BasicAuth)
        .set_token_uri(token_url.clone());
    let token = machine
        .exchange_client_credentials()
        .add_scope(Scope::new("read".into()))
        .request_async(&send)
        .await
        .unwrap();
    assert_eq!(token.expires_in(), Some(Duration::from_secs(900)));
    assert_eq!(token.scopes().unwrap()[0].as_str(), "read");

    let dashboard = BasicClient::new(ClientId::new(f.dashboard.0.clone()))
        .set_client_secret(ClientSecret::new(f.dashboard.1.clone()))
        .set_auth_type(AuthType::RequestBody)
        .set_token_uri(token_url);
    let login = dashboard
        .exchange_password(
            &ResourceOwnerUsername::new("alice".into()),
            &ResourceOwnerPassword::new(PASSWORD.into()),
        )
        .request_async(&send)
        .await
        .unwrap();
    let refreshed = dashboard
        .exchange_refresh_token(login.refresh_token().unwrap())
        .request_async(&send)
        .await
        .unwrap();
    assert_ne!(
        refreshed.refresh_token().unwrap().secret(),
        login.refresh_token().unwrap().secret()
    );
    let wrong = dashboard
        .exchange_password(
            &ResourceOwnerUsername::new("alice".into()),
            &ResourceOwnerPassword::new("nope nope nope".into()),
        )
        .request_async(&send)
        .await
        .unwrap_err();
    match wrong {
        oauth2::RequestTokenError::ServerResponse(response) => {
            assert_eq!(
                *response.error(),
                oauth2::basic::BasicErrorResponseType::InvalidGrant
            );
        }
        other => panic!("expected an invalid_grant response, got {other:?}"),
    }
}

#[tokio::test]
async fn a_password_flood_is_refused_early_while_machine_clients_keep_their_tokens() {
    let database = create_database().await;
    let config = TestConfig::new(&database)
        .set("KEYSILO_TOKENS__PASSWORD_WORKERS", "1")
        .set("KEYSILO_TOKENS__PASSWORD_QUEUE_LIMIT", "2")
        .set("KEYSILO_LIMITS__PASSWORD_FAILURES_BEFORE_BACKOFF", "1000");
    let f = Fixture::on(spawn_app_with(config, database).await).await;

    let flood: Vec<_> = (0..24)
        .map(|_| {
            f.app.token(
                "acme",
                f.dashboard(),
                &[
                    ("grant_type", "password"),
                    ("username", "alice"),
                    ("password", "wrong password"),
                ],
            )
        })
        .collect();
    let machines: Vec<_> = (0..10)
        .map(|_| {
            f.app
                .token("acme", f.m2m(), &[("grant_type", "client_credentials")])
        })
        .collect();
    let (flood, machines) = tokio::join!(
        futures_util::future::join_all(flood),
        futures_util::future::join_all(machines)
    );

    let statuses: Vec<u16> = flood.iter().map(|r| r.status().as_u16()).collect();
    assert!(
        statuses.contains(&503),
        "the pool should shed load: {statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| matches!(s, 400 | 503)),
        "{statuses:?}"
    );
    assert!(machines.iter().all(|r| r.status() == 200));
}

#[tokio::test]
async fn refresh_tokens_die_when_idle_and_families_at_their_absolute_lifetime() {
    let database = create_database().await;
    let config = TestConfig::new(&database)
        .set("KEYSILO_TOKENS__REFRESH_TOKEN_LIFETIME_SECONDS", "3")
        .set("KEYSILO_TOKENS__REFRESH_TOKEN_IDLE_SECONDS", "1");
    let f = Fixture::on(spawn_app_with(config, database).await).await;
    let refresh = |token: String| {
        let f = &f;
        async move {
            f.app
                .token(
                    "acme",
                    f.dashboard(),
                    &[("grant_type", "refresh_token"), ("refresh_token", &token)],
                )
                .await
        }
    };

    // Idle: unused for longer than a second.
    let idle = f.ok(f.password("alice", &[]).await).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let late = refresh(idle["refresh_token"].as_str().unwrap().to_owned()).await;
    assert_eq!(error_of(late).await, (400, "invalid_grant".into()));

    // Absolute: kept busy, the family still ends three seconds after login.
    let login = f.ok(f.password("alice", &[]).await).await;
    let mut token = login["refresh_token"].as_str().unwrap().to_owned();
    let started = Instant::now();
    let outcome = loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let response = refresh(token.clone()).await;
        if response.status() != 200 {
            break (error_of(response).await, started.elapsed());
        }
        token = f.ok(response).await["refresh_token"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(
            started.elapsed() < Duration::from_secs(6),
            "the family never ended"
        );
    };
    assert_eq!(outcome.0, (400, "invalid_grant".into()));
    assert!(
        outcome.1 >= Duration::from_millis(2500),
        "ended early: {:?}",
        outcome.1
    );
}

#[tokio::test]
async fn a_spent_refresh_token_replayed_with_any_scope_still_revokes_its_family() {
    let f = Fixture::new().await;
    let login = f.ok(f.password("alice", &[]).await).await;
    let r1 = login["refresh_token"].as_str().unwrap().to_owned();
    let next = f
        .ok(f
            .app
            .token(
                "acme",
                f.dashboard(),
                &[("grant_type", "refresh_token"), ("refresh_token", &r1)],
            )
            .await)
        .await;

    let replay = f
        .app
        .token(
            "acme",
            f.dashboard(),
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", &r1),
                ("scope", "nonsense"),
            ],
        )
        .await;

    assert_eq!(error_of(replay).await, (400, "invalid_grant".into()));
    let r2 = next["refresh_token"].as_str().unwrap();
    let dead = f
        .app
        .token(
            "acme",
            f.dashboard(),
            &[("grant_type", "refresh_token"), ("refresh_token", r2)],
        )
        .await;
    assert_eq!(error_of(dead).await, (400, "invalid_grant".into()));
}

#[tokio::test]
async fn a_narrowed_refresh_keeps_the_original_scope_for_the_next_one() {
    let f = Fixture::new().await;
    let login = f.ok(f.password("alice", &[]).await).await;

    let narrow = f
        .ok(f
            .app
            .token(
                "acme",
                f.dashboard(),
                &[
                    ("grant_type", "refresh_token"),
                    ("refresh_token", login["refresh_token"].as_str().unwrap()),
                    ("scope", "read"),
                ],
            )
            .await)
        .await;
    let wide_again = f
        .ok(f
            .app
            .token(
                "acme",
                f.dashboard(),
                &[
                    ("grant_type", "refresh_token"),
                    ("refresh_token", narrow["refresh_token"].as_str().unwrap()),
                ],
            )
            .await)
        .await;

    assert_eq!(narrow["scope"], "read");
    assert_eq!(wide_again["scope"], "profile read");
}

#[tokio::test]
async fn odd_input_gets_4xx_and_every_oauth_answer_is_no_store() {
    let f = Fixture::new().await;
    let url = format!("{}/acme/oauth2/token", f.app.address);
    let form = |body: &'static str| {
        f.app
            .client
            .post(&url)
            .basic_auth(&f.m2m.0, Some(&f.m2m.1))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
    };

    // An empty parameter counts as absent (RFC 6749 §3.1).
    assert_eq!(
        error_of(form("grant_type=").await.unwrap()).await,
        (400, "invalid_request".into())
    );
    // NUL bytes never reach the database.
    let nul_client = f
        .app
        .client
        .post(&url)
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", "a\0b"),
            ("client_secret", "x"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(nul_client).await, (401, "invalid_client".into()));
    let nul_user = f
        .app
        .token(
            "acme",
            f.dashboard(),
            &[
                ("grant_type", "password"),
                ("username", "al\0ice"),
                ("password", "x"),
            ],
        )
        .await;
    assert_eq!(error_of(nul_user).await, (400, "invalid_grant".into()));
    // A malformed Basic header is a Basic failure, with its challenge.
    let malformed = f
        .app
        .client
        .post(&url)
        .header("authorization", "Basic")
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert!(malformed.headers().contains_key("www-authenticate"));
    assert_eq!(error_of(malformed).await, (401, "invalid_client".into()));
    // Even a 404 of the token endpoint must not be cached.
    let missing = f
        .app
        .token("no-such", f.m2m(), &[("grant_type", "client_credentials")])
        .await;
    assert_eq!(missing.status(), 404);
    assert_eq!(missing.headers()["cache-control"], "no-store");
    let nul_path = f
        .app
        .admin(reqwest::Method::DELETE, "/tenants/acme/clients/a%00b")
        .send()
        .await
        .unwrap();
    assert!(nul_path.status().is_client_error(), "{}", nul_path.status());
}

/// A client_credentials request of the machine client claiming to come
/// from `address` (`X-Forwarded-For`).
fn forwarded(
    f: &Fixture,
    address: &'static str,
) -> impl std::future::Future<Output = reqwest::Result<reqwest::Response>> {
    f.app
        .client
        .post(format!("{}/acme/oauth2/token", f.app.address))
        .basic_auth(&f.m2m.0, Some(&f.m2m.1))
        .header("x-forwarded-for", address)
        .form(&[("grant_type", "client_credentials")])
        .send()
}

#[tokio::test]
async fn behind_a_trusted_proxy_clients_are_told_apart_by_forwarded_address() {
    let database = create_database().await;
    let config = TestConfig::new(&database)
        .set("KEYSILO_LIMITS__TOKEN_PER_ADDRESS_PER_SECOND", "1")
        .set("KEYSILO_LIMITS__TOKEN_BURST", "1")
        .set("KEYSILO_LIMITS__TRUSTED_PROXIES", r#"["127.0.0.1"]"#);
    let f = Fixture::on(spawn_app_with(config, database).await).await;
    let from = |address: &'static str| forwarded(&f, address);

    assert_eq!(from("203.0.113.1").await.unwrap().status(), 200);
    assert_eq!(from("203.0.113.2").await.unwrap().status(), 200);
    assert_eq!(from("203.0.113.1").await.unwrap().status(), 429);
}

#[tokio::test]
async fn x_forwarded_for_from_an_untrusted_peer_is_ignored() {
    let database = create_database().await;
    // No trusted proxies: the TCP peer is the client, whatever it claims.
    let config = TestConfig::new(&database)
        .set("KEYSILO_LIMITS__TOKEN_PER_ADDRESS_PER_SECOND", "1")
        .set("KEYSILO_LIMITS__TOKEN_BURST", "1");
    let f = Fixture::on(spawn_app_with(config, database).await).await;
    let from = |address: &'static str| forwarded(&f, address);

    assert_eq!(from("203.0.113.1").await.unwrap().status(), 200);
    // Another claimed address does not buy a fresh allowance.
    assert_eq!(from("203.0.113.2").await.unwrap().status(), 429);
}

#[tokio::test]
async fn expired_revocations_and_refresh_families_are_purged_and_live_ones_kept() {
    let f = Fixture::new().await;
    let store = &f.app.state.store;
    let acme = keysilo_types::TenantId::parse("acme").unwrap();
    let now = keysilo_identity::clock::now();
    store
        .revoke_access_token(&acme, "old", now - Duration::from_secs(10))
        .await
        .unwrap();
    store
        .revoke_access_token(&acme, "live", now + Duration::from_secs(600))
        .await
        .unwrap();
    // Two refresh families; one is aged past its end in SQL.
    let expired = f.ok(f.password("alice", &[]).await).await;
    let login = f.ok(f.password("alice", &[]).await).await;
    let family_of = |token: &Value| {
        openssl::sha::sha256(token["refresh_token"].as_str().unwrap().as_bytes()).to_vec()
    };
    let sql = f.app.sql().await;
    let aged = sql
        .execute(
            "UPDATE refresh_families SET expires_at = $1 WHERE id = \
             (SELECT family_id FROM refresh_tokens WHERE token_hash = $2)",
            &[&(now - Duration::from_secs(10)), &family_of(&expired)],
        )
        .await
        .unwrap();
    assert_eq!(aged, 1);
    let count = |table: &'static str| {
        let sql = &sql;
        async move {
            let row = sql
                .query_one(&format!("SELECT count(*) FROM {table}"), &[])
                .await
                .unwrap();
            row.get::<_, i64>(0)
        }
    };
    let (families, tokens) = (
        count("refresh_families").await,
        count("refresh_tokens").await,
    );

    let purged = store.purge_expired(now).await.unwrap();

    // One revoked jti, one family and its one token.
    assert_eq!(purged, 3);
    assert!(!store.is_access_token_revoked(&acme, "old").await.unwrap());
    assert!(store.is_access_token_revoked(&acme, "live").await.unwrap());
    assert_eq!(count("refresh_families").await, families - 1);
    assert_eq!(count("refresh_tokens").await, tokens - 1);
    let left: i64 = sql
        .query_one(
            "SELECT count(*) FROM refresh_tokens WHERE token_hash = $1",
            &[&family_of(&expired)],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0, "the expired family's token is still stored");
    let refreshed = f
        .app
        .token(
            "acme",
            f.dashboard(),
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", login["refresh_token"].as_str().unwrap()),
            ],
        )
        .await;
    assert_eq!(refreshed.status(), 200);
}

#[tokio::test]
async fn one_refresh_token_redeemed_concurrently_succeeds_once_and_the_rest_is_reuse() {
    let f = Fixture::new().await;
    let login = f.ok(f.password("alice", &[]).await).await;
    let r1 = login["refresh_token"].as_str().unwrap().to_owned();
    let form = [
        ("grant_type", "refresh_token"),
        ("refresh_token", r1.as_str()),
    ];

    let attempts = (0..8).map(|_| f.app.token("acme", f.dashboard(), &form));
    let answers = futures_util::future::join_all(attempts).await;

    let mut successors = Vec::new();
    for answer in answers {
        if answer.status() == 200 {
            let body: serde_json::Value = answer.json().await.unwrap();
            successors.push(body["refresh_token"].as_str().unwrap().to_owned());
        } else {
            assert_eq!(error_of(answer).await, (400, "invalid_grant".into()));
        }
    }
    assert_eq!(successors.len(), 1, "exactly one redemption wins");
    // The losers were reuse of a spent token: the family, winner included,
    // is revoked.
    let dead = f
        .app
        .token(
            "acme",
            f.dashboard(),
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", &successors[0]),
            ],
        )
        .await;
    assert_eq!(error_of(dead).await, (400, "invalid_grant".into()));
}

/// A tenant `acme` whose tokens live 5 s, a `client_credentials` client
/// of it, and one of its tokens with the token's claims.
async fn five_second_token(app: &TestApp) -> ((String, String), String, Value) {
    let created = app
        .admin_post(
            "/tenants",
            json!({ "id": "acme", "display_name": "Acme", "token_ttl_seconds": 5 }),
        )
        .await;
    assert_eq!(created.status(), 201);
    let m2m = app
        .create_client(
            "acme",
            json!({ "name": "m2m", "grant_types": ["client_credentials"] }),
        )
        .await;
    let body: Value = app
        .token(
            "acme",
            (&m2m.0, &m2m.1),
            &[("grant_type", "client_credentials")],
        )
        .await
        .json()
        .await
        .unwrap();
    let token = body["access_token"].as_str().unwrap().to_owned();
    let claims = claims_of(&token);
    (m2m, token, claims)
}

#[tokio::test]
async fn a_revoked_access_token_stays_revoked_through_the_clock_skew_after_exp() {
    let app = spawn_app().await;
    let (m2m, token, claims) = five_second_token(&app).await;
    let client = (m2m.0.as_str(), m2m.1.as_str());
    let (jti, exp) = (
        claims["jti"].as_str().unwrap().to_owned(),
        claims["exp"].as_u64().unwrap(),
    );
    let revoked = app
        .oauth_basic("acme", "revoke", client, &[("token", &token)])
        .await;
    assert_eq!(revoked.status(), 200);

    // Past `exp`, inside the identity's own 60 s skew: verifiers still
    // accept the token's dates, so the revocation must still hold, after
    // the purge pass and in the snapshot edges start from.
    let wait = (exp + 1).saturating_sub(keysilo_identity::clock::unix_seconds());
    tokio::time::sleep(Duration::from_secs(wait)).await;
    app.state
        .store
        .purge_expired(keysilo_identity::clock::now())
        .await
        .unwrap();
    let state: Value = app
        .oauth_basic("acme", "introspect", client, &[("token", &token)])
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(state["active"], false, "{state}");
    let snapshot: Value = app
        .get_with_admin_key("/internal/v1/revocations")
        .await
        .json()
        .await
        .unwrap();
    assert!(
        snapshot["jtis"]
            .as_array()
            .unwrap()
            .iter()
            .any(|entry| entry[1] == jti.as_str()),
        "{snapshot}"
    );
}

#[tokio::test]
async fn a_token_past_this_services_skew_can_still_be_revoked_for_verifiers_with_more() {
    let database = create_database().await;
    let config = TestConfig::new(&database).set("KEYSILO_KEYS__CLOCK_SKEW_SECONDS", "0");
    let app = spawn_app_with(config, database).await;
    let (m2m, token, claims) = five_second_token(&app).await;
    let client = (m2m.0.as_str(), m2m.1.as_str());
    let exp = claims["exp"].as_u64().unwrap();
    let wait = (exp + 1).saturating_sub(keysilo_identity::clock::unix_seconds());
    tokio::time::sleep(Duration::from_secs(wait)).await;
    // Expired for this service (no skew), not for an edge allowing 60 s.
    let revoked = app
        .oauth_basic("acme", "revoke", client, &[("token", &token)])
        .await;
    assert_eq!(revoked.status(), 200);
    let snapshot: Value = app
        .get_with_admin_key("/internal/v1/revocations")
        .await
        .json()
        .await
        .unwrap();
    assert!(
        snapshot["jtis"]
            .as_array()
            .unwrap()
            .iter()
            .any(|entry| entry[1] == claims["jti"]),
        "{snapshot}"
    );
}

#[tokio::test]
async fn requests_naming_invented_tenants_are_held_to_the_per_address_limit() {
    let database = create_database().await;
    let config = TestConfig::new(&database)
        .set("KEYSILO_LIMITS__TOKEN_PER_ADDRESS_PER_SECOND", "5")
        .set("KEYSILO_LIMITS__TOKEN_BURST", "5");
    let app = spawn_app_with(config, database).await;
    let mut statuses = Vec::new();
    for i in 0..30 {
        let response = app
            .token(
                &format!("invented{i}"),
                ("c", "s"),
                &[("grant_type", "client_credentials")],
            )
            .await;
        statuses.push(response.status().as_u16());
    }
    // Each unknown tenant would otherwise cost a database lookup.
    assert!(statuses.contains(&429), "{statuses:?}");
    assert!(
        statuses.iter().all(|s| *s == 404 || *s == 429),
        "{statuses:?}"
    );
}
