//! Secrets never leak (issue item 8). The identity and edge binaries run
//! every flow with every crate at debug level and JSON logs captured; then
//! both processes' logs, every error body (and every other body that does
//! not carry a secret by design), every response's headers and both
//! `/metrics` are scanned for every secret the test configured or created:
//! client secrets (old and new, and wrong ones attempted), passwords (wrong
//! and refused ones too), refresh tokens, whole access tokens, the admin and
//! edge keys, the client-secret pepper, the master keys (as configured and
//! as raw bytes), the database password and the tenants' private keys
//! (unwrapped from the database afterwards), plus the markers of private key
//! material in any form (PEM, PKCS#8 DER, private JWK members).
//!
//! A finding names the kind of secret, a short hash of it and where it was
//! seen, never the secret; the logs are kept (the path is in the message).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use futures_util::{SinkExt as _, StreamExt as _};
use reqwest::Method;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::{self, Message};

use crate::helpers::{
    ADMIN_KEY, Api, CapturedLogs, EdgeProcess, IdentityProcess, MASTER_KEY_V1, MASTER_KEY_V2,
    PEPPER, TestConfig, create_database, db_password, pg_port, redis_port, terminate,
};

const EDGE_KEY: &str = "leaks-edge-key-0123456789-0123456789-abcdef";
const ISSUER_BASE: &str = "https://id.keysilo.test";
const AUDIENCE: &str = "data-plane";

// ---------------------------------------------------------------------------
// The scanner.

/// One value that must never be seen.
#[derive(Debug, Clone)]
pub(crate) struct Secret {
    kind: String,
    value: String,
}

