//! HTTP scenarios against the token endpoint.

use std::cell::RefCell;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Args;
use serde_json::{Value, json};

use crate::report::{Latencies, round};

/// Arguments of `refresh`.
#[derive(Args)]
pub struct RefreshArgs {
    /// The tenant's token endpoint.
    #[arg(long)]
    url: String,
    /// base64(client_id:client_secret) of a client allowed the password
    /// and refresh_token grants.
    #[arg(long, env = "KS_BASIC")]
    basic: String,
    /// The user's name.
    #[arg(long)]
    username: String,
    /// The user's password.
    #[arg(long, env = "KS_PASSWORD")]
    password: String,
    #[command(flatten)]
    phases: Phases,
}

/// How many connections, and how long each phase lasts.
#[derive(Args)]
pub struct Phases {
    /// Connections, each with one request out at a time.
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Seconds run before measuring.
    #[arg(long, default_value_t = 5)]
    warmup: u64,
    /// Seconds measured.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
}

/// Arguments of `rate`.
#[derive(Args)]
pub struct RateArgs {
    /// The tenant's token endpoint.
    #[arg(long)]
    url: String,
    /// base64(client_id:client_secret) of a client_credentials client.
    #[arg(long, env = "KS_BASIC")]
    basic: String,
    /// Requests per second, in all, spread over the connections.
    #[arg(long)]
    rate: f64,
    #[command(flatten)]
    phases: Phases,
}

/// Arguments of `exchange`.
#[derive(Args)]
pub struct ExchangeArgs {
    /// The tenant's token endpoint.
    #[arg(long)]
    url: String,
    /// The tenant's `/auth-token` endpoint.
    #[arg(long)]
    auth_token_url: String,
    /// base64(client_id:client_secret) of a client registered for
    /// `auth_token`.
    #[arg(long, env = "KS_BACKEND_BASIC")]
    basic: String,
    /// The public client that redeems.
    #[arg(long)]
    public_client: String,
    /// Auth tokens minted before the redemptions start; more than the
    /// warm-up and the measured run can spend.
    #[arg(long)]
    tokens: usize,
    #[command(flatten)]
    phases: Phases,
}

/// Arguments of `cold`.
#[derive(Args)]
pub struct ColdArgs {
    /// The identity service's base URL.
    #[arg(long)]
    base: String,
    /// Lines of `tenant base64(client_id:client_secret)`.
    #[arg(long)]
    file: PathBuf,
}

fn client() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .pool_max_idle_per_host(1024)
        .timeout(Duration::from_secs(30))
        .build()?)
}

/// One token-endpoint call; the parsed body of a 200, an error otherwise.
async fn token(
    client: &reqwest::Client,
    url: &str,
    basic: &str,
    form: &[(&str, &str)],
) -> anyhow::Result<Value> {
    let response = client
        .post(url)
        .header("Authorization", format!("Basic {basic}"))
        .form(form)
        .send()
        .await?;
    let status = response.status();
    let body: Value = response.json().await?;
    anyhow::ensure!(status.is_success(), "token endpoint answered {status}");
    Ok(body)
}

fn refresh_token_of(body: &Value) -> anyhow::Result<String> {
    body.get("refresh_token")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .context("no refresh_token in the answer")
}

