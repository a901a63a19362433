use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::*;

const ADMIN_KEY: &str = "admin-key-that-is-long-enough-0123456789";
const MASTER_KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

const MINIMAL: &str = r#"
[admin]
api_key = "${secret:admin-api-key}"

[tokens]
client_secret_pepper = "${secret:client-secret-pepper}"

[[custody.master_keys]]
version = 1
key = "${secret:master-key-v1}"
"#;

fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

const PEPPER: &str = "pepper-pepper-pepper-pepper-pepper-0";

fn secret_env() -> BTreeMap<String, String> {
    env(&[
        ("KEYSILO_SECRET_ADMIN_API_KEY", ADMIN_KEY),
        ("KEYSILO_SECRET_MASTER_KEY_V1", MASTER_KEY),
        ("KEYSILO_SECRET_CLIENT_SECRET_PEPPER", PEPPER),
    ])
}

fn write_secret(dir: &Path, name: &str, value: &str, mode: u32) {
    let path = dir.join(name);
    std::fs::write(&path, value).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn problems(result: Result<Settings, ConfigError>) -> Vec<Problem> {
    match result {
        Ok(_) => panic!("expected the configuration to be refused"),
        Err(ConfigError(problems)) => problems,
    }
}

#[test]
fn defaults_with_secrets_from_env_are_valid() {
    let settings = Settings::from_sources(Some(MINIMAL), &secret_env()).unwrap();

    assert_eq!(settings.admin.api_key.expose(), ADMIN_KEY);
    assert_eq!(settings.custody.current_master_key_version, 1);
    assert_eq!(settings.server.public_base_url, "http://127.0.0.1:8080");
    assert_eq!(settings.keys.jwks_max_age_seconds, 60);
}

#[test]
fn env_provider_upper_cases_names_and_maps_dashes() {
    let providers = SecretProviders::new(vec![SecretProvider::Env(env(&[(
        "KEYSILO_SECRET_DB_PASS_WORD",
        "hunter2",
    )]))]);

    assert_eq!(
        providers.resolve("db-pass.word").unwrap().expose(),
        "hunter2"
    );
}

#[test]
fn file_provider_reads_an_owner_only_file_without_its_newline() {
    let dir = tempfile::tempdir().unwrap();
    write_secret(
        dir.path(),
        "admin-api-key",
        &format!("{ADMIN_KEY}\n"),
        0o600,
    );
    write_secret(dir.path(), "master-key-v1", MASTER_KEY, 0o400);
    write_secret(dir.path(), "client-secret-pepper", PEPPER, 0o600);
    let toml = format!(
        "[secrets]\nproviders = [\"file\"]\nfile_dir = {:?}\n{MINIMAL}",
        dir.path()
    );

    let settings = Settings::from_sources(Some(&toml), &BTreeMap::new()).unwrap();

    assert_eq!(settings.admin.api_key.expose(), ADMIN_KEY);
}

#[test]
fn a_secret_file_readable_by_others_is_refused_naming_the_file_and_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    write_secret(dir.path(), "admin-api-key", ADMIN_KEY, 0o644);
    let providers = SecretProviders::new(vec![SecretProvider::File(dir.path().to_owned())]);

    let err = providers.resolve("admin-api-key").unwrap_err();

    let message = err.to_string();
    let path = dir.path().join("admin-api-key");
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(
        message.contains(&format!("chmod 600 {}", path.display())),
        "{message}"
    );
    assert!(!message.contains(ADMIN_KEY));
}

#[test]
fn a_group_readable_secret_file_is_refused_too() {
    let dir = tempfile::tempdir().unwrap();
    write_secret(dir.path(), "s", "value", 0o640);
    let providers = SecretProviders::new(vec![SecretProvider::File(dir.path().to_owned())]);

    assert!(matches!(
        providers.resolve("s"),
        Err(SecretError::InsecureFile { mode: 0o640, .. })
    ));
}

#[test]
fn providers_are_tried_in_order_and_the_first_match_wins() {
    let dir = tempfile::tempdir().unwrap();
    write_secret(dir.path(), "token", "from-file", 0o600);
    let env_provider = SecretProvider::Env(env(&[("KEYSILO_SECRET_TOKEN", "from-env")]));
    let file_provider = SecretProvider::File(dir.path().to_owned());

    let env_first = SecretProviders::new(vec![env_provider.clone(), file_provider.clone()]);
    let file_first = SecretProviders::new(vec![file_provider, env_provider]);

    assert_eq!(env_first.resolve("token").unwrap().expose(), "from-env");
    assert_eq!(file_first.resolve("token").unwrap().expose(), "from-file");
}

