//! TLS on the listeners: protocol versions, hot certificate reload, the
//! client-certificate modes, RFC 8705 `tls_client_auth` with bound tokens,
//! and the edge enforcing the binding.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::Engine as _;
use keysilo_identity::startup::Application;
use keysilo_tls::certs::{self, GenerateOptions};
use openssl::ssl::{SslConnector, SslMethod, SslStream, SslVerifyMode, SslVersion};
use serde_json::json;

use crate::helpers::{Api, TestApp, TestConfig, create_database, redis_port, start_edge_with};

/// A development CA with a server certificate and client certificates.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new(clients: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        certs::generate(
            dir.path(),
            &GenerateOptions {
                server_names: vec!["localhost".into(), "127.0.0.1".into()],
                clients: clients.iter().map(|c| (*c).to_owned()).collect(),
                days: 30,
            },
        )
        .unwrap();
        Self { dir }
    }

    fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    fn read(&self, file: &str) -> Vec<u8> {
        std::fs::read(self.path(file)).unwrap()
    }

    /// A reqwest client that trusts this CA and, if given, presents the
    /// client certificate of `client`.
    fn http(&self, client: Option<(&Pki, &str)>) -> reqwest::Client {
        let mut builder = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&self.read("ca.crt")).unwrap());
        if let Some((pki, name)) = client {
            let identity = reqwest::Identity::from_pkcs8_pem(
                &pki.read(&format!("client-{name}.crt")),
                &pki.read(&format!("client-{name}.key")),
            )
            .unwrap();
            builder = builder.identity(identity);
        }
        builder.build().unwrap()
    }

    /// `x5t#S256` of a client certificate (RFC 8705 §3.1: base64url of
    /// the SHA-256 of its DER), computed here from the file rather than
    /// by the code under test.
    fn thumbprint(&self, client: &str) -> String {
        let pem = std::fs::read(self.path(&format!("client-{client}.crt"))).unwrap();
        let der = openssl::x509::X509::from_pem(&pem)
            .unwrap()
            .to_der()
            .unwrap();
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(openssl::sha::sha256(&der))
    }
}

/// A `[tls]` section for `pki`'s server certificate.
fn tls_section(pki: &Pki, client_auth: &str, cas: &[&Path], min_version: &str) -> String {
    let cas: Vec<String> = cas
        .iter()
        .map(|p| format!("{:?}", p.display().to_string()))
        .collect();
    format!(
        r#"
        [tls]
        enabled = true
        cert_file = {cert:?}
        key_file = {key:?}
        min_version = "{min_version}"
        reload_interval_seconds = 1
        client_auth = "{client_auth}"
        client_ca_files = [{cas}]
        "#,
        cert = pki.path("server.crt").display().to_string(),
        key = pki.path("server.key").display().to_string(),
        cas = cas.join(", "),
    )
}

/// The identity service over HTTPS; `client` is what its `TestApp` presents.
async fn spawn_tls(
    pki: &Pki,
    client_auth: &str,
    cas: &[&Path],
    min_version: &str,
) -> (TestApp, u16) {
    let database = create_database().await;
    let mut config = TestConfig::new(&database).with_edge_key();
    config
        .toml
        .push_str(&tls_section(pki, client_auth, cas, min_version));
    let application = Application::build(config.settings()).await.unwrap();
    let port = application.port();
    let state = application.state().clone();
    tokio::spawn(application.run_until_stopped());
    let app = TestApp {
        api: Api::new(format!("https://127.0.0.1:{port}"), pki.http(None)),
        database,
        state,
    };
    (app, port)
}