/// Runs the refresh chains; see [`crate::Command::Refresh`].
pub async fn refresh(args: RefreshArgs) -> anyhow::Result<Value> {
    let client = client()?;
    let args = Rc::new(args);
    let login = |client: reqwest::Client, args: Rc<RefreshArgs>| async move {
        let form = [
            ("grant_type", "password"),
            ("username", args.username.as_str()),
            ("password", args.password.as_str()),
        ];
        refresh_token_of(&token(&client, &args.url, &args.basic, &form).await?)
    };
    // Logins first (each one is an argon2id check), then the chains.
    let mut chains = Vec::with_capacity(args.phases.connections);
    for _ in 0..args.phases.connections {
        chains.push(login(client.clone(), args.clone()).await?);
    }
    let latencies = Rc::new(RefCell::new(Latencies::new()?));
    let warm_until = Instant::now() + Duration::from_secs(args.phases.warmup);
    let stop_at = warm_until + Duration::from_secs(args.phases.seconds);
    let local = tokio::task::LocalSet::new();
    for mut current in chains {
        let (client, args, latencies) = (client.clone(), args.clone(), latencies.clone());
        local.spawn_local(async move {
            loop {
                let sent = Instant::now();
                if sent >= stop_at {
                    break;
                }
                let form = [
                    ("grant_type", "refresh_token"),
                    ("refresh_token", current.as_str()),
                ];
                let outcome = token(&client, &args.url, &args.basic, &form)
                    .await
                    .and_then(|body| refresh_token_of(&body));
                let measured = sent >= warm_until && Instant::now() <= stop_at;
                match outcome {
                    Ok(next) => {
                        if measured {
                            latencies.borrow_mut().ok(sent.elapsed());
                        }
                        current = next;
                    }
                    Err(_) => {
                        if measured {
                            latencies.borrow_mut().error();
                        }
                        // A broken chain starts again from a login.
                        match login(client.clone(), args.clone()).await {
                            Ok(token) => current = token,
                            Err(_) => break,
                        }
                    }
                }
            }
        });
    }
    local.await;
    let latencies = latencies.borrow();
    Ok(latencies.report(Duration::from_secs(args.phases.seconds)))
}

/// Runs the open-loop rate; see [`crate::Command::Rate`]. As in wrk2,
/// each of `connections` workers keeps its own connection and its own
/// schedule (every `connections / rate` seconds, staggered); a request
/// that is due while the previous one is still out is sent late, and its
/// latency still counts from when it was due.
pub async fn rate(args: RateArgs) -> anyhow::Result<Value> {
    anyhow::ensure!(args.rate > 0.0, "--rate must be positive");
    anyhow::ensure!(
        args.phases.connections > 0,
        "--connections must be positive"
    );
    let period = Duration::from_secs_f64(args.phases.connections as f64 / args.rate);
    // One client each, so one connection each, kept alive. Built before
    // the clock starts: each one loads the system's root certificates.
    let clients = (0..args.phases.connections)
        .map(|_| {
            reqwest::Client::builder()
                .pool_max_idle_per_host(1)
                .timeout(Duration::from_secs(30))
                .build()
        })
        .collect::<Result<Vec<_>, _>>()?;
    let latencies = Rc::new(RefCell::new(Latencies::new()?));
    let started = Instant::now();
    let warm_until = started + Duration::from_secs(args.phases.warmup);
    let stop_at = warm_until + Duration::from_secs(args.phases.seconds);
    let args = Rc::new(args);
    let local = tokio::task::LocalSet::new();
    for (worker, client) in clients.into_iter().enumerate() {
        let (args, latencies) = (args.clone(), latencies.clone());
        let mut due = started + period.mul_f64(worker as f64 / args.phases.connections as f64);
        local.spawn_local(async move {
            while due < stop_at {
                tokio::time::sleep_until(due.into()).await;
                let form = [("grant_type", "client_credentials")];
                let outcome = token(&client, &args.url, &args.basic, &form).await;
                if due >= warm_until {
                    let mut latencies = latencies.borrow_mut();
                    match outcome {
                        Ok(_) => latencies.ok(due.elapsed()),
                        Err(_) => latencies.error(),
                    }
                }
                due += period;
            }
        });
    }
    local.await;
    let latencies = latencies.borrow();
    let mut report = latencies.report(Duration::from_secs(args.phases.seconds));
    if let Some(object) = report.as_object_mut() {
        object.insert("offered_rate".into(), json!(round(args.rate, 1)));
    }
    Ok(report)
}

/// Runs the cold-tenant pass; see [`crate::Command::Cold`].
pub async fn cold(args: ColdArgs) -> anyhow::Result<Value> {
    let client = client()?;
    let text = std::fs::read_to_string(&args.file)
        .with_context(|| format!("reading {}", args.file.display()))?;
    let mut cold = Latencies::new()?;
    let mut warm = Latencies::new()?;
    let started = Instant::now();
    for line in text.lines() {
        let mut fields = line.split_whitespace();
        let (Some(tenant), Some(basic)) = (fields.next(), fields.next()) else {
            continue;
        };
        let url = format!("{}/{tenant}/oauth2/token", args.base);
        let form = [("grant_type", "client_credentials")];
        for record in [&mut cold, &mut warm] {
            let sent = Instant::now();
            match token(&client, &url, basic, &form).await {
                Ok(_) => record.ok(sent.elapsed()),
                Err(_) => record.error(),
            }
        }
    }
    Ok(json!({
        "tenants": cold.count() + cold.errors(),
        "seconds": round(started.elapsed().as_secs_f64(), 1),
        "cold_mean_ms": round(cold.mean_ms(), 3),
        "cold_p99_ms": round(cold.quantile_ms(0.99), 3),
        "warm_mean_ms": round(warm.mean_ms(), 3),
        "cold_cost_ms": round(cold.mean_ms() - warm.mean_ms(), 3),
        "errors": cold.errors() + warm.errors(),
    }))
}

