//! Abuse: a password flood is throttled (what it costs other clients is
//! measured and reported), and
//! slow, oversized and malformed requests are cut off without starving
//! anyone (the service runs with a single HTTP worker here).

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::helpers::{TestApp, TestConfig, create_database, spawn_app_with};

const PASSWORD: &str = "correct horse battery staple";

/// The 99th percentile of `samples` (sorted in place).
fn p99(samples: &mut [Duration]) -> Duration {
    samples.sort();
    let index = (samples.len() * 99 / 100).min(samples.len().saturating_sub(1));
    samples.get(index).copied().unwrap_or_default()
}

/// `n` sequential `client_credentials` requests; their latencies.
async fn issue(app: &TestApp, client: &(String, String), n: usize) -> Vec<Duration> {
    let mut latencies = Vec::with_capacity(n);
    for _ in 0..n {
        let start = Instant::now();
        let response = app
            .token(
                "acme",
                (&client.0, &client.1),
                &[("grant_type", "client_credentials")],
            )
            .await;
        latencies.push(start.elapsed());
        assert_eq!(response.status(), 200);
    }
    latencies
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_flood_is_throttled_before_argon2_and_leaves_other_users_alone() {
    let database = create_database().await;
    let app = spawn_app_with(TestConfig::new(&database), database).await;
    app.create_tenant("acme").await;
    let machine = app
        .create_client(
            "acme",
            json!({ "name": "m2m", "grant_types": ["client_credentials"] }),
        )
        .await;
    let login = app
        .create_client(
            "acme",
            json!({ "name": "app", "grant_types": ["password"] }),
        )
        .await;
    app.create_user("acme", "alice", PASSWORD, &[]).await;
    app.create_user("acme", "bob", PASSWORD, &[]).await;
    issue(&app, &machine, 50).await;

    // Rounds of (unloaded, flooded) measurements, interleaved so that the
    // machine's own noise hits both alike.
    let mut ratios = Vec::new();
    let (mut wrong, mut throttled) = (0usize, 0usize);
    for _ in 0..3 {
        let unloaded = p99(&mut issue(&app, &machine, 200).await);
        // 1,000 wrong passwords a second for one user, from one address:
        // far beyond any person, paced so that the load generator, which
        // shares these two cores, does not starve the service itself.
        let flood: Vec<_> = (0..4)
            .map(|_| {
                let url = format!("{}/acme/oauth2/token", app.address);
                let login = login.clone();
                tokio::spawn(async move {
                    let http = reqwest::Client::new();
                    let (mut wrong, mut throttled) = (0usize, 0usize);
                    let until = Instant::now() + Duration::from_secs(2);
                    let mut pace = tokio::time::interval(Duration::from_millis(4));
                    while Instant::now() < until {
                        pace.tick().await;
                        let status = http
                            .post(&url)
                            .basic_auth(&login.0, Some(&login.1))
                            .form(&[
                                ("grant_type", "password"),
                                ("username", "alice"),
                                ("password", "guess"),
                            ])
                            .send()
                            .await
                            .unwrap()
                            .status();
                        match status.as_u16() {
                            400 => wrong += 1,
                            429 => throttled += 1,
                            other => panic!("flood answered {other}"),
                        }
                    }
                    (wrong, throttled)
                })
            })
            .collect();
        let flooded = p99(&mut issue(&app, &machine, 200).await);
        for task in flood {
            let (w, t) = task.await.unwrap();
            wrong += w;
            throttled += t;
        }
        ratios.push(flooded.as_secs_f64() / unloaded.as_secs_f64());
        println!("client_credentials p99: unloaded {unloaded:?}, during the flood {flooded:?}");
    }
    ratios.sort_by(f64::total_cmp);
    let median = ratios[1];
    println!(
        "password flood: {wrong} checked, {throttled} throttled (429); \
         client_credentials p99 ratio flooded/unloaded per round {ratios:.2?}, median {median:.2}"
    );
    // The back-off, not argon2, answers the flood: a handful of passwords
    // are checked, after which every attempt is refused before hashing.
    assert!(wrong <= 20, "{wrong} passwords checked during the flood");
    assert!(throttled > 1000, "{throttled} attempts throttled");
    // The latency ratio is reported, not asserted (hence the test's name):
    // the load generator shares this machine's two cores with the service
    // and with the other tests, so a timing bound here would measure the
    // neighbours. docs/failure-modes.md records it from a quiet run.

    // Alice is backed off even with her right password; Bob is not.
    for (user, expected) in [("alice", 429), ("bob", 200)] {
        let form = [
            ("grant_type", "password"),
            ("username", user),
            ("password", PASSWORD),
        ];
        let response = app.token("acme", (&login.0, &login.1), &form).await;
        assert_eq!(response.status(), expected, "{user}");
    }
}

/// Connects to `port` with a read timeout.
fn connect(port: u16) -> TcpStream {
    let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    stream
}

/// What the server says next on `stream`: its status line, `"closed"` when
/// it closed or reset the connection, or `"timeout"` when it said nothing
/// within the read timeout (a server that never cuts a client off).
fn answer(stream: &mut TcpStream) -> String {
    let mut buffer = [0u8; 1024];
    match stream.read(&mut buffer) {
        Ok(0) => "closed".into(),
        Err(err)
            if matches!(
                err.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            "timeout".into()
        }
        Err(_) => "closed".into(),
        Ok(n) => String::from_utf8_lossy(&buffer[..n])
            .lines()
            .next()
            .unwrap_or_default()
            .to_owned(),
    }
}

/// Sends `request` whole and reads the status line.
fn exchange(port: u16, request: &[u8]) -> String {
    let mut stream = connect(port);
    stream.write_all(request).unwrap();
    answer(&mut stream)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_oversized_and_malformed_requests_are_cut_off_without_starving_others() {
    let database = create_database().await;
    let config = TestConfig::new(&database).set("KEYSILO_SERVER__REQUEST_TIMEOUT_SECONDS", "2");
    let app = spawn_app_with(config, database).await;
    app.create_tenant("acme").await;
    let machine = app
        .create_client(
            "acme",
            json!({ "name": "m2m", "grant_types": ["client_credentials"] }),
        )
        .await;
    let port: u16 = app.address.rsplit(':').next().unwrap().parse().unwrap();

    // Slowloris: headers that never end, and a body that trickles.
    let slow_headers: Vec<TcpStream> = (0..50)
        .map(|_| {
            let mut stream = connect(port);
            stream
                .write_all(b"POST /acme/oauth2/token HTTP/1.1\r\nHost: localhost\r\n")
                .unwrap();
            stream
        })
        .collect();
    let slow_bodies: Vec<TcpStream> = (0..20)
        .map(|_| {
            let mut stream = connect(port);
            stream
                .write_all(
                    b"POST /acme/oauth2/token HTTP/1.1\r\nHost: localhost\r\n\
                      Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 1000\r\n\r\ngrant",
                )
                .unwrap();
            stream
        })
        .collect();
    let trickle = tokio::task::spawn_blocking(move || {
        let mut bodies = slow_bodies;
        for _ in 0..6 {
            std::thread::sleep(Duration::from_millis(500));
            for stream in &mut bodies {
                let _ = stream.write_all(b"_");
            }
        }
        bodies
    });
    // Everyone else is served meanwhile, on the single worker, and soon:
    // well before the request deadline (2 s) could have freed the worker.
    let served = |what: &'static str| {
        let (app, machine) = (&app, &machine);
        async move {
            let deadline = Duration::from_millis(1800);
            tokio::time::timeout(deadline, issue(app, machine, 20))
                .await
                .unwrap_or_else(|_| panic!("20 tokens took over {deadline:?} {what}"));
        }
    };
    served("while slow clients hold connections").await;
    let mut bodies = trickle.await.unwrap();
    served("while slow bodies trickle").await;
    let cut = tokio::task::spawn_blocking(move || {
        let bodies: Vec<String> = bodies.iter_mut().map(answer).collect();
        let headers: Vec<String> = slow_headers
            .into_iter()
            .map(|mut s| answer(&mut s))
            .collect();
        (bodies, headers)
    })
    .await
    .unwrap();
    // The trickled bodies hit the request deadline; the endless headers
    // actix-web's header timeout (408, or the connection closed).
    assert!(
        cut.0.iter().all(|s| s.starts_with("HTTP/1.1 408")),
        "{:?}",
        cut.0
    );
    assert!(
        cut.1
            .iter()
            .all(|s| s.starts_with("HTTP/1.1 408") || s == "closed"),
        "{:?}",
        cut.1
    );

    // Oversized: a form over 16 KiB, a JSON body over 64 KiB, huge headers.
    let form = "x".repeat(17 * 1024);
    let response = app
        .client
        .post(format!("{}/acme/oauth2/token", app.address))
        .basic_auth(&machine.0, Some(&machine.1))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    let response = app
        .admin_post(
            "/tenants",
            json!({ "id": "big", "display_name": "x".repeat(70 * 1024) }),
        )
        .await;
    assert_eq!(response.status(), 413);
    let outcomes = tokio::task::spawn_blocking(move || {
        let huge = format!("GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Big: {}\r\n\r\n", "a".repeat(64 * 1024));
        let many: String = (0..200).map(|i| format!("X-H{i}: v\r\n")).collect();
        let many = format!("GET /healthz HTTP/1.1\r\nHost: localhost\r\n{many}\r\n");
        [
            exchange(port, huge.as_bytes()),
            exchange(port, many.as_bytes()),
            // Malformed: not HTTP, a bad version, a NUL in a header, a
            // broken chunked body, a bad Content-Length.
            exchange(port, b"GARBAGE\r\n\r\n"),
            exchange(port, b"GET /healthz HTTP/9.9\r\nHost: x\r\n\r\n"),
            exchange(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: a\0b\r\n\r\n"),
            exchange(
                port,
                b"POST /acme/oauth2/token HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            ),
            exchange(port, b"POST /acme/oauth2/token HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n"),
        ]
    })
    .await
    .unwrap();
    for outcome in &outcomes {
        let client_error = outcome
            .strip_prefix("HTTP/1.1 4")
            .is_some_and(|rest| rest.len() >= 2);
        assert!(client_error || outcome == "closed", "{outcomes:?}");
    }
    // And the service is as fast as ever for others.
    served("after the malformed requests").await;
    assert_eq!(app.get("/healthz").await.status(), 200);
}

/// One password login of `username` to `tenant`; its status and latency.
async fn login(
    http: &reqwest::Client,
    app: &TestApp,
    tenant: &str,
    client: &(String, String),
    username: &str,
    password: &str,
) -> (u16, Duration) {
    let started = Instant::now();
    let status = http
        .post(format!("{}/{tenant}/oauth2/token", app.address))
        .basic_auth(&client.0, Some(&client.1))
        .form(&[
            ("grant_type", "password"),
            ("username", username),
            ("password", password),
        ])
        .send()
        .await
        .unwrap()
        .status()
        .as_u16();
    (status, started.elapsed())
}

#[tokio::test]
async fn a_random_username_password_flood_under_one_tenant_leaves_another_tenants_logins_alone() {
    let database = create_database().await;
    // Neither the per-address nor the per-client limit may hide the
    // flood: only the password pool's fairness is under test.
    let config = TestConfig::new(&database)
        .set("KEYSILO_LIMITS__TOKEN_PER_ADDRESS_PER_SECOND", "100000")
        .set("KEYSILO_LIMITS__TOKEN_PER_CLIENT_PER_SECOND", "100000")
        .set("KEYSILO_LIMITS__TOKEN_BURST", "100000");
    let app = spawn_app_with(config, database).await;
    let mut clients = Vec::new();
    for tenant in ["flooded", "quiet"] {
        app.create_tenant(tenant).await;
        clients.push(
            app.create_client(
                tenant,
                json!({ "name": "web", "grant_types": ["password"] }),
            )
            .await,
        );
    }
    let (flooded, quiet) = (clients[0].clone(), clients[1].clone());
    app.create_user("quiet", "bob", "correct horse battery", &[])
        .await;
    let http = reqwest::Client::new();
    let logins = |n: usize| {
        let (http, app, quiet) = (http.clone(), &app, quiet.clone());
        async move {
            let mut answers = Vec::new();
            for _ in 0..n {
                answers
                    .push(login(&http, app, "quiet", &quiet, "bob", "correct horse battery").await);
            }
            answers
        }
    };
    logins(2).await;

    let mut ratios = Vec::new();
    let mut busy = 0usize;
    for _ in 0..5 {
        let mut unloaded: Vec<Duration> = logins(15).await.into_iter().map(|(_, d)| d).collect();
        // Random usernames (never one user's back-off), paced so the load
        // generator does not starve the service of CPU itself.
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        // More at once than one tenant's share of the queue (32): a shared
        // FIFO queue would hold every quiet login behind the flood, or
        // refuse it.
        let flood: Vec<_> = (0..36)
            .map(|i| {
                let (http, address, flooded, stop) = (
                    http.clone(),
                    app.address.clone(),
                    flooded.clone(),
                    stop.clone(),
                );
                tokio::spawn(async move {
                    let mut pace = tokio::time::interval(Duration::from_millis(200));
                    let mut n = 0u64;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        pace.tick().await;
                        n += 1;
                        let _ = http
                            .post(format!("{address}/flooded/oauth2/token"))
                            .basic_auth(&flooded.0, Some(&flooded.1))
                            .form(&[
                                ("grant_type", "password"),
                                ("username", format!("nobody-{i}-{n}").as_str()),
                                ("password", "guess"),
                            ])
                            .send()
                            .await;
                    }
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let during = logins(15).await;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for task in flood {
            task.await.unwrap();
        }
        busy += during.iter().filter(|(status, _)| *status == 503).count();
        assert!(
            during.iter().all(|(status, _)| *status == 200),
            "{during:?}"
        );
        let mut flooded_latency: Vec<Duration> = during.into_iter().map(|(_, d)| d).collect();
        let (unloaded, flooded_p99) = (p99(&mut unloaded), p99(&mut flooded_latency));
        println!(
            "quiet tenant's login p99: unloaded {unloaded:?}, during the flood {flooded_p99:?}"
        );
        ratios.push(flooded_p99.as_secs_f64() / unloaded.as_secs_f64());
    }
    ratios.sort_by(f64::total_cmp);
    println!("login p99 ratio flooded/unloaded per round {ratios:.2?}");
    assert_eq!(busy, 0);
    // Each of its checks waits for at most one running check per worker
    // (round-robin between tenants), not behind the flood's queue: about
    // 2x the unloaded p99 alone, more when the other tests share the two
    // cores. The ratio is reported, not asserted; the scheduler's order is
    // asserted by the unit tests of `oauth::passwords`, and a shared queue
    // fails this test with 503s.
}