/// A handshake with `port` offering only versions `min..=max`, presenting
/// `client`'s certificate if given: the version and the server
/// certificate's serial, or OpenSSL's error.
fn handshake(
    port: u16,
    versions: (SslVersion, SslVersion),
    client: Option<(&Pki, &str)>,
) -> Result<(String, String, SslStream<TcpStream>), String> {
    let mut builder = SslConnector::builder(SslMethod::tls_client()).unwrap();
    // Low enough for this client to really offer TLS 1.1.
    builder.set_security_level(0);
    builder.set_cipher_list("DEFAULT:@SECLEVEL=0").unwrap();
    builder.set_min_proto_version(Some(versions.0)).unwrap();
    builder.set_max_proto_version(Some(versions.1)).unwrap();
    builder.set_verify(SslVerifyMode::NONE);
    if let Some((pki, name)) = client {
        builder
            .set_certificate_file(
                pki.path(&format!("client-{name}.crt")),
                openssl::ssl::SslFiletype::PEM,
            )
            .unwrap();
        builder
            .set_private_key_file(
                pki.path(&format!("client-{name}.key")),
                openssl::ssl::SslFiletype::PEM,
            )
            .unwrap();
    }
    let connector = builder.build();
    let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut stream = connector
        .configure()
        .unwrap()
        .verify_hostname(false)
        .connect("localhost", stream)
        .map_err(|err| err.to_string())?;
    let version = stream.ssl().version_str().to_owned();
    let serial = stream
        .ssl()
        .peer_certificate()
        .unwrap()
        .serial_number()
        .to_bn()
        .unwrap()
        .to_hex_str()
        .unwrap()
        .to_string();
    // TLS 1.3 reports a refused client certificate after the handshake:
    // make one request so that such a refusal shows here.
    get_on(&mut stream, "/healthz")?;
    Ok((version, serial, stream))
}

/// One HTTP/1.1 request on an open TLS stream; the status line.
fn get_on(stream: &mut SslStream<TcpStream>, path: &str) -> Result<String, String> {
    write!(stream, "GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").map_err(|e| e.to_string())?;
    let mut buffer = [0u8; 4096];
    let read = stream.read(&mut buffer).map_err(|e| e.to_string())?;
    if read == 0 {
        return Err("connection closed".into());
    }
    let text = String::from_utf8_lossy(buffer.get(..read).unwrap());
    Ok(text.lines().next().unwrap_or_default().to_owned())
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

/// The authorization server metadata of tenant `acme`.
async fn metadata(app: &TestApp) -> serde_json::Value {
    app.get("/acme/.well-known/oauth-authorization-server")
        .await
        .json()
        .await
        .unwrap()
}

const TLS13: (SslVersion, SslVersion) = (SslVersion::TLS1_3, SslVersion::TLS1_3);
const TLS12: (SslVersion, SslVersion) = (SslVersion::TLS1_2, SslVersion::TLS1_2);
const TLS11: (SslVersion, SslVersion) = (SslVersion::TLS1_1, SslVersion::TLS1_1);

#[tokio::test]
async fn tls_1_3_is_served_and_older_versions_are_refused() {
    let pki = Pki::new(&[]);
    let (app, port) = spawn_tls(&pki, "none", &[], "1.3").await;
    let (version, _, _) = blocking(move || handshake(port, TLS13, None))
        .await
        .unwrap();
    assert_eq!(version, "TLSv1.3");
    for versions in [TLS12, TLS11] {
        let refused = blocking(move || handshake(port, versions, None)).await;
        assert!(refused.is_err(), "{versions:?} was accepted");
    }
    // HTTPS end to end; without client certificates, no RFC 8705.
    app.create_tenant("acme").await;
    let metadata = metadata(&app).await;
    assert!(
        metadata
            .get("tls_client_certificate_bound_access_tokens")
            .is_none()
    );

    // With 1.2 allowed, this client's TLS 1.2 works and TLS 1.1 still not.
    let (_, port) = spawn_tls(&pki, "none", &[], "1.2").await;
    let (version, _, _) = blocking(move || handshake(port, TLS12, None))
        .await
        .unwrap();
    assert_eq!(version, "TLSv1.2");
    assert!(
        blocking(move || handshake(port, TLS11, None))
            .await
            .is_err()
    );

    // Lower minimums do not even start.
    let mut config = TestConfig::new("unused");
    config.toml.push_str(&tls_section(&pki, "none", &[], "1.1"));
    let err = keysilo_config::Settings::from_sources(Some(&config.toml), &config.env).unwrap_err();
    assert!(err.to_string().contains("tls.min_version"), "{err}");
}

/// Waits until new handshakes see a serial other than `old`.
async fn serial_change(port: u16, old: &str) -> Option<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let (_, serial, _) = blocking(move || handshake(port, TLS13, None))
            .await
            .unwrap();
        if serial != old {
            return Some(serial);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

async fn tls_reloads(app: &TestApp, result: &str) -> String {
    let metrics = app.get("/metrics").await.text().await.unwrap();
    metrics
        .lines()
        .find(|l| l.starts_with(&format!("keysilo_tls_reloads_total{{result=\"{result}\"}}")))
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn a_changed_certificate_is_served_without_restart_and_a_broken_one_is_refused() {
    let pki = Pki::new(&[]);
    let (app, port) = spawn_tls(&pki, "none", &[], "1.3").await;
    let (_, first, mut open) = blocking(move || handshake(port, TLS13, None))
        .await
        .unwrap();
    assert_eq!(first, app.state.tls.as_ref().unwrap().serial());

    // A renewal writes a new certificate and key over the old files.
    certs::generate(
        pki.dir.path(),
        &GenerateOptions {
            server_names: vec!["localhost".into(), "127.0.0.1".into()],
            clients: vec![],
            days: 30,
        },
    )
    .unwrap();
    let second = serial_change(port, &first)
        .await
        .expect("the new certificate is served");
    // The connection opened before the swap carries on.
    let (status, open) = blocking(move || (get_on(&mut open, "/healthz"), open)).await;
    assert_eq!(status.unwrap(), "HTTP/1.1 200 OK");
    drop(open);
    assert!(tls_reloads(&app, "ok").await.ends_with(" 1"));

    // A corrupt certificate is refused; the last good one stays.
    std::fs::write(
        pki.path("server.crt"),
        b"-----BEGIN CERTIFICATE-----\nbroken\n",
    )
    .unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (_, serial, _) = blocking(move || handshake(port, TLS13, None))
        .await
        .unwrap();
    assert_eq!(serial, second);
    assert!(tls_reloads(&app, "error").await.ends_with(" 1"));

    // So is a certificate that does not match the key.
    let other = Pki::new(&[]);
    std::fs::copy(other.path("server.crt"), pki.path("server.crt")).unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (_, serial, _) = blocking(move || handshake(port, TLS13, None))
        .await
        .unwrap();
    assert_eq!(serial, second);
    assert!(tls_reloads(&app, "error").await.ends_with(" 2"));
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains("keysilo_tls_certificate_days_remaining{certificate=\"server\"} 29.9"),
        "{metrics}"
    );
}

/// What the identity service makes of a `tls_client_auth` client presenting
/// `client`: `Some(true)` a token, `Some(false)` `invalid_client`, `None`
/// no HTTP answer at all (the handshake was refused).
async fn certificate_login(app: &TestApp, http: &reqwest::Client, client_id: &str) -> Option<bool> {
    let response = http
        .post(format!("{}/acme/oauth2/token", app.address))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", client_id),
        ])
        .send()
        .await
        .ok()?;
    match response.status().as_u16() {
        200 => Some(true),
        401 => Some(false),
        other => panic!("unexpected {other}: {}", response.text().await.unwrap()),
    }
}

