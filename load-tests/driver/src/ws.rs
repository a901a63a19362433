//! WebSocket sessions on an edge, closed by revoking the key that signed
//! their tokens.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Args;
use futures_util::StreamExt as _;
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

use crate::report::{Latencies, round};

/// Arguments of `ws`.
#[derive(Args)]
pub struct WsArgs {
    /// The edge's WebSocket URL (`ws://host:port/ws`).
    #[arg(long)]
    edge: String,
    /// The edge's process id, to read its resident memory.
    #[arg(long)]
    edge_pid: u32,
    /// The identity service's base URL.
    #[arg(long)]
    identity: String,
    /// The tenant whose key is revoked.
    #[arg(long)]
    tenant: String,
    /// The platform admin key.
    #[arg(long, env = "KS_ADMIN_KEY")]
    admin_key: String,
    /// base64(client_id:client_secret) of a client of the tenant whose
    /// audience the edge accepts.
    #[arg(long, env = "KS_BASIC")]
    basic: String,
    /// Sessions opened.
    #[arg(long, default_value_t = 10_000)]
    sessions: usize,
    /// Distinct tokens the sessions share.
    #[arg(long, default_value_t = 100)]
    tokens: usize,
    /// Handshakes in flight at once while opening.
    #[arg(long, default_value_t = 128)]
    open_concurrency: usize,
    /// How long to wait for every session to close.
    #[arg(long, default_value_t = 10)]
    timeout: u64,
}

/// What one session saw.
#[derive(Clone, Copy)]
enum Session {
    Opening,
    Open,
    Failed,
    Closed(Instant),
}

/// Resident memory of `pid` in KiB.
fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .context("no VmRSS in /proc/PID/status")
}

async fn mint(client: &reqwest::Client, args: &WsArgs) -> anyhow::Result<String> {
    let body: Value = client
        .post(format!("{}/{}/oauth2/token", args.identity, args.tenant))
        .header("Authorization", format!("Basic {}", args.basic))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    body.get("access_token")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .context("no access_token")
}

async fn active_kid(client: &reqwest::Client, args: &WsArgs) -> anyhow::Result<String> {
    let body: Value = client
        .get(format!(
            "{}/admin/v1/tenants/{}/keys",
            args.identity, args.tenant
        ))
        .bearer_auth(&args.admin_key)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    body.get("keys")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|key| key.get("status") == Some(&json!("active")))
        .and_then(|key| key.get("kid"))
        .and_then(Value::as_str)
        .map(str::to_owned)
        .context("the tenant has no active key")
}

/// Waits until `done` holds for every session or `deadline` passes.
async fn wait_for(
    sessions: &RefCell<Vec<Session>>,
    deadline: Instant,
    done: impl Fn(&Session) -> bool,
) {
    while Instant::now() < deadline && !sessions.borrow().iter().all(&done) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Runs the scenario; see [`crate::Command::Ws`].
pub async fn revocation(args: WsArgs) -> anyhow::Result<Value> {
    let client = reqwest::Client::new();
    let mut tokens = Vec::with_capacity(args.tokens);
    for _ in 0..args.tokens.max(1) {
        tokens.push(mint(&client, &args).await?);
    }
    let rss_before = rss_kib(args.edge_pid)?;
    let sessions = Rc::new(RefCell::new(vec![Session::Opening; args.sessions]));
    let opening = Rc::new(Semaphore::new(args.open_concurrency.max(1)));
    let local = tokio::task::LocalSet::new();
    let opened = Instant::now();
    for (index, token) in (0..args.sessions).zip(tokens.iter().cycle()) {
        let mut request = args.edge.as_str().into_client_request()?;
        request
            .headers_mut()
            .insert("authorization", format!("Bearer {token}").parse()?);
        let (sessions, opening) = (sessions.clone(), opening.clone());
        local.spawn_local(async move {
            let set = |state| {
                if let Some(slot) = sessions.borrow_mut().get_mut(index) {
                    *slot = state;
                }
            };
            let permit = opening.acquire().await;
            let Ok((mut socket, _)) = tokio_tungstenite::connect_async(request).await else {
                set(Session::Failed);
                return;
            };
            drop(permit);
            set(Session::Open);
            // Any close frame, error or end of stream ends the session.
            while let Some(Ok(message)) = socket.next().await {
                if matches!(message, Message::Close(_)) {
                    break;
                }
            }
            set(Session::Closed(Instant::now()));
        });
    }
    let report = local
        .run_until(async {
            let deadline = Instant::now() + Duration::from_secs(120);
            wait_for(&sessions, deadline, |s| !matches!(s, Session::Opening)).await;
            let open_seconds = opened.elapsed().as_secs_f64();
            let open = sessions
                .borrow()
                .iter()
                .filter(|s| matches!(s, Session::Open))
                .count();
            // Let the edge settle before reading its memory.
            tokio::time::sleep(Duration::from_secs(1)).await;
            let rss_after = rss_kib(args.edge_pid)?;

            let kid = active_kid(&client, &args).await?;
            client
                .post(format!(
                    "{}/admin/v1/tenants/{}/keys/{kid}/revoke",
                    args.identity, args.tenant
                ))
                .bearer_auth(&args.admin_key)
                .send()
                .await?
                .error_for_status()?;
            let returned = Instant::now();
            let deadline = returned + Duration::from_secs(args.timeout);
            wait_for(&sessions, deadline, |s| {
                !matches!(s, Session::Open | Session::Opening)
            })
            .await;

            let mut latencies = Latencies::new()?;
            let mut before_return = 0u64;
            for session in sessions.borrow().iter() {
                match session {
                    Session::Closed(at) => {
                        if *at < returned {
                            before_return += 1;
                        }
                        latencies.ok(at.saturating_duration_since(returned));
                    }
                    Session::Open | Session::Opening | Session::Failed => latencies.error(),
                }
            }
            let per_session = rss_after.saturating_sub(rss_before) as f64 / open.max(1) as f64;
            anyhow::Ok(json!({
                "sessions": args.sessions,
                "opened": open,
                "open_seconds": round(open_seconds, 2),
                "closed": latencies.count(),
                "closed_before_return": before_return,
                "p50_ms": round(latencies.quantile_ms(0.50), 3),
                "p95_ms": round(latencies.quantile_ms(0.95), 3),
                "p99_ms": round(latencies.quantile_ms(0.99), 3),
                "max_ms": round(latencies.quantile_ms(1.0), 3),
                "errors": latencies.errors(),
                "edge_rss_before_kib": rss_before,
                "edge_rss_after_kib": rss_after,
                "kib_per_session": round(per_session, 2),
            }))
        })
        .await?;
    Ok(report)
}