/// Text that is private key material whatever key it belongs to. These are
/// not secret themselves, so a finding may quote them.
const MARKERS: &[(&str, &str)] = &[
    ("PEM private key", "PRIVATE KEY"),
    ("PEM block", "-----BEGIN"),
    ("private JWK member", r#""d":"#),
    ("private JWK member", r#""p":"#),
    ("private JWK member", r#""q":"#),
    ("private JWK member", r#""dp":"#),
    ("private JWK member", r#""dq":"#),
    ("private JWK member", r#""qi":"#),
    ("private JWK member (JSON in a string)", r#"\"d\":"#),
    ("private JWK member (JSON in a string)", r#"\"p\":"#),
    ("private JWK member (JSON in a string)", r#"\"q\":"#),
    // The start of every PKCS#8 RSA private key after its length: version
    // 0, rsaEncryption, then the OCTET STRING holding the key.
    (
        "PKCS#8 RSA private key (hex)",
        "020100300d06092a864886f70d010101050004",
    ),
    (
        "PKCS#8 RSA private key (hex)",
        "020100300D06092A864886F70D010101050004",
    ),
    (
        "PKCS#8 RSA private key (base64)",
        "ADANBgkqhkiG9w0BAQEFAASC",
    ),
    (
        "PKCS#8 RSA private key (bytes)",
        "2, 1, 0, 48, 13, 6, 9, 42, 134, 72, 134, 247, 13, 1, 1, 1, 5, 0, 4",
    ),
];

/// Every secret of the run, in every form it could be written in.
#[derive(Default)]
pub(crate) struct Secrets {
    pub(crate) items: Vec<Secret>,
}

impl Secrets {
    /// `value` as is and, when different, form-encoded (the way it travels
    /// in a request body).
    pub(crate) fn add(&mut self, kind: &str, value: &str) {
        self.add_exact(kind, value);
        let encoded = form_encode(value);
        if encoded != value {
            self.add_exact(&format!("{kind} (form-encoded)"), &encoded);
        }
    }

    fn add_exact(&mut self, kind: &str, value: &str) {
        assert!(
            value.len() >= 6,
            "a {kind} this short cannot be scanned for"
        );
        if !self.items.iter().any(|s| s.value == value) {
            self.items.push(Secret {
                kind: kind.to_owned(),
                value: value.to_owned(),
            });
        }
    }

    /// A client secret (or a wrong one) and the HTTP Basic credentials it
    /// was sent in.
    fn add_client_secret(&mut self, kind: &str, client_id: &str, secret: &str) {
        self.add(kind, secret);
        let encoded = format!("{}:{}", form_encode(client_id), form_encode(secret));
        self.add_exact(
            &format!("{kind} (HTTP Basic credentials)"),
            &STANDARD.encode(encoded),
        );
    }

    /// The tokens of a successful token response.
    fn add_tokens(&mut self, body: &Value) {
        if let Some(token) = body["access_token"].as_str() {
            self.add_access_token("access token", token);
        }
        if let Some(token) = body["refresh_token"].as_str() {
            self.add("refresh token", token);
        }
    }

    fn add_access_token(&mut self, kind: &str, token: &str) {
        self.add(kind, token);
        if let Some(signature) = token.rsplit('.').next().filter(|s| s.len() >= 40) {
            self.add_exact(&format!("{kind} (its signature)"), signature);
        }
    }

    /// A master key as configured and as its raw bytes.
    pub(crate) fn add_master_key(&mut self, kind: &str, base64: &str) {
        self.add_exact(&format!("{kind} (base64, as configured)"), base64);
        self.add_exact(
            &format!("{kind} (base64 without padding)"),
            base64.trim_end_matches('='),
        );
        let raw = STANDARD.decode(base64).unwrap();
        self.add_exact(&format!("{kind} (hex)"), &hex(&raw));
        self.add_exact(&format!("{kind} (HEX)"), &hex(&raw).to_uppercase());
        self.add_exact(
            &format!("{kind} (base64url)"),
            &URL_SAFE_NO_PAD.encode(&raw),
        );
        self.add_exact(&format!("{kind} (bytes)"), &decimal_list(&raw));
    }

    /// A PKCS#8 RSA private key: its private members as a JWK holds them,
    /// `d` in hex, decimal and as bytes, the whole DER in base64 and every
    /// PEM line that lies inside `d`.
    fn add_private_key(&mut self, kind: &str, der: &[u8]) {
        let rsa = openssl::pkey::PKey::private_key_from_pkcs8(der)
            .unwrap()
            .rsa()
            .unwrap();
        let members = [
            ("d", rsa.d()),
            ("p", rsa.p().unwrap()),
            ("q", rsa.q().unwrap()),
            ("dp", rsa.dmp1().unwrap()),
            ("dq", rsa.dmq1().unwrap()),
            ("qi", rsa.iqmp().unwrap()),
        ];
        for (name, number) in members {
            self.add_exact(
                &format!("{kind}: JWK member {name}"),
                &URL_SAFE_NO_PAD.encode(number.to_vec()),
            );
        }
        let d = rsa.d().to_vec();
        self.add_exact(&format!("{kind}: d (hex)"), &hex(&d));
        self.add_exact(&format!("{kind}: d (HEX)"), &hex(&d).to_uppercase());
        self.add_exact(
            &format!("{kind}: d (decimal)"),
            &rsa.d().to_dec_str().unwrap(),
        );
        self.add_exact(&format!("{kind}: d (bytes)"), &decimal_list(&d[8..40]));
        let base64 = STANDARD.encode(der);
        self.add_exact(&format!("{kind}: PKCS#8 (base64)"), &base64);
        let start = der.windows(d.len()).position(|w| w == d).unwrap();
        let mut lines = 0;
        for (i, line) in base64.as_bytes().chunks(64).enumerate() {
            let first_byte = i * 64 / 4 * 3;
            if line.len() == 64 && first_byte >= start && first_byte + 48 <= start + d.len() {
                self.add_exact(
                    &format!("{kind}: a PEM line within d"),
                    std::str::from_utf8(line).unwrap(),
                );
                lines += 1;
            }
        }
        assert!(lines >= 3, "expected PEM lines within d");
    }

    fn kinds(&self) -> BTreeSet<&str> {
        self.items.iter().map(|s| s.kind.as_str()).collect()
    }
}

/// `application/x-www-form-urlencoded` encoding of one value.
fn form_encode(value: &str) -> String {
    let mut out = String::new();
    for byte in value.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'*' | b'-' | b'.' | b'_' => {
                out.push(char::from(byte));
            }
            b' ' => out.push('+'),
            other => out.push_str(&format!("%{other:02X}")),
        }
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Bytes the way `{:?}` prints a byte slice, without the brackets.
fn decimal_list(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(u8::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// A short fingerprint that names a secret in a message without showing it.
fn short_hash(value: &str) -> String {
    hex(&openssl::sha::sha256(value.as_bytes())[..6])
}

/// A secret (or key marker) seen where it must not be.
#[derive(Debug)]
pub(crate) struct Finding {
    kind: String,
    /// The secret's short hash, or the marker itself.
    what: String,
    place: String,
    line: usize,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} [{}] in {}, line {}",
            self.kind, self.what, self.place, self.line
        )
    }
}

/// Every secret and marker `text` contains, with the lines they are on.
pub(crate) fn scan(secrets: &[Secret], place: &str, text: &str) -> Vec<Finding> {
    let patterns = secrets
        .iter()
        .map(|s| {
            (
                s.kind.as_str(),
                s.value.as_str(),
                format!("#{}", short_hash(&s.value)),
            )
        })
        .chain(
            MARKERS
                .iter()
                .map(|(kind, marker)| (*kind, *marker, format!("`{marker}`"))),
        );
    let mut findings = Vec::new();
    for (kind, value, what) in patterns {
        if !text.contains(value) {
            continue;
        }
        for (n, line) in text.lines().enumerate() {
            if line.contains(value) {
                findings.push(Finding {
                    kind: kind.to_owned(),
                    what: what.clone(),
                    place: place.to_owned(),
                    line: n + 1,
                });
            }
        }
    }
    findings
}

#[test]
fn the_scanner_finds_secrets_and_key_material_in_every_form() {
    let mut secrets = Secrets::default();
    secrets.add("user password", "a very secret password!");
    secrets.add_client_secret("client secret", "client-1", "s3cr3t-value_0123456789");
    secrets.add_master_key("master key v1", MASTER_KEY_V1);
    let line =
        r#"{"timestamp":"2025-01-01T00:00:00Z","level":"DEBUG","target":"x","message":"hello"}"#;
    assert!(scan(&secrets.items, "clean", line).is_empty());

    // Each secret, planted in a log line, is found and named by kind.
    for secret in &secrets.items {
        let planted = line.replace("hello", &format!("got {} here", secret.value));
        let findings = scan(&secrets.items, "planted", &planted);
        assert!(
            findings.iter().any(|f| f.kind == secret.kind),
            "{} not found when planted",
            secret.kind
        );
        let message = findings.iter().map(ToString::to_string).collect::<String>();
        assert!(
            !message.contains(&secret.value),
            "a finding shows the secret"
        );
    }
    // Form-encoded and Basic forms are there too.
    let kinds = secrets.kinds();
    assert!(kinds.contains("user password (form-encoded)"), "{kinds:?}");
    assert!(kinds.contains("client secret (HTTP Basic credentials)"));
    assert!(kinds.contains("master key v1 (hex)"));

    // Any RSA private key, in any usual encoding, trips a marker; its own
    // members are found once registered.
    let rsa = openssl::rsa::Rsa::generate(2048).unwrap();
    let key = openssl::pkey::PKey::from_rsa(rsa.clone()).unwrap();
    let der = key.private_key_to_pkcs8().unwrap();
    let d = URL_SAFE_NO_PAD.encode(rsa.d().to_vec());
    let jwk = json!({ "kty": "RSA", "n": "x", "e": "AQAB", "d": d });
    let forms = [
        String::from_utf8(key.private_key_to_pem_pkcs8().unwrap()).unwrap(),
        String::from_utf8(rsa.private_key_to_pem().unwrap()).unwrap(),
        STANDARD.encode(&der),
        hex(&der),
        hex(&der).to_uppercase(),
        format!("{:?}", der),
        jwk.to_string(),
        format!("{jwk:#}"),
        json!({ "message": jwk.to_string() }).to_string(),
    ];
    for (i, form) in forms.iter().enumerate() {
        assert!(
            !scan(&[], "key", form).is_empty(),
            "private key form {i} not recognised"
        );
    }
    let mut keys = Secrets::default();
    keys.add_private_key("tenant key", &der);
    let pem = String::from_utf8(key.private_key_to_pem_pkcs8().unwrap()).unwrap();
    let own = scan(&keys.items, "pem", &pem);
    assert!(
        own.iter()
            .any(|f| f.kind == "tenant key: a PEM line within d")
    );
    let own = scan(&keys.items, "hex", &hex(&der));
    assert!(own.iter().any(|f| f.kind == "tenant key: d (hex)"));
    let own = scan(&keys.items, "debug", &format!("{:?}", der));
    assert!(own.iter().any(|f| f.kind == "tenant key: d (bytes)"));
}

// ---------------------------------------------------------------------------
// Recording every HTTP exchange.

/// One answer, as the scanner sees it.
struct Exchange {
    what: String,
    status: u16,
    headers: String,
    body: String,
    /// A successful answer that carries a secret by design (a token
    /// response, a new client, a new client secret): its body is scanned
    /// for every secret but the kinds it carries.
    secret_bearing: bool,
}

struct Reply {
    status: u16,
    body: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

#[derive(Default)]
struct Wire {
    client: reqwest::Client,
    exchanges: std::sync::Mutex<Vec<Exchange>>,
}

fn format_headers<'a>(headers: impl Iterator<Item = (&'a str, &'a [u8])>) -> String {
    headers
        .map(|(name, value)| format!("{name}: {}\n", String::from_utf8_lossy(value)))
        .collect()
}

impl Wire {
    async fn send(&self, what: &str, request: reqwest::RequestBuilder) -> Reply {
        self.exchange(what, request, false).await
    }

    async fn send_secret_bearing(&self, what: &str, request: reqwest::RequestBuilder) -> Reply {
        self.exchange(what, request, true).await
    }

    async fn exchange(
        &self,
        what: &str,
        request: reqwest::RequestBuilder,
        secret_bearing: bool,
    ) -> Reply {
        let request = request.build().unwrap();
        // The path only: a query may hold a token.
        let what = format!("{} {} ({what})", request.method(), request.url().path());
        let response = self
            .client
            .execute(request)
            .await
            .unwrap_or_else(|err| panic!("{what}: {err}"));
        let status = response.status().as_u16();
        let headers = format_headers(
            response
                .headers()
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_bytes())),
        );
        let body = response.text().await.unwrap_or_default();
        self.record(Exchange {
            what,
            status,
            headers,
            body: body.clone(),
            secret_bearing: secret_bearing && (200..300).contains(&status),
        });
        Reply { status, body }
    }

    fn record(&self, exchange: Exchange) {
        self.exchanges.lock().unwrap().push(exchange);
    }

    /// A WebSocket handshake; its answer (101 or a refusal) is recorded.
    async fn connect(
        &self,
        what: &str,
        request: tungstenite::handshake::client::Request,
    ) -> Result<(Socket, String), u16> {
        let what = format!("GET {} WebSocket ({what})", request.uri().path());
        match tokio_tungstenite::connect_async(request).await {
            Ok((socket, response)) => {
                let headers = format_headers(
                    response
                        .headers()
                        .iter()
                        .map(|(n, v)| (n.as_str(), v.as_bytes())),
                );
                let protocol = response
                    .headers()
                    .get("sec-websocket-protocol")
                    .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                    .unwrap_or_default();
                self.record(Exchange {
                    what,
                    status: response.status().as_u16(),
                    headers,
                    body: String::new(),
                    secret_bearing: false,
                });
                Ok((socket, protocol))
            }
            Err(tungstenite::Error::Http(response)) => {
                let status = response.status().as_u16();
                self.record(Exchange {
                    what,
                    status,
                    headers: format_headers(
                        response
                            .headers()
                            .iter()
                            .map(|(n, v)| (n.as_str(), v.as_bytes())),
                    ),
                    body: response
                        .body()
                        .as_deref()
                        .map(|b| String::from_utf8_lossy(b).into_owned())
                        .unwrap_or_default(),
                    secret_bearing: false,
                });
                Err(status)
            }
            Err(other) => panic!("{what}: {other}"),
        }
    }
}

/// Waits for the server to close the socket; the close code.
async fn close_code(socket: &mut Socket, within: Duration) -> Option<u16> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, socket.next()).await {
            Ok(Some(Ok(Message::Close(frame)))) => return frame.map(|f| u16::from(f.code)),
            Ok(Some(Ok(_))) => continue,
            _ => return None,
        }
    }
}

// ---------------------------------------------------------------------------
// The flows.

struct Flows {
    wire: Wire,
    secrets: Secrets,
    identity: String,
}

type Client = (String, String);

impl Flows {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.identity)
    }

    /// An admin request, built by the tests' one API client and sent
    /// (recorded) through the wire.
    fn admin(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        Api::new(&self.identity, self.wire.client.clone()).admin(method, path)
    }

    async fn admin_json(&self, what: &str, method: Method, path: &str, body: Value) -> Reply {
        self.wire
            .send(what, self.admin(method, path).json(&body))
            .await
    }

    /// A raw body to the admin API with the platform key.
    async fn admin_raw(&self, what: &str, path: &str, content_type: &str, body: String) -> Reply {
        self.wire
            .send(
                what,
                self.admin(Method::POST, path)
                    .header("content-type", content_type)
                    .body(body),
            )
            .await
    }

    async fn create_tenant(&self, id: &str) {
        let reply = self
            .admin_json(
                "create a tenant",
                Method::POST,
                "/tenants",
                json!({ "id": id, "display_name": format!("Tenant {id}") }),
            )
            .await;
        assert_eq!(reply.status, 201, "{}", reply.body);
    }

    async fn create_client(&mut self, tenant: &str, body: Value) -> Client {
        let reply = self
            .wire
            .send_secret_bearing(
                "register a client",
                self.admin(Method::POST, &format!("/tenants/{tenant}/clients"))
                    .json(&body),
            )
            .await;
        assert_eq!(reply.status, 201, "{}", reply.body);
        let created = reply.json();
        let id = created["client_id"].as_str().unwrap().to_owned();
        let secret = created["client_secret"].as_str().unwrap().to_owned();
        self.secrets
            .add_client_secret("client secret", &id, &secret);
        (id, secret)
    }

    async fn create_user(
        &mut self,
        tenant: &str,
        username: &str,
        password: &str,
        roles: &[&str],
    ) -> String {
        self.secrets.add("user password", password);
        let reply = self
            .admin_json(
                "create a user",
                Method::POST,
                &format!("/tenants/{tenant}/users"),
                json!({ "username": username, "password": password, "roles": roles }),
            )
            .await;
        assert_eq!(reply.status, 201, "{}", reply.body);
        reply.json()["id"].as_str().unwrap().to_owned()
    }

    fn oauth(&self, tenant: &str, endpoint: &str) -> reqwest::RequestBuilder {
        self.wire
            .client
            .post(self.url(&format!("/{tenant}/oauth2/{endpoint}")))
    }

    /// A token request with HTTP Basic; a successful answer's tokens are
    /// secrets from now on.
    async fn token(
        &mut self,
        what: &str,
        tenant: &str,
        client: &Client,
        form: &[(&str, &str)],
    ) -> Reply {
        let request = self
            .oauth(tenant, "token")
            .basic_auth(&client.0, Some(&client.1))
            .form(form);
        self.token_request(what, request).await
    }

    async fn token_request(&mut self, what: &str, request: reqwest::RequestBuilder) -> Reply {
        let reply = self.wire.send_secret_bearing(what, request).await;
        if reply.status == 200 {
            self.secrets.add_tokens(&reply.json());
        }
        reply
    }

    /// The tokens of a successful token request.
    async fn tokens(
        &mut self,
        what: &str,
        tenant: &str,
        client: &Client,
        form: &[(&str, &str)],
    ) -> (String, Option<String>) {
        let reply = self.token(what, tenant, client, form).await;
        assert_eq!(reply.status, 200, "{what}: {}", reply.body);
        let body = reply.json();
        (
            body["access_token"].as_str().unwrap().to_owned(),
            body["refresh_token"].as_str().map(str::to_owned),
        )
    }

    /// Introspection or revocation with HTTP Basic.
    async fn basic(
        &self,
        what: &str,
        tenant: &str,
        endpoint: &str,
        client: &Client,
        form: &[(&str, &str)],
    ) -> Reply {
        self.wire
            .send(
                what,
                self.oauth(tenant, endpoint)
                    .basic_auth(&client.0, Some(&client.1))
                    .form(form),
            )
            .await
    }

    /// A password the test attempts but never registers.
    fn attempted_password(&mut self, kind: &str) -> String {
        let password = format!("Wr0ng pass {}!", uuid::Uuid::new_v4().simple());
        self.secrets.add(kind, &password);
        password
    }
}

/// The identity service's configuration: both master keys, `current`
/// wrapping, and an edge key.
fn identity_config(database: &str, current: u32) -> TestConfig {
    TestConfig::new(database)
        .with_both_master_keys(current)
        .set("KEYSILO_ADMIN__EDGE_API_KEY", "${secret:edge-api-key}")
        .set("KEYSILO_SECRET_EDGE_API_KEY", EDGE_KEY)
        .set("KEYSILO_SERVER__PUBLIC_BASE_URL", ISSUER_BASE)
}

/// Tally of a JSON log: lines, and the crates that logged at debug level.
#[derive(Debug, Default)]
struct LogStats {
    lines: usize,
    json_lines: usize,
    not_json: Vec<usize>,
    debug_lines: usize,
    /// Lines at TRACE level (counted in `debug_lines` too).
    trace_lines: usize,
    debug_crates: BTreeSet<String>,
    crates: BTreeSet<String>,
}

fn log_stats(text: &str) -> LogStats {
    let mut stats = LogStats::default();
    for (n, line) in text.lines().enumerate() {
        stats.lines += 1;
        let Ok(entry) = serde_json::from_str::<Value>(line) else {
            stats.not_json.push(n + 1);
            continue;
        };
        stats.json_lines += 1;
        let target = entry["target"].as_str().unwrap_or_default();
        let krate = target.split("::").next().unwrap_or_default().to_owned();
        stats.crates.insert(krate.clone());
        if entry["level"].as_str() == Some("TRACE") {
            stats.trace_lines += 1;
        }
        if matches!(entry["level"].as_str(), Some("DEBUG" | "TRACE")) {
            stats.debug_lines += 1;
            stats.debug_crates.insert(krate);
        }
    }
    stats
}

/// Unwraps every signing key in the database (as an attacker holding the
/// master keys could) so that the private keys themselves are scanned for.
pub(crate) async fn add_tenant_private_keys(database: &str, secrets: &mut Secrets) -> usize {
    let config = format!(
        "host=127.0.0.1 port={} user=keysilo password={} dbname={database}",
        pg_port(),
        db_password()
    );
    let (client, connection) = tokio_postgres::connect(&config, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let rows = client
        .query(
            "SELECT tenant_id, kid, wrapped_private_key, wrap_nonce, master_key_version \
             FROM signing_keys",
            &[],
        )
        .await
        .unwrap();
    for row in &rows {
        let tenant: String = row.get(0);
        let kid: String = row.get(1);
        let wrapped: Vec<u8> = row.get(2);
        let nonce: Vec<u8> = row.get(3);
        let version: i32 = row.get(4);
        let master = STANDARD
            .decode(if version == 1 {
                MASTER_KEY_V1
            } else {
                MASTER_KEY_V2
            })
            .unwrap();
        let mut aad = b"keysilo/signing-key/v1\0".to_vec();
        aad.extend_from_slice(tenant.as_bytes());
        aad.push(0);
        aad.extend_from_slice(kid.as_bytes());
        let (ciphertext, tag) = wrapped.split_at(wrapped.len() - 16);
        let der = openssl::symm::decrypt_aead(
            openssl::symm::Cipher::aes_256_gcm(),
            &master,
            Some(&nonce),
            &aad,
            ciphertext,
            tag,
        )
        .unwrap();
        secrets.add_private_key("tenant private key", &der);
    }
    rows.len()
}

#[tokio::test]
async fn no_flow_leaks_a_secret_at_debug_level() {
    // Every crate's debug logs, not only ours.
    every_flow_then_scan("debug").await;
}

#[tokio::test]
async fn no_flow_leaks_a_secret_at_trace_level() {
    // Trace reaches what debug leaves out (HTTP internals, per-request
    // detail) and costs nothing more here.
    every_flow_then_scan("trace").await;
}

/// Runs every flow against both binaries logging at `log_level` (a
/// `tracing` filter for every crate), then scans everything they said.
/// Each phase below is one group of flows; what a later phase needs from
/// an earlier one is returned by it.
async fn every_flow_then_scan(log_level: &str) {
    let started = Instant::now();
    let database = create_database().await;
    // Kept until the scan passes, so that a failure can be looked into.
    let logs_dir = tempfile::Builder::new()
        .prefix("leaks-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap()
        .keep();
    let identity_logs = [
        CapturedLogs::new(logs_dir.as_path(), "identity-1"),
        CapturedLogs::new(logs_dir.as_path(), "identity-2"),
    ];
    let edge_logs = CapturedLogs::new(logs_dir.as_path(), "edge");
    let wrong_edge_logs = CapturedLogs::new(logs_dir.as_path(), "edge-wrong-key");

    let mut f = Flows {
        wire: Wire::default(),
        secrets: Secrets::default(),
        identity: String::new(),
    };
    add_configured_secrets(&mut f);
    let legacy =
        first_identity_under_master_key_v1(&mut f, &database, log_level, &identity_logs[0]).await;
    let Running {
        identity,
        mut edge,
        mut wrong_edge,
        edge_url,
        edge_ws,
    } = start_identity_and_edges(
        &mut f,
        &database,
        log_level,
        [&identity_logs[1], &edge_logs, &wrong_edge_logs],
    )
    .await;
    key_flows(&mut f).await;
    let p = principals(&mut f, legacy).await;
    let grants = grant_flows(&mut f, &p).await;
    let refresh_3 = introspection_flows(&mut f, &p).await;
    let wrong_post = wrong_credential_flows(&mut f, &p, &grants.machine_token).await;
    malformed_token_requests(&mut f, &p, &grants.refresh_2, &refresh_3, &wrong_post).await;
    malformed_admin_bodies(&mut f).await;
    admin_key_and_snapshot_flows(&mut f).await;
    edge_flows(&mut f, &p, &grants.machine_token, &edge_url, &edge_ws).await;
    disable_audit_health_and_metrics(&mut f, &p, &edge_url).await;

    // Stop both (SIGTERM: shutdown logs too), then take the private keys.
    let mut identity = identity;
    let edge_stopped = terminate(&mut edge.child).await;
    let wrong_edge_stopped = terminate(&mut wrong_edge.child).await;
    drop(wrong_edge);
    let identity_stopped = terminate(&mut identity.child).await;
    drop(edge);
    drop(identity);
    let key_count = add_tenant_private_keys(&database, &mut f.secrets).await;
    assert!(
        key_count >= 3,
        "expected the tenants' keys, found {key_count}"
    );
    let flows_took = started.elapsed();

    let stopped = edge_stopped && wrong_edge_stopped && identity_stopped;
    assert_nothing_leaked(
        &f,
        log_level,
        &[
            &identity_logs[0],
            &identity_logs[1],
            &edge_logs,
            &wrong_edge_logs,
        ],
        &logs_dir,
        stopped,
        (started, flows_took),
    );
}

/// The grant types' shared form.
const CC: [(&str, &str); 1] = [("grant_type", "client_credentials")];

/// The identity service and the two edges of phase 2.
struct Running {
    identity: IdentityProcess,
    edge: EdgeProcess,
    wrong_edge: EdgeProcess,
    edge_url: String,
    edge_ws: String,
}

/// The clients and users the flows make.
struct Principals {
    legacy: Client,
    /// The machine client with its first secret (still in its overlap).
    machine: Client,
    /// The machine client with its rotated secret.
    machine_new: Client,
    new_secret: String,
    app: Client,
    alice: String,
    alice_password: String,
    boss_password: String,
}

impl Principals {
    /// Alice's password grant.
    fn login(&self) -> [(&str, &str); 3] {
        [
            ("grant_type", "password"),
            ("username", "alice"),
            ("password", self.alice_password.as_str()),
        ]
    }
}

/// What the grant flows leave for later phases.
struct Grants {
    machine_token: String,
    refresh_2: String,
}

/// Configured secrets.
fn add_configured_secrets(f: &mut Flows) {
    f.secrets.add("platform admin key", ADMIN_KEY);
    f.secrets.add("edge API key", EDGE_KEY);
    f.secrets.add("client-secret pepper", PEPPER);
    f.secrets.add("database password", &db_password());
    f.secrets.add_master_key("master key v1", MASTER_KEY_V1);
    f.secrets.add_master_key("master key v2", MASTER_KEY_V2);
}

/// Phase 1: master key v1 wraps; a tenant whose key v2 will re-wrap.
async fn first_identity_under_master_key_v1(
    f: &mut Flows,
    database: &str,
    log_level: &str,
    logs: &CapturedLogs,
) -> Client {
    let mut identity =
        IdentityProcess::start_logged(&identity_config(database, 1), log_level, logs).await;
    f.identity = identity.address.clone();
    f.create_tenant("legacy").await;
    let legacy = f
        .create_client(
            "legacy",
            json!({ "name": "old", "grant_types": ["client_credentials"], "scopes": ["read"] }),
        )
        .await;
    f.tokens(
        "client_credentials",
        "legacy",
        &legacy,
        &[("grant_type", "client_credentials")],
    )
    .await;
    assert!(
        terminate(&mut identity.child).await,
        "identity 1 did not stop on SIGTERM"
    );
    drop(identity);
    legacy
}

/// Phase 2: v2 is current; the edge runs next to it from the start, and a
/// second edge holding a wrong key for the snapshot.
async fn start_identity_and_edges(
    f: &mut Flows,
    database: &str,
    log_level: &str,
    [identity_log, edge_log, wrong_edge_log]: [&CapturedLogs; 3],
) -> Running {
    let identity =
        IdentityProcess::start_logged(&identity_config(database, 2), log_level, identity_log).await;
    f.identity = identity.address.clone();
    let edge_toml = format!(
        r#"
        [edge]
        host = "127.0.0.1"
        issuer_base = "{ISSUER_BASE}"
        identity_url = "{identity}"
        audience = "{AUDIENCE}"
        identity_api_key = "${{secret:edge-api-key}}"

        [redis]
        url = "redis://127.0.0.1:{redis}"
        key_prefix = "test:{database}:"
        timeout_seconds = 1
        "#,
        identity = identity.address,
        redis = redis_port(),
    );
    let edge_env = BTreeMap::from([(
        "KEYSILO_SECRET_EDGE_API_KEY".to_owned(),
        EDGE_KEY.to_owned(),
    )]);
    let edge = EdgeProcess::start(&edge_toml, &edge_env, log_level, edge_log).await;
    let edge_url = edge.address.clone();
    // A second edge holding a wrong key for the snapshot: its polls are
    // refused all along, and it logs that.
    let wrong_edge_key = format!("wrong-edge-key-{}", uuid::Uuid::new_v4().simple());
    f.secrets.add("wrong edge API key", &wrong_edge_key);
    let wrong_edge_env = BTreeMap::from([
        ("KEYSILO_SECRET_EDGE_API_KEY".to_owned(), wrong_edge_key),
        (
            "KEYSILO_EDGE__POLL_INTERVAL_SECONDS".to_owned(),
            "1".to_owned(),
        ),
    ]);
    // It never merges a snapshot, so it never becomes ready.
    let wrong_edge =
        EdgeProcess::start_unready(&edge_toml, &wrong_edge_env, log_level, wrong_edge_log).await;
    let unready = reqwest::get(format!("{}/readyz", wrong_edge.address))
        .await
        .unwrap();
    assert_eq!(unready.status(), 503);
    let edge_ws = edge_url.replacen("http://", "ws://", 1);
    Running {
        identity,
        edge,
        wrong_edge,
        edge_url,
        edge_ws,
    }
}

/// Master key re-wrap; tenant, key rotation and revocation; the public
/// documents.
async fn key_flows(f: &mut Flows) {
    // Master key: re-wrap under v2 through the admin API.
    let rewrap = f
        .admin_json(
            "master key rewrap",
            Method::POST,
            "/master-key/rewrap",
            json!({}),
        )
        .await;
    assert_eq!(rewrap.status, 200, "{}", rewrap.body);
    assert!(
        rewrap.json()["rewrapped"].as_u64().unwrap() >= 1,
        "{}",
        rewrap.body
    );
    f.wire
        .send("master key status", f.admin(Method::GET, "/master-key"))
        .await;

    // Tenant, key rotation and revocation.
    f.create_tenant("acme").await;
    let rotated = f
        .admin_json(
            "rotate keys",
            Method::POST,
            "/tenants/acme/keys/rotate",
            json!({}),
        )
        .await;
    assert_eq!(rotated.status, 200, "{}", rotated.body);
    let retired = rotated.json()["retired_kid"].as_str().unwrap().to_owned();
    let revoked = f
        .admin_json(
            "revoke the retired key",
            Method::POST,
            &format!("/tenants/acme/keys/{retired}/revoke"),
            json!({}),
        )
        .await;
    assert_eq!(revoked.status, 200, "{}", revoked.body);
    for (what, path) in [
        ("list keys", "/admin/v1/tenants/acme/keys"),
        ("tenant", "/admin/v1/tenants/acme"),
    ] {
        let request = f.wire.client.get(f.url(path)).bearer_auth(ADMIN_KEY);
        f.wire.send(what, request).await;
    }
    for path in [
        "/acme/.well-known/jwks",
        "/acme/.well-known/openid-configuration",
        "/.well-known/oauth-authorization-server/acme",
        "/openapi.json",
        "/nowhere",
    ] {
        let request = f.wire.client.get(f.url(path));
        f.wire.send("public document", request).await;
    }
}

/// Clients, users, secret rotation.
async fn principals(f: &mut Flows, legacy: Client) -> Principals {
    let machine = f
        .create_client(
            "acme",
            json!({ "name": "m2m", "grant_types": ["client_credentials"], "scopes": ["read"], "audience": [AUDIENCE] }),
        )
        .await;
    let app = f
        .create_client(
            "acme",
            json!({
                "name": "app", "grant_types": ["password", "refresh_token"],
                "scopes": ["read", "admin"], "audience": [AUDIENCE],
            }),
        )
        .await;
    let alice_password = format!("Alice pw {}!", uuid::Uuid::new_v4().simple());
    let boss_password = format!("Boss pw {}?", uuid::Uuid::new_v4().simple());
    let alice = f.create_user("acme", "alice", &alice_password, &[]).await;
    f.create_user("acme", "boss", &boss_password, &["tenant-admin"])
        .await;
    let rotation = f
        .wire
        .send_secret_bearing(
            "rotate a client secret",
            f.admin(
                Method::POST,
                &format!("/tenants/acme/clients/{}/secret", machine.0),
            ),
        )
        .await;
    assert_eq!(rotation.status, 200, "{}", rotation.body);
    let new_secret = rotation.json()["client_secret"]
        .as_str()
        .unwrap()
        .to_owned();
    f.secrets
        .add_client_secret("rotated client secret", &machine.0, &new_secret);
    let machine_new = (machine.0.clone(), new_secret.clone());
    Principals {
        legacy,
        machine,
        machine_new,
        new_secret,
        app,
        alice,
        alice_password,
        boss_password,
    }
}

/// client_credentials with the old secret, the new one and
/// client_secret_post; password and refresh_token grants (reuse revokes
/// the family); a tenant admin's token on its own tenant and another.
async fn grant_flows(f: &mut Flows, p: &Principals) -> Grants {
    let Principals {
        machine,
        machine_new,
        new_secret,
        app,
        alice_password,
        boss_password,
        ..
    } = p;
    // client_credentials: the old secret (still in its overlap), the new
    // one, and client_secret_post.
    let cc = [("grant_type", "client_credentials")];
    f.tokens("client_credentials, old secret", "acme", machine, &cc)
        .await;
    let (machine_token, _) = f
        .tokens("client_credentials, new secret", "acme", machine_new, &cc)
        .await;
    let post = f.oauth("acme", "token").form(&[
        ("grant_type", "client_credentials"),
        ("client_id", machine.0.as_str()),
        ("client_secret", new_secret.as_str()),
    ]);
    let reply = f
        .token_request("client_credentials, client_secret_post", post)
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);

    // password and refresh_token grants; reuse revokes the family.
    let login = [
        ("grant_type", "password"),
        ("username", "alice"),
        ("password", alice_password.as_str()),
    ];
    let (_, refresh_1) = f.tokens("password grant", "acme", app, &login).await;
    let refresh_1 = refresh_1.expect("a refresh token");
    let post = f.oauth("acme", "token").form(&[
        ("grant_type", "password"),
        ("username", "alice"),
        ("password", alice_password.as_str()),
        ("client_id", app.0.as_str()),
        ("client_secret", app.1.as_str()),
    ]);
    let reply = f
        .token_request("password grant, client_secret_post", post)
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let (_, refresh_2) = f
        .tokens(
            "refresh_token grant",
            "acme",
            app,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", &refresh_1),
            ],
        )
        .await;
    let refresh_2 = refresh_2.unwrap();
    let reuse = f
        .token(
            "refresh token reuse",
            "acme",
            app,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", &refresh_1),
            ],
        )
        .await;
    assert_eq!(reuse.status, 400, "{}", reuse.body);
    let after_reuse = f
        .token(
            "refresh token of a revoked family",
            "acme",
            app,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", &refresh_2),
            ],
        )
        .await;
    assert_eq!(after_reuse.status, 400, "{}", after_reuse.body);

    // A tenant admin's token on its own tenant and on another one; a
    // user's token without the admin scope (a new login: reuse revoked the
    // first one's family and its access tokens).
    let (alice_token, _) = f
        .tokens("password grant after reuse", "acme", app, &login)
        .await;
    let (boss_token, _) = f
        .tokens(
            "password grant, admin scope",
            "acme",
            app,
            &[
                ("grant_type", "password"),
                ("username", "boss"),
                ("password", boss_password.as_str()),
                ("scope", "admin"),
            ],
        )
        .await;
    for (what, path, token, status) in [
        (
            "tenant admin, own tenant",
            "/admin/v1/tenants/acme",
            &boss_token,
            200,
        ),
        (
            "tenant admin, other tenant",
            "/admin/v1/tenants/legacy",
            &boss_token,
            401,
        ),
        (
            "user token without admin scope",
            "/admin/v1/tenants/acme/keys",
            &alice_token,
            403,
        ),
    ] {
        let request = f.wire.client.get(f.url(path)).bearer_auth(token);
        let reply = f.wire.send(what, request).await;
        assert_eq!(reply.status, status, "{what}: {}", reply.body);
    }
    Grants {
        machine_token,
        refresh_2,
    }
}