async fn certificate_client(app: &TestApp, registration: serde_json::Value) -> serde_json::Value {
    let response = app.admin_post("/tenants/acme/clients", registration).await;
    assert_eq!(response.status(), 201);
    response.json().await.unwrap()
}

#[tokio::test]
async fn each_client_certificate_mode_admits_what_it_should() {
    let pki = Pki::new(&["machine-1"]);
    // Same names, another CA: proves nothing.
    let forged = Pki::new(&["machine-1"]);
    let ca = pki.path("ca.crt");
    let dn = "CN=machine-1,O=Keysilo development";
    // (mode, then what no certificate, the trusted one and the forged one
    // get): Some(true) a token, Some(false) `invalid_client`, None a
    // refused handshake. `request` takes any certificate but only a
    // verified one names a client.
    let cases = [
        ("request", (Some(false), Some(true), Some(false))),
        ("verify_if_given", (Some(false), Some(true), None)),
        ("require", (None, Some(true), None)),
    ];
    for (mode, expected) in cases {
        let (mut app, _) = spawn_tls(&pki, mode, &[&ca], "1.3").await;
        app.api.client = pki.http(Some((&pki, "machine-1")));
        app.create_tenant("acme").await;
        let client = certificate_client(
            &app,
            json!({
                "name": "m2m", "grant_types": ["client_credentials"],
                "token_endpoint_auth_method": "tls_client_auth",
                "tls_client_auth_subject_dn": dn,
            }),
        )
        .await;
        let id = client["client_id"].as_str().unwrap();
        let outcomes = (
            certificate_login(&app, &pki.http(None), id).await,
            certificate_login(&app, &pki.http(Some((&pki, "machine-1"))), id).await,
            certificate_login(&app, &pki.http(Some((&forged, "machine-1"))), id).await,
        );
        assert_eq!(outcomes, expected, "mode {mode}");
    }

    // Two CA bundles at once: both CAs' clients get in, a third's not.
    let third = Pki::new(&["machine-1"]);
    let (forged_ca, ca) = (forged.path("ca.crt"), pki.path("ca.crt"));
    let (mut app, _) = spawn_tls(&pki, "require", &[&ca, &forged_ca], "1.3").await;
    app.api.client = pki.http(Some((&pki, "machine-1")));
    app.create_tenant("acme").await;
    let client = certificate_client(
        &app,
        json!({
            "name": "m2m", "grant_types": ["client_credentials"],
            "token_endpoint_auth_method": "tls_client_auth",
            "tls_client_auth_san_dns": "machine-1",
        }),
    )
    .await;
    let id = client["client_id"].as_str().unwrap();
    for (issuer, expected) in [(&pki, Some(true)), (&forged, Some(true)), (&third, None)] {
        let http = pki.http(Some((issuer, "machine-1")));
        assert_eq!(certificate_login(&app, &http, id).await, expected);
    }
}

