//! The edge validator against a real identity service: forward-auth, the
//! WebSocket gate, and revocations reaching live sessions.

use std::time::{Duration, Instant};

use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::json;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::{self, Message};

use crate::helpers::{
    TestApp, TestConfig, closed_with, create_database, redis_port, spawn_app_with, start_edge,
};

const PASSWORD: &str = "correct horse battery staple";

struct World {
    identity: TestApp,
    edge: String,
    machine: (String, String),
    browser: (String, String),
    user: String,
}

async fn world(ttl: u32) -> World {
    let database = create_database().await;
    let config = TestConfig::new(&database).with_edge_key();
    let identity = spawn_app_with(config, database.clone()).await;
    let created = identity
        .admin_post(
            "/tenants",
            json!({ "id": "acme", "display_name": "Acme", "token_ttl_seconds": ttl }),
        )
        .await;
    assert_eq!(created.status(), 201);
    let machine = identity
        .create_client(
            "acme",
            json!({ "name": "m2m", "grant_types": ["client_credentials"], "scopes": ["read"], "audience": ["data-plane"] }),
        )
        .await;
    let browser = identity
        .create_client(
            "acme",
            json!({
                "name": "spa", "grant_types": ["password"], "scopes": ["read"],
                "audience": ["data-plane"], "allowed_origins": ["https://app.acme.test"],
            }),
        )
        .await;
    let user = identity.create_user("acme", "alice", PASSWORD, &[]).await;
    let edge = start_edge(&identity, redis_port(), "").await;
    World {
        identity,
        edge,
        machine,
        browser,
        user,
    }
}

impl World {
    async fn token(&self, client: &(String, String), form: &[(&str, &str)]) -> String {
        let response = self
            .identity
            .token("acme", (&client.0, &client.1), form)
            .await;
        assert_eq!(response.status(), 200);
        let body: serde_json::Value = response.json().await.unwrap();
        body["access_token"].as_str().unwrap().to_owned()
    }

    async fn machine_token(&self) -> String {
        self.token(&self.machine, &[("grant_type", "client_credentials")])
            .await
    }

    async fn browser_token(&self) -> String {
        self.token(
            &self.browser,
            &[
                ("grant_type", "password"),
                ("username", "alice"),
                ("password", PASSWORD),
            ],
        )
        .await
    }

    async fn auth(&self, token: Option<&str>, origin: Option<&str>) -> reqwest::Response {
        let mut request = reqwest::Client::new().get(format!("http://{}/auth", self.edge));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(origin) = origin {
            request = request.header("origin", origin);
        }
        request.send().await.unwrap()
    }

    async fn connect(
        &self,
        token: &str,
        subprotocol: bool,
    ) -> Result<
        (
            tokio_tungstenite::WebSocketStream<
                tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
            >,
            tungstenite::handshake::client::Response,
        ),
        tungstenite::Error,
    > {
        let mut request = format!("ws://{}/ws", self.edge)
            .into_client_request()
            .unwrap();
        let value = if subprotocol {
            ("sec-websocket-protocol", format!("keysilo, bearer.{token}"))
        } else {
            ("authorization", format!("Bearer {token}"))
        };
        request
            .headers_mut()
            .insert(value.0, value.1.parse().unwrap());
        tokio_tungstenite::connect_async(request).await
    }
}

#[tokio::test]
async fn forward_auth_answers_per_rfc_6750_and_the_origin_rule() {
    let w = world(900).await;
    let machine = w.machine_token().await;
    let browser = w.browser_token().await;

    let missing = w.auth(None, None).await;
    assert_eq!(missing.status(), 401);
    assert_eq!(missing.headers()["www-authenticate"], "Bearer");
    let garbage = w.auth(Some("not.a.token"), None).await;
    assert_eq!(garbage.status(), 401);
    assert_eq!(
        garbage.headers()["www-authenticate"],
        r#"Bearer error="invalid_token""#
    );

    let ok = w.auth(Some(&machine), None).await;
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.headers()["x-auth-tenant"], "acme");
    assert_eq!(ok.headers()["x-auth-client"], w.machine.0.as_str());
    assert_eq!(ok.headers()["x-auth-subject"], w.machine.0.as_str());
    assert_eq!(ok.headers()["x-auth-scope"], "read");
    // Machine tokens are not for browsers.
    assert_eq!(
        w.auth(Some(&machine), Some("https://app.acme.test"))
            .await
            .status(),
        403
    );
    // Browser tokens only from their origins (default port implied).
    assert_eq!(
        w.auth(Some(&browser), Some("https://app.acme.test"))
            .await
            .status(),
        200
    );
    assert_eq!(
        w.auth(Some(&browser), Some("https://app.acme.test:443"))
            .await
            .status(),
        200
    );
    let subject = w.auth(Some(&browser), Some("https://app.acme.test")).await;
    assert_eq!(subject.headers()["x-auth-subject"], w.user.as_str());
    assert_eq!(
        w.auth(Some(&browser), Some("https://evil.test"))
            .await
            .status(),
        403
    );
    assert_eq!(w.auth(Some(&browser), None).await.status(), 403);
}