/// Introspection and revocation of access and refresh tokens; returns the
/// revoked refresh token.
async fn introspection_flows(f: &mut Flows, p: &Principals) -> String {
    let (app, login) = (&p.app, p.login());
    let (access_3, refresh_3) = f.tokens("password grant again", "acme", app, &login).await;
    let refresh_3 = refresh_3.unwrap();
    for (what, token) in [
        ("introspect an access token", &access_3),
        ("introspect a refresh token", &refresh_3),
        ("introspect garbage", &"garbage-token-value".to_owned()),
    ] {
        let reply = f
            .basic(what, "acme", "introspect", app, &[("token", token)])
            .await;
        assert_eq!(reply.status, 200, "{what}: {}", reply.body);
    }
    for (what, token) in [
        ("revoke an access token", &access_3),
        ("revoke a refresh token", &refresh_3),
    ] {
        let reply = f
            .basic(
                what,
                "acme",
                "revoke",
                app,
                &[("token", token), ("token_type_hint", "refresh_token")],
            )
            .await;
        assert_eq!(reply.status, 200, "{what}: {}", reply.body);
        let reply = f
            .basic(
                "introspect a revoked token",
                "acme",
                "introspect",
                app,
                &[("token", token)],
            )
            .await;
        assert_eq!(reply.json()["active"], false, "{}", reply.body);
    }
    let dead = f
        .token(
            "revoked refresh token",
            "acme",
            app,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", &refresh_3),
            ],
        )
        .await;
    assert_eq!(dead.status, 400, "{}", dead.body);
    refresh_3
}