/// An edge over TLS (`request` mode) in front of `identity`; its port.
async fn start_tls_edge(identity: &TestApp, pki: &Pki) -> u16 {
    let ca = pki.path("ca.crt");
    let extra = format!("identity_ca_file = {:?}", ca.display().to_string());
    let tls = tls_section(pki, "request", &[&ca], "1.3");
    let address = start_edge_with(identity, redis_port(), &extra, &tls).await;
    address.rsplit(':').next().unwrap().parse().unwrap()
}

#[tokio::test]
async fn a_tls_client_auth_client_gets_a_bound_token_that_the_edge_enforces() {
    let pki = Pki::new(&["machine-1", "machine-2"]);
    let (app, _) = spawn_tls(&pki, "verify_if_given", &[&pki.path("ca.crt")], "1.3").await;
    app.create_tenant("acme").await;

    // The metadata offers RFC 8705.
    let metadata = metadata(&app).await;
    assert_eq!(metadata["tls_client_certificate_bound_access_tokens"], true);
    assert!(
        metadata["token_endpoint_auth_methods_supported"]
            .as_array()
            .unwrap()
            .contains(&json!("tls_client_auth"))
    );

    // Registration: exactly one tls_client_auth_* parameter, and valid.
    for bad in [
        json!({ "token_endpoint_auth_method": "tls_client_auth" }),
        json!({ "token_endpoint_auth_method": "tls_client_auth",
                "tls_client_auth_san_dns": "a", "tls_client_auth_subject_dn": "CN=a" }),
        json!({ "token_endpoint_auth_method": "tls_client_auth", "tls_client_auth_subject_dn": "CN" }),
        json!({ "token_endpoint_auth_method": "tls_client_auth", "tls_client_auth_san_ip": "x" }),
        json!({ "tls_client_auth_san_dns": "machine-1" }),
        json!({ "token_endpoint_auth_method": "private_key_jwt" }),
    ] {
        let mut body = json!({ "name": "m2m", "grant_types": ["client_credentials"] });
        body.as_object_mut()
            .unwrap()
            .extend(bad.as_object().unwrap().clone());
        let response = app.admin_post("/tenants/acme/clients", body.clone()).await;
        assert_eq!(response.status(), 400, "{body}");
    }
    let client = certificate_client(
        &app,
        json!({
            "name": "m2m", "grant_types": ["client_credentials"], "audience": ["data-plane"],
            "token_endpoint_auth_method": "tls_client_auth",
            "tls_client_auth_subject_dn": "cn=Machine-1, o=Keysilo Development",
        }),
    )
    .await;
    assert!(client.get("client_secret").is_none(), "{client}");
    assert_eq!(client["tls_client_certificate_bound_access_tokens"], true);
    assert_eq!(
        client["tls_client_auth_subject_dn"],
        "CN=Machine-1,O=Keysilo Development"
    );
    let id = client["client_id"].as_str().unwrap();

    // The certificate is the credential: another certificate of the same
    // CA, or none, is `invalid_client`; a secret is no substitute.
    let mtls = pki.http(Some((&pki, "machine-1")));
    let token_request = |http: &reqwest::Client, form: Vec<(&'static str, String)>| {
        http.post(format!("{}/acme/oauth2/token", app.address))
            .form(&form)
            .send()
    };
    let grant = || {
        vec![
            ("grant_type", "client_credentials".to_owned()),
            ("client_id", id.to_owned()),
        ]
    };
    for http in [pki.http(None), pki.http(Some((&pki, "machine-2")))] {
        let response = token_request(&http, grant()).await.unwrap();
        assert_eq!(response.status(), 401);
    }
    let mut with_secret = grant();
    with_secret.push(("client_secret", "guess".to_owned()));
    assert_eq!(
        token_request(&mtls, with_secret).await.unwrap().status(),
        401
    );
    let rotate = app
        .admin_post(&format!("/tenants/acme/clients/{id}/secret"), json!({}))
        .await;
    assert_eq!(rotate.status(), 400);

    // The token is bound to the certificate's thumbprint.
    let response = token_request(&mtls, grant()).await.unwrap();
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    let token = body["access_token"].as_str().unwrap().to_owned();
    let claims: serde_json::Value = serde_json::from_slice(
        &base64::Engine::decode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            token.split('.').nth(1).unwrap(),
        )
        .unwrap(),
    )
    .unwrap();
    let thumbprint = pki.thumbprint("machine-1");
    assert_eq!(claims["cnf"]["x5t#S256"], thumbprint.as_str());
    assert_ne!(thumbprint, pki.thumbprint("machine-2"));

    // Introspection reports the binding (RFC 8705 §3.2).
    let response = mtls
        .post(format!("{}/acme/oauth2/introspect", app.address))
        .form(&[("client_id", id), ("token", token.as_str())])
        .send()
        .await
        .unwrap();
    let introspected: serde_json::Value = response.json().await.unwrap();
    assert_eq!(introspected["active"], true);
    assert_eq!(introspected["cnf"]["x5t#S256"], thumbprint.as_str());

    // The edge takes the token only with the same certificate.
    let edge = start_tls_edge(&app, &pki).await;
    let auth = |http: reqwest::Client| {
        let token = token.clone();
        async move {
            http.get(format!("https://127.0.0.1:{edge}/auth"))
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
        }
    };
    let accepted = auth(pki.http(Some((&pki, "machine-1")))).await;
    assert_eq!(accepted.status(), 200);
    assert_eq!(accepted.headers()["x-client-identity"], "machine-1");
    assert_eq!(accepted.headers()["x-auth-client"], id);
    for http in [pki.http(None), pki.http(Some((&pki, "machine-2")))] {
        let refused = auth(http).await;
        assert_eq!(refused.status(), 401);
        assert_eq!(
            refused.headers()["www-authenticate"],
            r#"Bearer error="invalid_token""#
        );
    }
    // So does the WebSocket gate.
    let ws = pki
        .http(None)
        .get(format!("https://127.0.0.1:{edge}/ws"))
        .bearer_auth(&token)
        .header("Connection", "Upgrade")
        .header("Upgrade", "websocket")
        .header("Sec-WebSocket-Version", "13")
        .header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
        .send()
        .await
        .unwrap();
    assert_eq!(ws.status(), 401);

    // A secret client's unbound token needs no certificate.
    let (secret_id, secret) = app
        .create_client(
            "acme",
            json!({ "name": "plain", "grant_types": ["client_credentials"], "audience": ["data-plane"] }),
        )
        .await;
    let response = app
        .token(
            "acme",
            (&secret_id, &secret),
            &[("grant_type", "client_credentials")],
        )
        .await;
    let body: serde_json::Value = response.json().await.unwrap();
    let plain = body["access_token"].as_str().unwrap();
    let response = pki
        .http(None)
        .get(format!("https://127.0.0.1:{edge}/auth"))
        .bearer_auth(plain)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers().get("x-client-identity").is_none());
}