#[tokio::test]
async fn tokens_of_other_issuers_or_audiences_are_refused() {
    let w = world(900).await;
    // Another audience.
    let (id, secret) = w
        .identity
        .create_client("acme", json!({ "name": "other", "grant_types": ["client_credentials"], "audience": ["elsewhere"] }))
        .await;
    let elsewhere = w
        .token(&(id, secret), &[("grant_type", "client_credentials")])
        .await;
    assert_eq!(w.auth(Some(&elsewhere), None).await.status(), 401);
    // A token claiming another issuer, signed for real with the tenant's
    // own key: only the issuer rule can refuse it, and it does so before
    // any key is fetched. The same claims under the real issuer pass.
    let acme = keysilo_types::TenantId::parse("acme").unwrap();
    let entry = w.identity.state.cache.get(&acme).await.unwrap().unwrap();
    let signing = entry.signing.as_ref().unwrap();
    let now = keysilo_identity::clock::unix_seconds();
    let claims = |issuer: &str| keysilo_tokens::AccessTokenClaims {
        issuer: issuer.to_owned(),
        subject: w.machine.0.clone(),
        audience: vec!["data-plane".into()],
        client_id: w.machine.0.clone(),
        scope: "read".into(),
        tenant: acme.clone(),
        jti: format!("forged-{issuer}"),
        issued_at: now,
        expires_at: now + 600,
        allowed_origins: vec![],
        roles: vec![],
        certificate_thumbprint: None,
        actor: None,
    };
    let real_issuer = format!("{}/acme", w.identity.state.settings.server.public_base_url);
    let genuine = keysilo_tokens::mint(&claims(&real_issuer), signing).unwrap();
    let forged = keysilo_tokens::mint(&claims("https://attacker.test/acme"), signing).unwrap();
    let jwks_fetches = || async {
        let page = w.identity.get("/metrics").await.text().await.unwrap();
        page.lines()
            .filter(|l| l.starts_with("keysilo_http_requests_total") && l.contains("jwks"))
            .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
            .sum::<f64>()
    };
    assert_eq!(w.auth(Some(&genuine), None).await.status(), 200);
    let fetched_before = jwks_fetches().await;

    assert_eq!(w.auth(Some(&forged), None).await.status(), 401);

    assert_eq!(jwks_fetches().await, fetched_before, "a key was fetched");
    let metrics = reqwest::get(format!("http://{}/metrics", w.edge))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"reason="untrusted_issuer"} 1"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_repeated_token_is_served_from_the_verified_cache() {
    let w = world(900).await;
    let machine = w.machine_token().await;

    for _ in 0..5 {
        assert_eq!(w.auth(Some(&machine), None).await.status(), 200);
    }

    let metrics = reqwest::get(format!("http://{}/metrics", w.edge))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"keysilo_edge_verified_cache_total{result="hit"} 4"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn revoked_tokens_and_disabled_clients_are_refused_within_a_second() {
    let w = world(900).await;
    let machine = w.machine_token().await;
    let browser = w.browser_token().await;
    assert_eq!(w.auth(Some(&machine), None).await.status(), 200);

    let revoked = w
        .identity
        .oauth_basic(
            "acme",
            "revoke",
            (&w.browser.0, &w.browser.1),
            &[("token", &browser)],
        )
        .await;
    assert_eq!(revoked.status(), 200);
    let disabled = w
        .identity
        .admin(
            reqwest::Method::DELETE,
            &format!("/tenants/acme/clients/{}", w.machine.0),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(disabled.status(), 204);

    let started = Instant::now();
    while w.auth(Some(&machine), None).await.status() == 200
        || w.auth(Some(&browser), Some("https://app.acme.test"))
            .await
            .status()
            == 200
    {
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "still admitted after 1 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn the_websocket_gate_upgrades_valid_tokens_and_echoes() {
    let w = world(900).await;
    let machine = w.machine_token().await;

    let (mut socket, _) = w.connect(&machine, false).await.unwrap();
    socket.send(Message::text("hello")).await.unwrap();
    let echoed = socket.next().await.unwrap().unwrap();
    assert_eq!(echoed, Message::text("hello"));

    // Browsers put the token in the subprotocol list; the server picks
    // `keysilo` and never echoes the token.
    let browser_machine = w.machine_token().await;
    let (_, response) = w.connect(&browser_machine, true).await.unwrap();
    assert_eq!(response.headers()["sec-websocket-protocol"], "keysilo");

    match w.connect("garbage", false).await {
        Err(tungstenite::Error::Http(response)) => assert_eq!(response.status(), 401),
        other => panic!("expected a 401 before the upgrade, got {other:?}"),
    }
}

#[tokio::test]
async fn revoking_the_key_closes_live_sessions_with_1008_within_a_second() {
    let w = world(900).await;
    let token = w.machine_token().await;
    let (mut socket, _) = w.connect(&token, false).await.unwrap();
    let kid = w.identity.keys("acme").await[0]["kid"]
        .as_str()
        .unwrap()
        .to_owned();

    let response = w
        .identity
        .admin_post(&format!("/tenants/acme/keys/{kid}/revoke"), json!({}))
        .await;
    assert_eq!(response.status(), 200);
    let returned = Instant::now();

    assert_eq!(
        closed_with(&mut socket, Duration::from_secs(1)).await,
        Some(1008)
    );
    println!(
        "closed {:?} after the admin call returned",
        returned.elapsed()
    );
    assert_eq!(w.auth(Some(&token), None).await.status(), 401);
    let metrics = reqwest::get(format!("http://{}/metrics", w.edge))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("keysilo_edge_revocation_lag_seconds_count"),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"keysilo_edge_sessions_closed_total{reason="revoked"} 1"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn disabling_the_user_closes_its_sessions_with_1008() {
    let w = world(900).await;
    let token = w.browser_token().await;
    let mut request = format!("ws://{}/ws", w.edge).into_client_request().unwrap();
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
        .headers_mut()
        .insert("origin", "https://app.acme.test".parse().unwrap());
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();

    let response = w
        .identity
        .admin(
            reqwest::Method::DELETE,
            &format!("/tenants/acme/users/{}", w.user),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);

    assert_eq!(
        closed_with(&mut socket, Duration::from_secs(1)).await,
        Some(1008)
    );
}

#[tokio::test]
async fn a_session_closes_with_1008_when_its_token_expires() {
    let w = world(5).await;
    let token = w.machine_token().await;
    let (mut socket, _) = w.connect(&token, false).await.unwrap();

    assert_eq!(
        closed_with(&mut socket, Duration::from_secs(8)).await,
        Some(1008)
    );
}

#[tokio::test]
async fn random_kids_cause_at_most_one_jwks_fetch_per_interval() {
    let w = world(900).await;
    let machine = w.machine_token().await;
    assert_eq!(w.auth(Some(&machine), None).await.status(), 200);
    use base64::Engine as _;
    let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let parts: Vec<&str> = machine.split('.').collect();
    let fetches = |metrics: &str| -> u64 {
        metrics
            .lines()
            .filter(|l| {
                l.starts_with("keysilo_http_requests_total{")
                    && l.contains(r#"route="/{tenant}/.well-known/jwks""#)
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    };
    let before = fetches(&w.identity.get("/metrics").await.text().await.unwrap());

    let flood: Vec<_> = (0..30)
        .map(|i| {
            let header = json!({ "alg": "RS256", "typ": "at+jwt", "kid": format!("random-{i}") });
            let forged = format!(
                "{}.{}.{}",
                engine.encode(header.to_string()),
                parts[1],
                parts[2]
            );
            let edge = w.edge.clone();
            async move {
                reqwest::Client::new()
                    .get(format!("http://{edge}/auth"))
                    .bearer_auth(forged)
                    .send()
                    .await
                    .unwrap()
                    .status()
            }
        })
        .collect();
    let statuses = futures_util::future::join_all(flood).await;

    assert!(statuses.iter().all(|s| *s == 401));
    let after = fetches(&w.identity.get("/metrics").await.text().await.unwrap());
    assert!(
        after - before <= 1,
        "{} JWKS fetches for 30 unknown kids",
        after - before
    );
}

#[tokio::test]
async fn revocations_made_before_the_edge_started_come_from_the_snapshot() {
    let w = world(900).await;
    let token = w.machine_token().await;
    let live = w.browser_token().await;
    // Disable the client, then start a second edge that never saw the event.
    let disabled = w
        .identity
        .admin(
            reqwest::Method::DELETE,
            &format!("/tenants/acme/clients/{}", w.machine.0),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(disabled.status(), 204);
    let second = start_edge(&w.identity, redis_port(), "").await;

    let auth = reqwest::Client::new().get(format!("http://{second}/auth"));
    let revoked = auth.try_clone().unwrap().bearer_auth(&token).send();
    let revoked = revoked.await.unwrap().status();
    let admitted = auth
        .bearer_auth(&live)
        .header("origin", "https://app.acme.test")
        .send();
    let admitted = admitted.await.unwrap().status();

    // The revoked client's token is refused; an edge that refused
    // everything would fail on the live one, which is admitted.
    assert_eq!(revoked, 401);
    assert_eq!(admitted, 200);
}

#[tokio::test]
async fn without_redis_the_edge_polls_the_snapshot_and_still_learns_revocations() {
    let w = world(900).await;
    // An edge whose Redis does not exist: it can only poll.
    let dead_redis = crate::helpers::free_port();
    let edge = start_edge(&w.identity, dead_redis, "poll_interval_seconds = 1").await;
    let token = w.machine_token().await;
    let auth = |edge: String, token: String| async move {
        reqwest::Client::new()
            .get(format!("http://{edge}/auth"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .status()
    };
    assert_eq!(auth(edge.clone(), token.clone()).await, 200);

    w.identity
        .admin(
            reqwest::Method::DELETE,
            &format!("/tenants/acme/clients/{}", w.machine.0),
        )
        .send()
        .await
        .unwrap();

    let started = Instant::now();
    while auth(edge.clone(), token.clone()).await == 200 {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the poll never caught the revocation"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn the_query_parameter_is_refused_unless_enabled() {
    let w = world(900).await;
    let token = w.machine_token().await;
    let url = |edge: &str| format!("ws://{edge}/ws?access_token={token}");

    match tokio_tungstenite::connect_async(url(&w.edge)).await {
        Err(tungstenite::Error::Http(response)) => assert_eq!(response.status(), 401),
        other => panic!("expected 401, got {other:?}"),
    }
    let enabled = start_edge(&w.identity, redis_port(), "allow_query_token = true").await;
    assert!(
        tokio_tungstenite::connect_async(url(&enabled))
            .await
            .is_ok()
    );
}

/// An upstream WebSocket that upper-cases text and reports the tenant the
/// edge said the caller belongs to.
#[allow(
    clippy::result_large_err,
    reason = "the handshake callback's signature is tungstenite's"
)]
async fn upstream_server() -> (u16, tokio::sync::mpsc::UnboundedReceiver<String>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (seen_tx, seen) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let seen_tx = seen_tx.clone();
            tokio::spawn(async move {
                let callback =
                    |request: &tungstenite::handshake::server::Request,
                     response: tungstenite::handshake::server::Response| {
                        let tenant = request
                            .headers()
                            .get("x-auth-tenant")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default()
                            .to_owned();
                        let _ = seen_tx.send(tenant);
                        Ok(response)
                    };
                let mut socket = tokio_tungstenite::accept_hdr_async(stream, callback)
                    .await
                    .unwrap();
                while let Some(Ok(message)) = socket.next().await {
                    if let Message::Text(text) = message {
                        let _ = socket
                            .send(Message::text(text.as_str().to_uppercase()))
                            .await;
                    }
                }
            });
        }
    });
    (port, seen)
}

#[tokio::test]
async fn sessions_are_relayed_to_the_upstream_and_still_closed_on_revocation() {
    let w = world(900).await;
    let (port, mut seen) = upstream_server().await;
    let edge = start_edge(
        &w.identity,
        redis_port(),
        &format!("upstream_url = \"ws://127.0.0.1:{port}\""),
    )
    .await;
    let token = w.machine_token().await;
    let mut request = format!("ws://{edge}/ws").into_client_request().unwrap();
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();

    socket.send(Message::text("relay me")).await.unwrap();
    assert_eq!(
        socket.next().await.unwrap().unwrap(),
        Message::text("RELAY ME")
    );
    assert_eq!(seen.recv().await.as_deref(), Some("acme"));

    let kid = w.identity.keys("acme").await[0]["kid"]
        .as_str()
        .unwrap()
        .to_owned();
    w.identity
        .admin_post(&format!("/tenants/acme/keys/{kid}/revoke"), json!({}))
        .await;
    assert_eq!(
        closed_with(&mut socket, Duration::from_secs(1)).await,
        Some(1008)
    );
}

/// nginx, started by this test in the foreground with its own prefix.
struct Nginx {
    child: std::process::Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// nginx protecting a static file with `auth_request` against the edge,
/// passing the tenant back as a response header: the setup documented in
/// docs/edge.md.
async fn nginx_in_front_of(edge: &str) -> Nginx {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("www");
    std::fs::create_dir(&root).unwrap();
    std::fs::write(root.join("index.html"), "protected").unwrap();
    let port = crate::helpers::free_port();
    let conf = format!(
        r#"
        daemon off;
        master_process off;
        pid {dir}/nginx.pid;
        error_log {dir}/error.log warn;
        events {{ worker_connections 64; }}
        http {{
            access_log off;
            client_body_temp_path {dir}/body;
            proxy_temp_path {dir}/proxy;
            fastcgi_temp_path {dir}/fastcgi;
            uwsgi_temp_path {dir}/uwsgi;
            scgi_temp_path {dir}/scgi;
            server {{
                listen 127.0.0.1:{port};
                location / {{
                    auth_request /_keysilo_auth;
                    auth_request_set $keysilo_tenant $upstream_http_x_auth_tenant;
                    add_header X-Tenant $keysilo_tenant;
                    root {root};
                }}
                location = /_keysilo_auth {{
                    internal;
                    proxy_pass http://{edge}/auth;
                    proxy_pass_request_body off;
                    proxy_set_header Content-Length "";
                }}
            }}
        }}
        "#,
        dir = dir.path().display(),
        root = root.display(),
    );
    let conf_path = dir.path().join("nginx.conf");
    std::fs::write(&conf_path, conf).unwrap();
    let binary = if std::path::Path::new("/usr/sbin/nginx").exists() {
        "/usr/sbin/nginx"
    } else {
        "nginx"
    };
    let child = std::process::Command::new(binary)
        .args([
            "-p",
            dir.path().to_str().unwrap(),
            "-c",
            conf_path.to_str().unwrap(),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("nginx (installed by scripts/stack up)");
    let nginx = Nginx {
        child,
        port,
        _dir: dir,
    };
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return nginx;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("nginx did not start");
}

#[tokio::test]
async fn nginx_auth_request_admits_only_what_the_edge_admits() {
    let w = world(900).await;
    let nginx = nginx_in_front_of(&w.edge).await;
    let url = format!("http://127.0.0.1:{}/", nginx.port);
    let client = reqwest::Client::new();
    let machine = w.machine_token().await;

    let anonymous = client.get(&url).send().await.unwrap();
    let forged = client
        .get(&url)
        .bearer_auth("not.a.token")
        .send()
        .await
        .unwrap();
    let admitted = client.get(&url).bearer_auth(&machine).send().await.unwrap();
    let from_browser = client
        .get(&url)
        .bearer_auth(&machine)
        .header("origin", "https://app.acme.test")
        .send()
        .await
        .unwrap();

    assert_eq!(anonymous.status(), 401);
    assert_eq!(forged.status(), 401);
    assert_eq!(from_browser.status(), 403);
    assert_eq!(admitted.status(), 200);
    assert_eq!(admitted.headers()["x-tenant"], "acme");
    assert_eq!(admitted.text().await.unwrap(), "protected");
}

#[tokio::test]
async fn one_admin_call_closes_sessions_on_every_edge_within_a_second() {
    let w = world(900).await;
    let second = start_edge(&w.identity, redis_port(), "").await;
    let token = w.machine_token().await;
    let (mut on_first, _) = w.connect(&token, false).await.unwrap();
    let mut request = format!("ws://{second}/ws").into_client_request().unwrap();
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let (mut on_second, _) = tokio_tungstenite::connect_async(request).await.unwrap();

    let response = w
        .identity
        .admin(reqwest::Method::DELETE, "/tenants/acme")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);

    let (first, second) = tokio::join!(
        closed_with(&mut on_first, Duration::from_secs(1)),
        closed_with(&mut on_second, Duration::from_secs(1)),
    );
    assert_eq!((first, second), (Some(1008), Some(1008)));
}

#[tokio::test]
async fn an_unreadable_or_repeated_origin_still_counts_as_a_browser() {
    let w = world(900).await;
    let machine = w.machine_token().await;
    let client = reqwest::Client::new();
    let url = format!("http://{}/auth", w.edge);

    let unreadable = client
        .get(&url)
        .bearer_auth(&machine)
        .header(
            "origin",
            reqwest::header::HeaderValue::from_bytes(b"https://\xffexample").unwrap(),
        )
        .send()
        .await
        .unwrap();
    let browser = w.browser_token().await;
    let repeated = client
        .get(&url)
        .bearer_auth(&browser)
        .header("origin", "https://app.acme.test")
        .header("origin", "https://app.acme.test")
        .send()
        .await
        .unwrap();

    assert_eq!(unreadable.status(), 403);
    assert_eq!(repeated.status(), 403);
}

#[tokio::test]
async fn edge_readiness_follows_redis_and_the_identity_service() {
    let w = world(900).await;
    let ready = reqwest::get(format!("http://{}/readyz", w.edge))
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);

    let without_redis = start_edge(&w.identity, crate::helpers::free_port(), "").await;
    let response = reqwest::get(format!("http://{without_redis}/readyz"))
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(
        body["checks"],
        json!({ "redis": "down", "identity": "up", "snapshot": "merged" })
    );

    // And an edge whose identity service does not answer.
    let nobody = format!("http://127.0.0.1:{}", crate::helpers::free_port());
    let without_identity =
        crate::helpers::start_edge_at(&w.identity, &nobody, redis_port(), "", "").await;
    let response = reqwest::get(format!("http://{without_identity}/readyz"))
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(
        body["checks"],
        json!({ "redis": "up", "identity": "down", "snapshot": "missing" })
    );
}

#[tokio::test]
async fn an_edge_admits_nothing_until_its_first_revocation_snapshot_has_merged() {
    // An identity service that does not know the edge's key: keys are
    // public, so tokens verify, but the snapshot is refused.
    let database = create_database().await;
    let identity = spawn_app_with(TestConfig::new(&database), database).await;
    identity.create_tenant("acme").await;
    let machine = identity
        .create_client(
            "acme",
            json!({ "name": "m2m", "grant_types": ["client_credentials"], "audience": ["data-plane"] }),
        )
        .await;
    let response = identity
        .token(
            "acme",
            (&machine.0, &machine.1),
            &[("grant_type", "client_credentials")],
        )
        .await;
    let body: serde_json::Value = response.json().await.unwrap();
    let token = body["access_token"].as_str().unwrap().to_owned();
    let edge = start_edge(&identity, redis_port(), "").await;

    let auth = reqwest::Client::new()
        .get(format!("http://{edge}/auth"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(auth.status(), 503);
    assert_eq!(auth.headers()["retry-after"], "1");
    let mut request = format!("ws://{edge}/ws").into_client_request().unwrap();
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    match tokio_tungstenite::connect_async(request).await {
        Err(tungstenite::Error::Http(response)) => assert_eq!(response.status(), 503),
        other => panic!("the upgrade must be refused with 503: {other:?}"),
    }
    let ready = reqwest::get(format!("http://{edge}/readyz")).await.unwrap();
    assert_eq!(ready.status(), 503);
    let body: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(body["checks"]["snapshot"], "missing", "{body}");
    let metrics = reqwest::get(format!("http://{edge}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"keysilo_edge_snapshot_fetches_total{result="ok"} 0"#),
        "{metrics}"
    );
    assert!(
        !metrics.contains(r#"keysilo_edge_snapshot_fetches_total{result="failed"} 0"#),
        "{metrics}"
    );
}
