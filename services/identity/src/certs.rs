//! The `certs` command: output of [`keysilo_tls::certs`] for people and
//! for scripts.

use std::fmt::Write as _;

use keysilo_tls::certs::{self, CertificateInfo, Check, GenerateOptions};

use crate::cli::CertsCommand;
use crate::clock;

/// What the command prints, and whether every check passed.
#[derive(Debug)]
pub struct Outcome {
    /// Text or JSON for standard output.
    pub output: String,
    /// `false` when `validate` found a problem.
    pub passed: bool,
}

fn date(unix: i64) -> String {
    let seconds = u64::try_from(unix).unwrap_or(0);
    clock::rfc3339(clock::from_unix(seconds))
}

fn describe(file: &str, certificates: &[CertificateInfo]) -> String {
    let mut text = String::new();
    for (index, info) in certificates.iter().enumerate() {
        let list = |values: &[String]| {
            if values.is_empty() {
                "-".to_owned()
            } else {
                values.join(", ")
            }
        };
        let ips: Vec<String> = info.ip_addresses.iter().map(ToString::to_string).collect();
        let _ = writeln!(text, "{file} #{}", index + 1);
        let _ = writeln!(text, "  subject:        {}", info.subject);
        let _ = writeln!(text, "  issuer:         {}", info.issuer);
        let _ = writeln!(text, "  serial:         {}", info.serial);
        let _ = writeln!(text, "  DNS names:      {}", list(&info.dns_names));
        let _ = writeln!(text, "  IP addresses:   {}", list(&ips));
        if !info.uris.is_empty() {
            let _ = writeln!(text, "  URIs:           {}", list(&info.uris));
        }
        if !info.emails.is_empty() {
            let _ = writeln!(text, "  e-mails:        {}", list(&info.emails));
        }
        let _ = writeln!(text, "  not before:     {}", date(info.not_before));
        let _ = writeln!(text, "  not after:      {}", date(info.not_after));
        let _ = writeln!(text, "  days remaining: {}", info.days_remaining);
        let _ = writeln!(text, "  x5t#S256:       {}", info.sha256_thumbprint);
    }
    text
}

fn report(checks: &[Check]) -> String {
    checks
        .iter()
        .map(|c| {
            let verdict = if c.ok { "ok  " } else { "FAIL" };
            format!("{verdict} {:<6} {}\n", c.check, c.detail)
        })
        .collect()
}

/// Runs one `certs` subcommand.
pub fn run(command: CertsCommand) -> anyhow::Result<Outcome> {
    let now = clock::unix_seconds_signed();
    match command {
        CertsCommand::Generate {
            dir,
            server_names,
            clients,
            days,
        } => {
            let options = GenerateOptions {
                server_names,
                clients,
                days,
            };
            let written = certs::generate(&dir, &options)?;
            let output = written
                .iter()
                .map(|path| format!("wrote {}\n", path.display()))
                .collect();
            Ok(Outcome {
                output,
                passed: true,
            })
        }
        CertsCommand::Info { file, json } => {
            let certificates = certs::info(&file, now)?;
            let output = if json {
                format!("{}\n", serde_json::to_string_pretty(&certificates)?)
            } else {
                describe(&file.display().to_string(), &certificates)
            };
            Ok(Outcome {
                output,
                passed: true,
            })
        }
        CertsCommand::Validate {
            cert,
            key,
            ca,
            json,
        } => {
            let checks = certs::validate(&cert, key.as_deref(), ca.as_deref(), now)?;
            let passed = checks.iter().all(|c| c.ok);
            let output = if json {
                let document = serde_json::json!({ "valid": passed, "checks": checks });
                format!("{}\n", serde_json::to_string_pretty(&document)?)
            } else {
                report(&checks)
            };
            Ok(Outcome { output, passed })
        }
    }
}