/// Wrong client secrets (Basic and post, on every endpoint) and wrong
/// passwords; returns the wrong post secret.
async fn wrong_credential_flows(f: &mut Flows, p: &Principals, machine_token: &str) -> String {
    let (machine, app, cc) = (&p.machine, &p.app, CC);
    let wrong_basic = format!("wrong-secret-{}", uuid::Uuid::new_v4().simple());
    let wrong_post = format!("wrong-post-secret-{}", uuid::Uuid::new_v4().simple());
    let wrong_unknown = format!("unknown-client-secret-{}", uuid::Uuid::new_v4().simple());
    f.secrets
        .add_client_secret("wrong client secret", &machine.0, &wrong_basic);
    f.secrets.add("wrong client secret", &wrong_post);
    f.secrets
        .add_client_secret("wrong client secret", "no-such-client", &wrong_unknown);
    let wrong_machine = (machine.0.clone(), wrong_basic.clone());
    let token_form = [("token", machine_token)];
    for endpoint in ["token", "introspect", "revoke"] {
        let form: &[(&str, &str)] = if endpoint == "token" {
            &cc
        } else {
            &token_form
        };
        let reply = f
            .basic(
                "wrong client secret (Basic)",
                "acme",
                endpoint,
                &wrong_machine,
                form,
            )
            .await;
        assert_eq!(reply.status, 401, "{}", reply.body);
    }
    let request = f.oauth("acme", "token").form(&[
        ("grant_type", "client_credentials"),
        ("client_id", machine.0.as_str()),
        ("client_secret", wrong_post.as_str()),
    ]);
    let reply = f.token_request("wrong client secret (post)", request).await;
    assert_eq!(reply.status, 401, "{}", reply.body);
    let unknown = ("no-such-client".to_owned(), wrong_unknown.clone());
    let reply = f.token("unknown client", "acme", &unknown, &cc).await;
    assert_eq!(reply.status, 401, "{}", reply.body);
    let garbled = f
        .oauth("acme", "token")
        .header("authorization", format!("Basic {wrong_basic}"))
        .form(&cc);
    let reply = f
        .token_request("undecodable Basic credentials", garbled)
        .await;
    assert_eq!(reply.status, 401, "{}", reply.body);

    // Wrong passwords: a known user, an unknown one, the tenant admin.
    for (what, username) in [
        ("wrong password", "alice"),
        ("unknown user", "mallory"),
        ("wrong admin password", "boss"),
    ] {
        let password = f.attempted_password("wrong password");
        let reply = f
            .token(
                what,
                "acme",
                app,
                &[
                    ("grant_type", "password"),
                    ("username", username),
                    ("password", &password),
                ],
            )
            .await;
        assert_eq!(reply.status, 400, "{what}: {}", reply.body);
    }
    wrong_post
}