#[tokio::test]
async fn the_certs_command_generates_describes_and_validates() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        std::process::Command::new(crate::helpers::identity_binary())
            .args(args)
            .env_clear()
            .output()
            .unwrap()
    };
    let out = dir.path().to_str().unwrap();
    let generated = run(&[
        "certs",
        "generate",
        "--dir",
        out,
        "--server-name",
        "identity.test",
        "--client",
        "edge",
    ]);
    assert!(generated.status.success(), "{generated:?}");
    let info = run(&["certs", "info", "--json", &format!("{out}/server.crt")]);
    assert!(info.status.success());
    let info: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
    assert_eq!(info[0]["dns_names"], json!(["identity.test"]));
    // 365 days from a moment ago: 364 whole days, or 365 within a second.
    let days = info[0]["days_remaining"].as_i64().unwrap();
    assert!((364..=365).contains(&days), "{days}");
    assert!(
        info[0]["subject"]
            .as_str()
            .unwrap()
            .starts_with("CN=identity.test")
    );
    let text = run(&["certs", "info", &format!("{out}/client-edge.crt")]);
    assert!(String::from_utf8_lossy(&text.stdout).contains("days remaining: 36"));

    let valid = run(&[
        "certs",
        "validate",
        "--cert",
        &format!("{out}/server.crt"),
        "--key",
        &format!("{out}/server.key"),
        "--ca",
        &format!("{out}/ca.crt"),
        "--json",
    ]);
    assert!(valid.status.success(), "{valid:?}");
    let report: serde_json::Value = serde_json::from_slice(&valid.stdout).unwrap();
    assert_eq!(report["valid"], true);
    let mismatched = run(&[
        "certs",
        "validate",
        "--cert",
        &format!("{out}/server.crt"),
        "--key",
        &format!("{out}/client-edge.key"),
        "--ca",
        &format!("{out}/ca.crt"),
    ]);
    assert_eq!(mismatched.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&mismatched.stdout).contains("FAIL key"));
    let missing = run(&["certs", "info", &format!("{out}/nothing.crt")]);
    assert_eq!(missing.status.code(), Some(2));
}