#[test]
fn a_missing_secret_names_every_place_looked_in() {
    let dir = tempfile::tempdir().unwrap();
    let providers = SecretProviders::new(vec![
        SecretProvider::Env(BTreeMap::new()),
        SecretProvider::File(dir.path().to_owned()),
    ]);

    let message = providers.resolve("nope").unwrap_err().to_string();

    assert!(message.contains("KEYSILO_SECRET_NOPE"), "{message}");
    assert!(message.contains(&dir.path().join("nope").display().to_string()));
}

#[test]
fn secret_names_cannot_escape_the_secret_directory() {
    let providers = SecretProviders::new(vec![SecretProvider::File("/tmp".into())]);

    for name in ["../etc/passwd", "a/b", ".hidden", ""] {
        assert!(
            matches!(
                providers.resolve(name),
                Err(SecretError::InvalidName { .. })
            ),
            "{name}"
        );
    }
}

#[test]
fn secrets_print_redacted_in_debug_and_display() {
    let secret = Secret::new("super-secret-value");
    let settings = Settings::from_sources(Some(MINIMAL), &secret_env()).unwrap();

    assert_eq!(format!("{secret:?}"), "[REDACTED]");
    assert_eq!(format!("{secret}"), "[REDACTED]");
    let dump = format!("{settings:?}");
    assert!(!dump.contains(ADMIN_KEY), "{dump}");
    assert!(!dump.contains(MASTER_KEY), "{dump}");
    assert!(!dump.contains(PEPPER), "{dump}");
}

#[test]
fn env_overrides_replace_file_values_and_parse_literals() {
    let mut vars = secret_env();
    vars.insert("KEYSILO_SERVER__PORT".into(), "9443".into());
    vars.insert("KEYSILO_DATABASE__HOST".into(), "db.internal".into());
    vars.insert("KEYSILO_DATABASE__USER".into(), "\"1234\"".into());
    // Variables without `__` belong to scripts, not configuration.
    vars.insert("KEYSILO_PG_PORT".into(), "55432".into());
    let toml = format!("[server]\nport = 1\n{MINIMAL}");

    let settings = Settings::from_sources(Some(&toml), &vars).unwrap();

    assert_eq!(settings.server.port, 9443);
    assert_eq!(settings.database.host, "db.internal");
    assert_eq!(settings.database.user, "1234");
}

#[test]
fn every_problem_is_reported_in_one_pass() {
    let dir = tempfile::tempdir().unwrap();
    write_secret(dir.path(), "master-key-v1", MASTER_KEY, 0o644);
    let toml = format!(
        r#"
        [secrets]
        file_dir = {:?}
        [server]
        port = "eighty"
        [database]
        pool_size = 0
        [[custody.master_keys]]
        version = 1
        key = "${{secret:master-key-v1}}"
        [keys]
        jwks_max_age_seconds = 900
        [unknown]
        x = 1
        "#,
        dir.path()
    );

    let problems = problems(Settings::from_sources(Some(&toml), &BTreeMap::new()));

    let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
    for expected in [
        "server",
        "database.pool_size",
        "admin.api_key",
        "custody.master_keys[0]",
        "keys.jwks_max_age_seconds",
        "unknown",
    ] {
        assert!(keys.contains(&expected), "{expected} missing from {keys:?}");
    }
}

#[test]
fn a_short_admin_key_is_refused_without_quoting_it() {
    let vars = env(&[
        ("KEYSILO_SECRET_ADMIN_API_KEY", "short-key"),
        ("KEYSILO_SECRET_MASTER_KEY_V1", MASTER_KEY),
        ("KEYSILO_SECRET_CLIENT_SECRET_PEPPER", PEPPER),
    ]);

    let problems = problems(Settings::from_sources(Some(MINIMAL), &vars));

    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0].key, "admin.api_key");
    assert!(!problems[0].message.contains("short-key"));
}

#[test]
fn master_keys_must_be_32_bytes_of_base64_and_current_must_exist() {
    let vars = env(&[
        ("KEYSILO_SECRET_ADMIN_API_KEY", ADMIN_KEY),
        ("KEYSILO_SECRET_MASTER_KEY_V1", "dG9vIHNob3J0"),
        ("KEYSILO_SECRET_CLIENT_SECRET_PEPPER", PEPPER),
        ("KEYSILO_CUSTODY__CURRENT_MASTER_KEY_VERSION", "2"),
    ]);

    let problems = problems(Settings::from_sources(Some(MINIMAL), &vars));

    let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
    assert!(keys.contains(&"custody.master_keys[0]"), "{keys:?}");
    assert!(
        keys.contains(&"custody.current_master_key_version"),
        "{keys:?}"
    );
    assert!(!format!("{problems:?}").contains("dG9vIHNob3J0"));
}