/// Malformed token requests, each carrying secrets.
async fn malformed_token_requests(
    f: &mut Flows,
    p: &Principals,
    refresh_2: &str,
    refresh_3: &str,
    wrong_post: &str,
) {
    let Principals {
        machine,
        machine_new,
        new_secret,
        app,
        alice_password,
        ..
    } = p;
    let (login, cc) = (p.login(), CC);
    let repeated_password = f.attempted_password("repeated password");
    let reply = f
        .token(
            "repeated password parameter",
            "acme",
            app,
            &[
                ("grant_type", "password"),
                ("username", "alice"),
                ("password", alice_password),
                ("password", &repeated_password),
            ],
        )
        .await;
    assert_eq!(reply.status, 400, "{}", reply.body);
    let reply = f
        .token(
            "repeated refresh_token parameter",
            "acme",
            app,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh_2),
                ("refresh_token", refresh_3),
            ],
        )
        .await;
    assert_eq!(reply.status, 400, "{}", reply.body);
    let request = f.oauth("acme", "token").form(&[
        ("grant_type", "client_credentials"),
        ("client_id", machine.0.as_str()),
        ("client_secret", new_secret.as_str()),
        ("client_secret", wrong_post),
    ]);
    let reply = f
        .token_request("repeated client_secret parameter", request)
        .await;
    assert_eq!(reply.status, 400, "{}", reply.body);
    let request = f
        .oauth("acme", "token")
        .basic_auth(&machine.0, Some(&new_secret))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_secret", new_secret.as_str()),
        ]);
    let reply = f.token_request("two authentication methods", request).await;
    assert_eq!(reply.status, 400, "{}", reply.body);
    let oversized_password = f.attempted_password("password in an oversized body");
    let padding = "x".repeat(17 * 1024);
    let request = f.oauth("acme", "token").form(&[
        ("grant_type", "password"),
        ("username", "alice"),
        ("password", oversized_password.as_str()),
        ("client_id", app.0.as_str()),
        ("client_secret", app.1.as_str()),
        ("padding", padding.as_str()),
    ]);
    let reply = f.token_request("oversized form", request).await;
    assert_eq!(reply.status, 413, "{}", reply.body);
    let json_password = f.attempted_password("password in a JSON token request");
    let request = f
        .oauth("acme", "token")
        .basic_auth(&app.0, Some(&app.1))
        .json(&json!({ "grant_type": "password", "username": "alice", "password": json_password }));
    let reply = f.token_request("JSON instead of a form", request).await;
    assert_eq!(reply.status, 400, "{}", reply.body);
    for (what, form, status) in [
        (
            "unsupported grant type",
            vec![
                ("grant_type", "urn:nope"),
                ("password", alice_password.as_str()),
            ],
            400,
        ),
        (
            "invalid scope",
            vec![("grant_type", "client_credentials"), ("scope", "admin")],
            400,
        ),
    ] {
        let reply = f.token(what, "acme", machine_new, &form).await;
        assert_eq!(reply.status, status, "{what}: {}", reply.body);
    }
    let reply = f
        .token(
            "grant the client is not registered for",
            "acme",
            machine_new,
            &login,
        )
        .await;
    assert_eq!(reply.status, 400, "{}", reply.body);
    let reply = f.token("unknown tenant", "nope", machine_new, &cc).await;
    assert_eq!(reply.status, 404, "{}", reply.body);
}