/// Mints `args.tokens` auth tokens, then redeems them with the token
/// exchange as the public client; see [`crate::Command::Exchange`]. Only
/// the redemptions are measured; the report also gives the minting rate
/// (all connections, one request out each).
pub async fn exchange(args: ExchangeArgs) -> anyhow::Result<Value> {
    let client = client()?;
    let args = Rc::new(args);
    let pool = Rc::new(RefCell::new(Vec::with_capacity(args.tokens)));
    let minted_at = Instant::now();
    let local = tokio::task::LocalSet::new();
    let per_connection = args.tokens.div_ceil(args.phases.connections.max(1));
    for connection in 0..args.phases.connections {
        let (client, args, pool) = (client.clone(), args.clone(), pool.clone());
        local.spawn_local(async move {
            for i in 0..per_connection {
                let subject = format!("bench-subject-{connection}-{i}");
                let form = [
                    ("subject", subject.as_str()),
                    ("public_client_id", args.public_client.as_str()),
                ];
                if let Ok(body) = token(&client, &args.auth_token_url, &args.basic, &form).await
                    && let Some(token) = body.get("auth_token").and_then(Value::as_str)
                {
                    pool.borrow_mut().push(token.to_owned());
                }
            }
        });
    }
    local.await;
    let minting = minted_at.elapsed();
    let minted = pool.borrow().len();
    anyhow::ensure!(minted > 0, "no auth token could be minted");

    let latencies = Rc::new(RefCell::new(Latencies::new()?));
    let exhausted = Rc::new(RefCell::new(false));
    let warm_until = Instant::now() + Duration::from_secs(args.phases.warmup);
    let stop_at = warm_until + Duration::from_secs(args.phases.seconds);
    let local = tokio::task::LocalSet::new();
    for _ in 0..args.phases.connections {
        let (client, args, pool) = (client.clone(), args.clone(), pool.clone());
        let (latencies, exhausted) = (latencies.clone(), exhausted.clone());
        local.spawn_local(async move {
            loop {
                let sent = Instant::now();
                if sent >= stop_at {
                    break;
                }
                let Some(subject_token) = pool.borrow_mut().pop() else {
                    *exhausted.borrow_mut() = true;
                    break;
                };
                let form = [
                    (
                        "grant_type",
                        "urn:ietf:params:oauth:grant-type:token-exchange",
                    ),
                    ("client_id", args.public_client.as_str()),
                    ("subject_token", subject_token.as_str()),
                    (
                        "subject_token_type",
                        "urn:keysilo:params:oauth:token-type:auth-token",
                    ),
                ];
                let response = client.post(&args.url).form(&form).send().await;
                let ok = match response {
                    Ok(r) => r.status().is_success() && r.bytes().await.is_ok(),
                    Err(_) => false,
                };
                if sent >= warm_until && Instant::now() <= stop_at {
                    if ok {
                        latencies.borrow_mut().ok(sent.elapsed());
                    } else {
                        latencies.borrow_mut().error();
                    }
                }
            }
        });
    }
    local.await;
    anyhow::ensure!(
        !*exhausted.borrow(),
        "the {minted} auth tokens ran out before the run ended; mint more (--tokens)"
    );
    let mut report = latencies
        .borrow()
        .report(Duration::from_secs(args.phases.seconds));
    if let Some(fields) = report.as_object_mut() {
        fields.insert("minted".into(), json!(minted));
        fields.insert(
            "mint_per_s".into(),
            json!(round(minted as f64 / minting.as_secs_f64(), 1)),
        );
    }
    Ok(report)
}