#[test]
fn a_public_base_url_loses_its_trailing_slash_and_must_be_http() {
    let mut vars = secret_env();
    vars.insert(
        "KEYSILO_SERVER__PUBLIC_BASE_URL".into(),
        "https://id.example.com/".into(),
    );
    let settings = Settings::from_sources(Some(MINIMAL), &vars).unwrap();
    assert_eq!(settings.server.public_base_url, "https://id.example.com");

    vars.insert(
        "KEYSILO_SERVER__PUBLIC_BASE_URL".into(),
        "ftp://id.example.com".into(),
    );
    let problems = problems(Settings::from_sources(Some(MINIMAL), &vars));
    assert_eq!(problems[0].key, "server.public_base_url");
}

#[test]
fn tls_is_off_by_default_and_needs_its_files_when_on() {
    let settings = Settings::from_sources(Some(MINIMAL), &secret_env()).unwrap();
    assert!(settings.tls.is_none());

    let toml = format!("{MINIMAL}\n[tls]\nenabled = true\n");
    let keys: Vec<String> = problems(Settings::from_sources(Some(&toml), &secret_env()))
        .into_iter()
        .map(|p| p.key)
        .collect();
    assert_eq!(keys, ["tls.cert_file", "tls.key_file"]);

    let toml =
        format!("{MINIMAL}\n[tls]\nenabled = true\ncert_file = \"c.pem\"\nkey_file = \"k.pem\"\n");
    let tls = Settings::from_sources(Some(&toml), &secret_env())
        .unwrap()
        .tls
        .unwrap();
    assert_eq!(tls.min_version, TlsVersion::Tls13);
    assert_eq!(tls.client_auth, ClientAuth::None);
    assert_eq!(tls.client_identity, ClientIdentity::Cn);
}

#[test]
fn tls_below_1_2_verification_without_a_ca_and_three_cas_are_refused() {
    let base = "[tls]\nenabled = true\ncert_file = \"c.pem\"\nkey_file = \"k.pem\"\n";
    for (extra, key) in [
        ("min_version = \"1.1\"", "tls.min_version"),
        ("min_version = \"1.0\"", "tls.min_version"),
        ("min_version = \"TLSv1.3\"", "tls.min_version"),
        ("client_auth = \"require\"", "tls.client_ca_files"),
        ("client_auth = \"verify_if_given\"", "tls.client_ca_files"),
        (
            "client_ca_files = [\"a\", \"b\", \"c\"]",
            "tls.client_ca_files",
        ),
        ("reload_interval_seconds = 0", "tls.reload_interval_seconds"),
    ] {
        let toml = format!("{MINIMAL}\n{base}{extra}\n");
        let found = problems(Settings::from_sources(Some(&toml), &secret_env()));
        assert!(found.iter().any(|p| p.key == key), "{extra}: {found:?}");
    }
    // `request` needs no CA: an unverified certificate can still bind tokens.
    let toml = format!("{MINIMAL}\n{base}client_auth = \"request\"\n");
    assert!(Settings::from_sources(Some(&toml), &secret_env()).is_ok());
}

#[test]
fn short_admin_and_edge_keys_are_both_reported_in_one_pass() {
    let toml = MINIMAL.replace(
        "api_key = \"${secret:admin-api-key}\"",
        "api_key = \"${secret:admin-api-key}\"\nedge_api_key = \"${secret:edge-api-key}\"",
    );
    let mut env = secret_env();
    env.insert("KEYSILO_SECRET_ADMIN_API_KEY".into(), "short".into());
    env.insert("KEYSILO_SECRET_EDGE_API_KEY".into(), "also-short".into());
    let keys: Vec<String> = problems(Settings::from_sources(Some(&toml), &env))
        .into_iter()
        .map(|p| p.key)
        .collect();
    assert_eq!(keys, ["admin.api_key", "admin.edge_api_key"]);
}

#[test]
fn the_edge_refuses_a_short_identity_api_key() {
    let toml = r#"
        [edge]
        issuer_base = "http://127.0.0.1:8080"
        audience = "api"
        identity_api_key = "${secret:edge-api-key}"
    "#;
    let env = env(&[("KEYSILO_SECRET_EDGE_API_KEY", "sixteen-chars-ab")]);
    let err = EdgeSettings::from_sources(Some(toml), &env).unwrap_err();
    assert!(
        err.0.iter().any(|p| p.key == "edge.identity_api_key"),
        "{err}"
    );
}