/// Malformed admin bodies, each carrying a password; a duplicate user.
async fn malformed_admin_bodies(f: &mut Flows) {
    let users = "/tenants/acme/users";
    let truncated = f.attempted_password("password in truncated JSON");
    let reply = f
        .admin_raw(
            "truncated JSON",
            users,
            "application/json",
            format!(r#"{{"username":"carol","password":"{truncated}""#),
        )
        .await;
    assert_eq!(reply.status, 400, "{}", reply.body);
    let misplaced = f.attempted_password("password in a wrongly typed field");
    let reply = f
        .admin_raw(
            "wrong type",
            users,
            "application/json",
            format!(r#"{{"username":"carol","password":"{misplaced}","roles":"{misplaced}"}}"#),
        )
        .await;
    assert_eq!(reply.status, 400, "{}", reply.body);
    let numeric = "73195804628371946";
    f.secrets.add("numeric password", numeric);
    let reply = f
        .admin_raw(
            "numeric password",
            users,
            "application/json",
            format!(r#"{{"username":"carol","password":{numeric}}}"#),
        )
        .await;
    assert_eq!(reply.status, 400, "{}", reply.body);
    let unknown_field = f.attempted_password("password next to an unknown field");
    let reply = f
        .admin_raw(
            "unknown field",
            users,
            "application/json",
            format!(
                r#"{{"username":"carol","password":"{unknown_field}","pasword":"{unknown_field}"}}"#
            ),
        )
        .await;
    assert_eq!(reply.status, 400, "{}", reply.body);
    let short = "Sh0rt!x";
    f.secrets.add("refused password (too short)", short);
    let long = format!("L0ng{}", "z9".repeat(520));
    f.secrets.add("refused password (too long)", &long);
    for (what, password) in [
        ("password too short", short),
        ("password too long", long.as_str()),
    ] {
        let reply = f
            .admin_json(
                what,
                Method::POST,
                users,
                json!({ "username": "carol", "password": password }),
            )
            .await;
        assert_eq!(reply.status, 400, "{what}: {}", reply.body);
    }
    let plain = f.attempted_password("password in a text/plain body");
    let reply = f
        .admin_raw(
            "not JSON",
            users,
            "text/plain",
            json!({ "username": "carol", "password": plain }).to_string(),
        )
        .await;
    assert_eq!(reply.status, 400, "{}", reply.body);
    let big = f.attempted_password("password in an oversized admin body");
    let reply = f
        .admin_json(
            "oversized admin body",
            Method::POST,
            users,
            json!({ "username": "carol", "password": big, "roles": ["r".repeat(70 * 1024)] }),
        )
        .await;
    assert_eq!(reply.status, 413, "{}", reply.body);
    for (what, path, body) in [
        ("bad JSON, tenant", "/tenants", r#"{"id": "x", "#),
        (
            "bad JSON, client",
            "/tenants/acme/clients",
            r#"{"name": 5}"#,
        ),
    ] {
        let reply = f
            .admin_raw(what, path, "application/json", body.to_owned())
            .await;
        assert_eq!(reply.status, 400, "{what}: {}", reply.body);
    }
    // A duplicate user, with yet another password.
    let duplicate = f.attempted_password("password of a refused duplicate user");
    let reply = f
        .admin_json(
            "duplicate user",
            Method::POST,
            users,
            json!({ "username": "alice", "password": duplicate }),
        )
        .await;
    assert_eq!(reply.status, 409, "{}", reply.body);
}

/// The admin API with a wrong key, the edge key, no key; the internal
/// revocation snapshot.
async fn admin_key_and_snapshot_flows(f: &mut Flows) {
    let wrong_admin = format!("wrong-admin-key-{}", uuid::Uuid::new_v4().simple());
    f.secrets.add("wrong admin key", &wrong_admin);
    for (what, key) in [
        ("wrong admin key", wrong_admin.as_str()),
        ("edge key as admin key", EDGE_KEY),
    ] {
        let request = f
            .wire
            .client
            .post(f.url("/admin/v1/tenants"))
            .bearer_auth(key)
            .json(&json!({ "id": "intruder", "display_name": "x" }));
        let reply = f.wire.send(what, request).await;
        assert_eq!(reply.status, 401, "{what}: {}", reply.body);
        let request = f
            .wire
            .client
            .post(f.url("/admin/v1/master-key/rewrap"))
            .bearer_auth(key);
        assert_eq!(f.wire.send(what, request).await.status, 401);
    }
    let request = f
        .wire
        .client
        .get(f.url("/admin/v1/tenants/acme"))
        .basic_auth("admin", Some(ADMIN_KEY));
    assert_eq!(
        f.wire.send("admin key over Basic", request).await.status,
        401
    );
    let request = f.wire.client.get(f.url("/admin/v1/tenants/acme"));
    assert_eq!(f.wire.send("no admin key", request).await.status, 401);

    // The internal revocation snapshot.
    let request = f
        .wire
        .client
        .get(f.url("/internal/v1/revocations"))
        .bearer_auth(EDGE_KEY);
    let reply = f.wire.send("revocation snapshot", request).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let request = f
        .wire
        .client
        .get(f.url("/internal/v1/revocations"))
        .bearer_auth(&wrong_admin);
    assert_eq!(
        f.wire
            .send("revocation snapshot, wrong key", request)
            .await
            .status,
        401
    );
}

/// The edge: forward-auth with good, tampered, garbage and forged tokens;
/// WebSocket sessions closed by revoking their tokens.
async fn edge_flows(
    f: &mut Flows,
    p: &Principals,
    machine_token: &str,
    edge_url: &str,
    edge_ws: &str,
) {
    let (machine_new, app, login, cc) = (&p.machine_new, &p.app, p.login(), CC);
    let http = f.wire.client.clone();
    let auth = |token: &str| http.get(format!("{edge_url}/auth")).bearer_auth(token);
    let reply = f
        .wire
        .send("edge /auth, good token", auth(machine_token))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let mut tampered = machine_token.to_owned();
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    f.secrets
        .add_access_token("tampered access token", &tampered);
    let reply = f
        .wire
        .send("edge /auth, tampered token", auth(&tampered))
        .await;
    assert_eq!(reply.status, 401, "{}", reply.body);
    let garbage = format!("garbage.{}.token", uuid::Uuid::new_v4().simple());
    f.secrets.add("garbage bearer token", &garbage);
    let reply = f
        .wire
        .send("edge /auth, garbage token", auth(&garbage))
        .await;
    assert_eq!(reply.status, 401, "{}", reply.body);
    let request = auth(machine_token).header("origin", "https://app.acme.test");
    assert_eq!(
        f.wire
            .send("edge /auth, refused origin", request)
            .await
            .status,
        403
    );
    assert_eq!(
        f.wire
            .send(
                "edge /auth, no token",
                f.wire.client.get(format!("{edge_url}/auth"))
            )
            .await
            .status,
        401
    );
    // A token claiming a tenant that does not exist (the edge asks for its
    // keys) and one claiming another issuer.
    for (what, issuer) in [
        ("edge /auth, unknown tenant", format!("{ISSUER_BASE}/nope")),
        (
            "edge /auth, foreign issuer",
            "https://attacker.test/acme".to_owned(),
        ),
    ] {
        let mut parts: Vec<String> = machine_token.split('.').map(str::to_owned).collect();
        let mut claims: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(&parts[1]).unwrap()).unwrap();
        claims["iss"] = json!(issuer);
        parts[1] = URL_SAFE_NO_PAD.encode(claims.to_string());
        let forged = parts.join(".");
        f.secrets.add("forged access token", &forged);
        let reply = f.wire.send(what, auth(&forged)).await;
        assert_eq!(reply.status, 401, "{what}: {}", reply.body);
    }

    // WebSocket sessions through the edge, closed by revoking their token:
    // one with the Authorization header, one with the subprotocol.
    let (ws_token, _) = f
        .tokens("client_credentials for a session", "acme", machine_new, &cc)
        .await;
    let mut request = format!("{edge_ws}/ws").into_client_request().unwrap();
    request.headers_mut().insert(
        "authorization",
        format!("Bearer {ws_token}").parse().unwrap(),
    );
    let (mut header_session, _) = f
        .wire
        .connect("Authorization header", request)
        .await
        .unwrap();
    header_session.send(Message::text("hello")).await.unwrap();
    assert_eq!(
        header_session.next().await.unwrap().unwrap(),
        Message::text("hello")
    );
    let (browser_token, _) = f
        .tokens("password grant for a session", "acme", app, &login)
        .await;
    let mut request = format!("{edge_ws}/ws").into_client_request().unwrap();
    request.headers_mut().insert(
        "sec-websocket-protocol",
        format!("keysilo, bearer.{browser_token}").parse().unwrap(),
    );
    let (mut protocol_session, protocol) = f.wire.connect("subprotocol", request).await.unwrap();
    assert_eq!(protocol, "keysilo");
    let reply = f
        .basic(
            "revoke a session's token",
            "acme",
            "revoke",
            machine_new,
            &[("token", &ws_token)],
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let reply = f
        .basic(
            "revoke a session's token",
            "acme",
            "revoke",
            app,
            &[("token", &browser_token)],
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let (header_close, protocol_close) = tokio::join!(
        close_code(&mut header_session, Duration::from_secs(3)),
        close_code(&mut protocol_session, Duration::from_secs(3)),
    );
    assert_eq!((header_close, protocol_close), (Some(1008), Some(1008)));
    // The revoked token at /auth and at /ws; a garbage token and a token
    // in the query string (refused: not enabled) at /ws.
    let reply = f
        .wire
        .send("edge /auth, revoked token", auth(&ws_token))
        .await;
    assert_eq!(reply.status, 401, "{}", reply.body);
    for (what, url, header) in [
        (
            "revoked token",
            format!("{edge_ws}/ws"),
            Some(ws_token.clone()),
        ),
        (
            "garbage token",
            format!("{edge_ws}/ws"),
            Some(garbage.clone()),
        ),
        (
            "token in the query",
            format!("{edge_ws}/ws?access_token={machine_token}"),
            None,
        ),
    ] {
        let mut request = url.into_client_request().unwrap();
        if let Some(token) = header {
            request
                .headers_mut()
                .insert("authorization", format!("Bearer {token}").parse().unwrap());
        }
        assert_eq!(
            f.wire.connect(what, request).await.err(),
            Some(401),
            "{what}"
        );
    }
}

/// Disabling a user and a client, the audit trail, both services' health
/// and metrics.
async fn disable_audit_health_and_metrics(f: &mut Flows, p: &Principals, edge_url: &str) {
    let (alice, legacy) = (&p.alice, &p.legacy);
    for path in [
        format!("/tenants/acme/users/{alice}"),
        format!("/tenants/legacy/clients/{}", legacy.0),
    ] {
        let reply = f.wire.send("disable", f.admin(Method::DELETE, &path)).await;
        assert_eq!(reply.status, 204, "{}", reply.body);
    }
    for tenant in ["acme", "legacy"] {
        let reply = f
            .wire
            .send(
                "audit",
                f.admin(Method::GET, &format!("/tenants/{tenant}/audit")),
            )
            .await;
        assert_eq!(reply.status, 200, "{}", reply.body);
    }
    for path in ["/readyz", "/healthz"] {
        f.wire
            .send(
                "edge health",
                f.wire.client.get(format!("{edge_url}{path}")),
            )
            .await;
        f.wire
            .send("identity health", f.wire.client.get(f.url(path)))
            .await;
    }

    // Both services' metrics.
    let identity_metrics = f
        .wire
        .send("identity metrics", f.wire.client.get(f.url("/metrics")))
        .await;
    let edge_metrics = f
        .wire
        .send(
            "edge metrics",
            f.wire.client.get(format!("{edge_url}/metrics")),
        )
        .await;
    assert!(
        identity_metrics
            .body
            .contains("keysilo_auth_failures_total"),
        "{}",
        identity_metrics.body
    );
    assert!(
        edge_metrics
            .body
            .contains("keysilo_edge_sessions_closed_total"),
        "{}",
        edge_metrics.body
    );
}

/// The scan: it must not be vacuous (every kind of secret collected, logs
/// written at the level asked, every answer recorded, each secret found
/// when planted), and then it must find nothing.
fn assert_nothing_leaked(
    f: &Flows,
    log_level: &str,
    logs: &[&CapturedLogs],
    logs_dir: &std::path::Path,
    stopped: bool,
    (started, flows_took): (Instant, Duration),
) {
    let secrets = f.secrets.items.clone();
    let kinds = f.secrets.kinds();
    for kind in [
        "platform admin key",
        "edge API key",
        "client-secret pepper",
        "database password",
        "master key v1 (base64, as configured)",
        "master key v1 (hex)",
        "master key v2 (base64, as configured)",
        "master key v2 (hex)",
        "client secret",
        "client secret (HTTP Basic credentials)",
        "rotated client secret",
        "wrong client secret",
        "user password",
        "user password (form-encoded)",
        "wrong password",
        "access token",
        "refresh token",
        "wrong admin key",
        "tenant private key: JWK member d",
        "tenant private key: a PEM line within d",
    ] {
        assert!(kinds.contains(kind), "no {kind} was collected: {kinds:?}");
    }
    let count = |kind: &str| secrets.iter().filter(|s| s.kind == kind).count();
    assert!(count("access token") >= 10, "{}", count("access token"));
    assert!(count("refresh token") >= 4, "{}", count("refresh token"));
    assert!(count("client secret") >= 3);

    let mut texts: Vec<(String, String)> = Vec::new();
    for logs in logs {
        texts.extend(logs.read());
    }
    let stats: BTreeMap<&str, LogStats> = texts
        .iter()
        .map(|(name, text)| (name.as_str(), log_stats(text)))
        .collect();
    let summary: Vec<String> = stats
        .iter()
        .map(|(name, s)| {
            format!(
                "{name}: {} lines, {} debug, debug crates {:?}, all crates {:?}",
                s.lines, s.debug_lines, s.debug_crates, s.crates
            )
        })
        .collect();
    println!("logs in {}:\n{}", logs_dir.display(), summary.join("\n"));
    let identity_2 = &stats["identity-2.stdout.log"];
    let edge_stats = &stats["edge.stdout.log"];
    for (name, s) in [
        ("identity-1.stdout.log", &stats["identity-1.stdout.log"]),
        ("identity-2.stdout.log", identity_2),
        ("edge.stdout.log", edge_stats),
    ] {
        assert!(s.lines > 0 && s.debug_lines > 0, "{name}: {summary:?}");
        assert!(
            s.not_json.is_empty(),
            "{name}: lines {:?} are not JSON",
            s.not_json
        );
    }
    // At debug level only `tracing` events are written: `log` records
    // (tokio-postgres, reqwest, redis) are not bridged on purpose, and
    // request spans emit no events of their own. So the identity service
    // writes few lines: ours, and actix-server's (the edge adds hyper's).
    assert!(identity_2.lines >= 15, "{summary:?}");
    // The level asked for is the level written: a trace-level scan that
    // saw no TRACE line would have scanned a debug log twice.
    for (name, s) in [("identity", identity_2), ("edge", edge_stats)] {
        if log_level == "trace" {
            assert!(s.trace_lines > 0, "{name} wrote no TRACE line: {summary:?}");
        } else {
            assert_eq!(s.trace_lines, 0, "{name} wrote TRACE lines at {log_level}");
        }
    }
    assert!(identity_2.debug_crates.len() >= 2, "{summary:?}");
    assert!(identity_2.crates.len() >= 2, "{summary:?}");
    assert!(edge_stats.debug_crates.len() >= 2, "{summary:?}");
    let identity_text = &texts
        .iter()
        .find(|(n, _)| n == "identity-2.stdout.log")
        .unwrap()
        .1;
    for seen in [
        "/acme/oauth2/token",
        "/acme/oauth2/introspect",
        "/acme/oauth2/revoke",
        "token endpoint request refused",
        "refresh token reuse detected",
    ] {
        assert!(
            identity_text.contains(seen),
            "the identity logs never mention {seen}"
        );
    }
    assert!(stopped, "a process did not stop on SIGTERM");
    // The refused snapshot polls were logged (with their error).
    let wrong_edge_text = &texts
        .iter()
        .find(|(n, _)| n == "edge-wrong-key.stdout.log")
        .unwrap()
        .1;
    assert!(
        wrong_edge_text.contains("cannot fetch the revocation snapshot"),
        "{wrong_edge_text}"
    );

    let exchanges = std::mem::take(&mut *f.wire.exchanges.lock().unwrap());
    let statuses: BTreeSet<u16> = exchanges.iter().map(|e| e.status).collect();
    for status in [101, 200, 201, 204, 400, 401, 403, 404, 409, 413] {
        assert!(
            statuses.contains(&status),
            "no {status} answer was seen: {statuses:?}"
        );
    }
    let errors = exchanges.iter().filter(|e| e.status >= 400).count();
    assert!(errors >= 40, "only {errors} error answers");

    // The scanner finds each secret planted in a real log line.
    let sample = identity_text.lines().find(|l| l.contains("DEBUG")).unwrap();
    let middle = sample.len() / 2;
    let middle = (0..=middle)
        .rev()
        .find(|i| sample.is_char_boundary(*i))
        .unwrap();
    for secret in &secrets {
        let planted = format!("{}{}{}", &sample[..middle], secret.value, &sample[middle..]);
        assert!(
            scan(&secrets, "planted", &planted)
                .iter()
                .any(|f| f.kind == secret.kind),
            "the scanner misses a planted {}",
            secret.kind
        );
    }

    // ----- The scan. -----
    let mut findings = Vec::new();
    for (name, text) in &texts {
        findings.extend(scan(&secrets, &format!("log {name}"), text));
    }
    // A success that carries a secret by design (a token response, a new
    // client, a new client secret) is scanned for everything but the kinds
    // it carries.
    let carried = [
        "access token",
        "refresh token",
        "client secret",
        "rotated client secret",
    ];
    let not_carried: Vec<Secret> = secrets
        .iter()
        .filter(|s| !carried.iter().any(|kind| s.kind.starts_with(kind)))
        .cloned()
        .collect();
    let mut bodies = 0;
    for exchange in &exchanges {
        let place = format!("{} [{}]", exchange.what, exchange.status);
        findings.extend(scan(
            &secrets,
            &format!("headers of {place}"),
            &exchange.headers,
        ));
        bodies += 1;
        let allowed = if exchange.secret_bearing {
            &not_carried
        } else {
            &secrets
        };
        findings.extend(scan(allowed, &format!("body of {place}"), &exchange.body));
    }
    println!(
        "scanned {} secrets in {} log files, {} answers ({} error answers, {} bodies) in {:?} (flows {:?})",
        secrets.len(),
        texts.len(),
        exchanges.len(),
        errors,
        bodies,
        started.elapsed(),
        flows_took,
    );
    if findings.is_empty() {
        // `LEAKS_KEEP_LOGS=1` keeps them for a look.
        if std::env::var_os("LEAKS_KEEP_LOGS").is_none() {
            let _ = std::fs::remove_dir_all(logs_dir);
        }
    } else {
        let kept = &logs_dir;
        let shown: Vec<String> = findings.iter().take(60).map(ToString::to_string).collect();
        panic!(
            "{} secret(s) seen where they must not be (logs kept in {}):\n{}",
            findings.len(),
            kept.display(),
            shown.join("\n")
        );
    }
}

/// Runs `binary` with `args` and only `env`, at debug level, until it exits
/// (10 s at most); its stdout and stderr.
async fn run_to_exit(
    binary: &std::path::Path,
    args: &[&str],
    env: &BTreeMap<String, String>,
) -> (Option<i32>, String) {
    let mut child = std::process::Command::new(binary)
        .args(args)
        .env_clear()
        .envs(env)
        .env("KEYSILO_TELEMETRY__LOG_LEVEL", "debug")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if child.try_wait().unwrap().is_none() {
        terminate(&mut child).await;
    }
    let output = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.code(), text)
}

/// Refusing to start names the setting at fault, never its value: bad
/// master keys, short admin, edge and pepper keys, a wrong database
/// password.
#[tokio::test]
async fn start_up_refusals_name_settings_not_secret_values() {
    let database = create_database().await;
    let dir = tempfile::tempdir().unwrap();
    let mut secrets = Secrets::default();
    secrets.add("platform admin key", ADMIN_KEY);
    secrets.add("client-secret pepper", PEPPER);
    secrets.add("database password", &db_password());
    secrets.add_master_key("master key v1", MASTER_KEY_V1);
    let short_admin = format!("adm-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let short_pepper = format!("pep-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let short_edge = format!("edg-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    // 31 bytes, and something that is not base64 at all.
    let short_master = STANDARD.encode(&openssl::sha::sha256(b"leaks")[..31]);
    let garbled_master = format!("not base64 {}!!", uuid::Uuid::new_v4().simple());
    let wrong_db_password = format!("wrong-db-password-{}", uuid::Uuid::new_v4().simple());
    secrets.add("refused admin key (too short)", &short_admin);
    secrets.add("refused pepper (too short)", &short_pepper);
    secrets.add("refused edge key (too short)", &short_edge);
    secrets.add("refused master key (31 bytes)", &short_master);
    secrets.add("refused master key (not base64)", &garbled_master);
    secrets.add("wrong database password", &wrong_db_password);

    let config = TestConfig::new(&database);
    let file = dir.path().join("keysilo.toml");
    std::fs::write(&file, &config.toml).unwrap();
    let args = ["--config", file.to_str().unwrap()];
    let identity = crate::helpers::identity_binary();
    let mut outputs = Vec::new();
    for (what, overrides, command) in [
        (
            "short keys, short master key",
            vec![
                ("KEYSILO_SECRET_ADMIN_API_KEY", short_admin.as_str()),
                ("KEYSILO_SECRET_CLIENT_SECRET_PEPPER", short_pepper.as_str()),
                ("KEYSILO_SECRET_MASTER_KEY_V1", short_master.as_str()),
            ],
            vec!["config", "validate"],
        ),
        (
            // Alone: a short admin key hides it.
            "short edge key",
            vec![
                ("KEYSILO_ADMIN__EDGE_API_KEY", "${secret:edge-api-key}"),
                ("KEYSILO_SECRET_EDGE_API_KEY", short_edge.as_str()),
            ],
            vec!["config", "validate"],
        ),
        (
            "master key not base64 (serve)",
            vec![("KEYSILO_SECRET_MASTER_KEY_V1", garbled_master.as_str())],
            vec!["serve"],
        ),
        (
            "wrong database password (serve)",
            vec![(
                "KEYSILO_SECRET_DATABASE_PASSWORD",
                wrong_db_password.as_str(),
            )],
            vec!["serve"],
        ),
    ] {
        let mut env = config.env.clone();
        for (name, value) in overrides {
            env.insert(name.to_owned(), value.to_owned());
        }
        env.insert(
            "KEYSILO_SERVER__PORT".into(),
            crate::helpers::free_port().to_string(),
        );
        let all: Vec<&str> = args.iter().copied().chain(command).collect();
        let (code, text) = run_to_exit(&identity, &all, &env).await;
        assert_ne!(code, Some(0), "{what}: started anyway:\n{text}");
        outputs.push((what.to_owned(), text));
    }
    let edge_file = dir.path().join("edge.toml");
    std::fs::write(
        &edge_file,
        format!(
            "[edge]\nissuer_base = \"{ISSUER_BASE}\"\naudience = \"{AUDIENCE}\"\n\
             identity_api_key = \"${{secret:edge-api-key}}\"\n"
        ),
    )
    .unwrap();
    let edge_env = BTreeMap::from([("KEYSILO_SECRET_EDGE_API_KEY".to_owned(), short_edge.clone())]);
    let (_, text) = run_to_exit(
        &crate::helpers::edge_binary(),
        &[
            "--config",
            edge_file.to_str().unwrap(),
            "config",
            "validate",
        ],
        &edge_env,
    )
    .await;
    outputs.push(("edge: short identity key".to_owned(), text));

    // Not vacuous: every refusal said something, naming the setting.
    let all = outputs
        .iter()
        .map(|(w, t)| format!("== {w}\n{t}"))
        .collect::<String>();
    for (what, text) in &outputs {
        assert!(!text.trim().is_empty(), "{what}: said nothing");
    }
    for setting in [
        "admin.api_key",
        "admin.edge_api_key",
        "tokens.client_secret_pepper",
        "custody.master_keys[0]",
        "password authentication failed",
    ] {
        assert!(all.contains(setting), "no refusal names {setting}:\n{all}");
    }
    let findings: Vec<String> = outputs
        .iter()
        .flat_map(|(what, text)| scan(&secrets.items, what, text))
        .map(|f| f.to_string())
        .collect();
    assert!(
        findings.is_empty(),
        "secrets quoted by start-up refusals:\n{}",
        findings.join("\n")
    );
    // Safe to show now.
    println!("{all}");
}