/// A redis-server of this test's own, serving TLS only.
struct TlsRedis(std::process::Child);

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn redis_over_tls_is_verified_against_the_configured_ca() {
    let pki = Pki::new(&[]);
    let port = crate::helpers::free_port();
    let path = |file: &str| pki.path(file).display().to_string();
    let _redis = TlsRedis(
        std::process::Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", "0"])
            .args(["--tls-port", &port.to_string()])
            .args(["--tls-cert-file", &path("server.crt")])
            .args(["--tls-key-file", &path("server.key")])
            .args(["--tls-ca-cert-file", &path("ca.crt")])
            .args([
                "--tls-auth-clients",
                "no",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server (installed by scripts/stack up)"),
    );
    let database = create_database().await;
    let config = TestConfig::new(&database)
        .set("KEYSILO_REDIS__URL", format!("rediss://127.0.0.1:{port}"))
        .set("KEYSILO_REDIS__CA_FILE", path("ca.crt"));
    let app = crate::helpers::spawn_app_with(config, database.clone()).await;
    let mut ready = None;
    for _ in 0..50 {
        let response = app.get("/readyz").await;
        if response.status() == 200 {
            ready = Some(response.json::<serde_json::Value>().await.unwrap());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(ready.expect("ready over TLS")["checks"]["redis"], "up");
    // Locks and events go over the same connection: creating a tenant
    // takes its rotation lock.
    app.create_tenant("acme").await;

    // Without the CA the server's certificate is not trusted.
    let config = TestConfig::new(&database)
        .set("KEYSILO_REDIS__URL", format!("rediss://127.0.0.1:{port}"))
        .set("KEYSILO_DATABASE__MIGRATE_ON_START", "false");
    let untrusting = crate::helpers::spawn_app_with(config, database).await;
    assert_eq!(untrusting.get("/readyz").await.status(), 503);
}

#[tokio::test]
async fn a_certificate_bound_tenant_admin_token_works_on_the_admin_api_only_with_its_certificate() {
    let pki = Pki::new(&["admin-1", "admin-2"]);
    let (app, _) = spawn_tls(&pki, "verify_if_given", &[&pki.path("ca.crt")], "1.3").await;
    app.create_tenant("acme").await;
    app.create_user(
        "acme",
        "root",
        "correct horse battery staple",
        &["tenant-admin"],
    )
    .await;
    let console = app
        .create_client(
            "acme",
            json!({
                "name": "console", "grant_types": ["password"], "scopes": ["admin"],
                "tls_client_certificate_bound_access_tokens": true,
            }),
        )
        .await;
    let bound_http = pki.http(Some((&pki, "admin-1")));
    let response = bound_http
        .post(format!("{}/acme/oauth2/token", app.address))
        .basic_auth(&console.0, Some(&console.1))
        .form(&[
            ("grant_type", "password"),
            ("username", "root"),
            ("password", "correct horse battery staple"),
            ("scope", "admin"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    let token = body["access_token"].as_str().unwrap().to_owned();

    let call = |http: reqwest::Client| {
        let url = format!("{}/admin/v1/tenants/acme/users", app.address);
        let token = token.clone();
        async move {
            http.post(url)
                .bearer_auth(token)
                .json(&json!({ "username": "mallory", "password": "a long enough password", "roles": ["tenant-admin"] }))
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    // A leaked bound token is worthless without its certificate.
    assert_eq!(call(pki.http(None)).await, 401);
    assert_eq!(call(pki.http(Some((&pki, "admin-2")))).await, 401);
    assert_eq!(call(bound_http).await, 201);
}
