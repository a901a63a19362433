//! The password grant's limit: argon2id verifications per second on one
//! thread, with the parameters the identity service is configured with.

use std::path::Path;
use std::time::{Duration, Instant};

use argon2::{Algorithm, Argon2, Params, PasswordHasher as _, PasswordVerifier as _, Version};
use serde_json::{Value, json};

use crate::report::round;

/// Verifies one password for `seconds` and reports the rate.
pub fn measure(config: &Path, seconds: u64) -> anyhow::Result<Value> {
    let settings = keysilo_config::Settings::load(Some(config))?;
    let tokens = &settings.tokens;
    let params = Params::new(
        tokens.password_hash_memory_kib,
        tokens.password_hash_iterations,
        tokens.password_hash_parallelism,
        None,
    )
    .map_err(|err| anyhow::anyhow!("argon2 parameters: {err}"))?;
    let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
    let password = b"correct horse battery staple";
    let hash = argon2
        .hash_password_with_salt(password, b"keysilo-bench-salt")
        .map_err(|err| anyhow::anyhow!("argon2 hash: {err}"))?
        .to_string();

    let budget = Duration::from_secs(seconds);
    let started = Instant::now();
    let mut verified = 0u64;
    while started.elapsed() < budget {
        argon2
            // As the service does: the stored PHC string is parsed per check.
            .verify_password(password, hash.as_str())
            .map_err(|err| anyhow::anyhow!("argon2 verify: {err}"))?;
        verified += 1;
    }
    let elapsed = started.elapsed().as_secs_f64();
    Ok(json!({
        "memory_kib": tokens.password_hash_memory_kib,
        "iterations": tokens.password_hash_iterations,
        "parallelism": tokens.password_hash_parallelism,
        "verifies_per_s": round(verified as f64 / elapsed, 2),
        "ms_per_verify": round(elapsed * 1000.0 / verified.max(1) as f64, 2),
    }))
}
