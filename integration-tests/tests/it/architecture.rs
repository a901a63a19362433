//! The architecture invariants of `docs/ARCHITECTURE.md`, checked on the
//! sources and on the dependency graph cargo resolves, so that a change
//! that breaks one fails here rather than in review.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use keysilo_coord::Event;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Every `.rs` file under `dir`, recursively, with its text.
fn sources(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                found.push((path, text));
            }
        }
    }
    assert!(!found.is_empty(), "no sources under {}", dir.display());
    found
}

/// The lines of `text` that are code, trimmed: comments are left out, and
/// so is an inline `#[cfg(test)] mod tests { … }` at the end of the file.
fn code_lines(text: &str) -> impl Iterator<Item = &str> {
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    let end = lines
        .windows(2)
        .position(|pair| pair[0] == "#[cfg(test)]" && pair[1].starts_with("mod tests {"))
        .unwrap_or(lines.len());
    lines
        .into_iter()
        .take(end)
        .filter(|line| !line.starts_with("//"))
}

#[test]
fn nothing_below_the_routes_of_the_identity_service_knows_actix() {
    let src = root().join("services/identity/src");
    let mut files = sources(&src.join("oauth"));
    files.extend(sources(&src.join("keys")));
    for name in [
        "tenants.rs",
        "events.rs",
        "state.rs",
        "clock.rs",
        "expiring.rs",
    ] {
        let path = src.join(name);
        let text = std::fs::read_to_string(&path).unwrap();
        files.push((path, text));
    }
    for (path, text) in files {
        for line in code_lines(&text) {
            assert!(
                !line.contains("actix"),
                "{} imports HTTP: `{line}`",
                path.display()
            );
        }
    }
}

#[test]
fn routes_leave_cache_invalidation_and_events_to_the_services() {
    let routes = root().join("services/identity/src/routes");
    for (path, text) in sources(&routes) {
        for line in code_lines(&text) {
            for banned in [".invalidate(", ".publish(", "Event::", ".clients."] {
                assert!(
                    !line.contains(banned),
                    "{} does a service's job (`{banned}`): `{line}`",
                    path.display()
                );
            }
        }
    }
}

#[test]
fn event_kinds_are_spelt_once_in_the_protocol_crate() {
    let kinds: Vec<&str> = [
        Event::TenantDisabled {
            tenant: keysilo_types::TenantId::parse("acme").unwrap(),
        },
        Event::MasterKeyRewrapped,
    ]
    .iter()
    .map(Event::kind)
    .collect();
    // Every kind string of the protocol, as literal in quotes.
    let protocol =
        std::fs::read_to_string(root().join("libs/keysilo-coord/src/events.rs")).unwrap();
    let literals: BTreeSet<&str> = protocol
        .split('"')
        .skip(1)
        .step_by(2)
        .filter(|s| {
            s.contains('.')
                && s.chars()
                    .all(|c| c.is_ascii_lowercase() || c == '.' || c == '_')
        })
        .collect();
    for kind in kinds {
        assert!(literals.contains(kind), "{kind} missing from the protocol");
    }
    for dir in ["services/identity/src", "services/edge/src"] {
        for (path, text) in sources(&root().join(dir)) {
            for kind in &literals {
                let quoted = format!("\"{kind}\"");
                assert!(
                    code_lines(&text).all(|line| !line.contains(&quoted)),
                    "{} spells the event kind {quoted} itself; use keysilo_coord::Event",
                    path.display()
                );
            }
        }
    }
}

/// The normal (not dev, not build) dependencies of each workspace
/// package, by name, as cargo resolves them.
fn dependency_graph() -> HashMap<String, Vec<String>> {
    // This machine's platform only: other platforms' packages need not be
    // downloaded, so this works offline.
    let platform = format!("{}-unknown-linux-gnu", std::env::consts::ARCH);
    let output = std::process::Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--offline", "--locked"])
        .args(["--filter-platform", &platform])
        .current_dir(root())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "cargo metadata: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let name_of: HashMap<&str, &str> = metadata["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["id"].as_str().unwrap(), p["name"].as_str().unwrap()))
        .collect();
    metadata["resolve"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|node| {
            let deps = node["deps"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|dep| {
                    dep["dep_kinds"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|k| k["kind"].is_null())
                })
                .map(|dep| name_of[dep["pkg"].as_str().unwrap()].to_owned())
                .collect();
            (name_of[node["id"].as_str().unwrap()].to_owned(), deps)
        })
        .collect()
}

/// Everything `package` links, itself included.
fn closure(graph: &HashMap<String, Vec<String>>, package: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut pending = vec![package.to_owned()];
    while let Some(name) = pending.pop() {
        if seen.insert(name.clone()) {
            pending.extend(graph.get(&name).into_iter().flatten().cloned());
        }
    }
    seen
}

#[test]
fn the_crate_graph_keeps_its_layers() {
    let graph = dependency_graph();
    // The edge verifies tokens; it never links key custody or AES-GCM.
    let edge = closure(&graph, "keysilo-edge");
    for banned in ["keysilo-custody", "aes-gcm", "keysilo-store", "argon2"] {
        assert!(!edge.contains(banned), "keysilo-edge links {banned}");
    }
    // The validation core is pure: no runtime, no network, no database.
    let tokens = closure(&graph, "keysilo-tokens");
    for banned in [
        "keysilo-custody",
        "tokio",
        "reqwest",
        "redis",
        "tokio-postgres",
    ] {
        assert!(!tokens.contains(banned), "keysilo-tokens links {banned}");
    }
    // Libraries never know HTTP servers or the services.
    for library in [
        "keysilo-types",
        "keysilo-config",
        "keysilo-custody",
        "keysilo-tokens",
        "keysilo-telemetry",
        "keysilo-store",
        "keysilo-coord",
        "keysilo-tls",
    ] {
        let linked = closure(&graph, library);
        for banned in ["actix-web", "keysilo-identity", "keysilo-edge"] {
            assert!(!linked.contains(banned), "{library} links {banned}");
        }
    }
    // Store and coordination stay apart; custody depends only on types.
    assert!(!closure(&graph, "keysilo-store").contains("keysilo-coord"));
    assert!(!closure(&graph, "keysilo-coord").contains("keysilo-store"));
    let custody: BTreeSet<String> = closure(&graph, "keysilo-custody")
        .into_iter()
        .filter(|name| name.starts_with("keysilo-"))
        .collect();
    assert_eq!(
        custody,
        BTreeSet::from(["keysilo-custody".to_owned(), "keysilo-types".to_owned()])
    );
}
