//! The `certs` command's work: development certificates, and describing
//! and checking certificate files.
//!
//! Generated material is for development and tests: an ECDSA P-256 CA that
//! signs one server certificate and any number of client certificates.
//! Production certificates come from the operator's own CA.

use std::fs::OpenOptions;
use std::io::Write as _;
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use openssl::asn1::{Asn1Integer, Asn1Time};
use openssl::bn::{BigNum, MsbOption};
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::stack::Stack;
use openssl::x509::extension::{
    AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAlternativeName,
    SubjectKeyIdentifier,
};
use openssl::x509::store::X509StoreBuilder;
use openssl::x509::{X509, X509Builder, X509NameBuilder, X509StoreContext};
use serde::Serialize;

use crate::{DistinguishedName, PeerCertificate, unix_of};

/// A certificate command failed.
#[derive(Debug, thiserror::Error)]
pub enum CertsError {
    /// A file cannot be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// OpenSSL failed or refused the input.
    #[error("{0}")]
    OpenSsl(#[from] openssl::error::ErrorStack),
    /// A file holds no PEM certificate.
    #[error("{0} holds no PEM certificate")]
    NoCertificate(PathBuf),
    /// A name is not usable in a certificate.
    #[error("`{0}` is not a host name or IP address")]
    BadName(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CertsError + '_ {
    move |source| CertsError::Io {
        path: path.to_owned(),
        source,
    }
}

/// What `certs generate` makes.
#[derive(Debug, Clone)]
pub struct GenerateOptions {
    /// Host names and IP addresses of the server certificate; the first is
    /// also its common name.
    pub server_names: Vec<String>,
    /// Common names of client certificates, one certificate each.
    pub clients: Vec<String>,
    /// Validity of the server and client certificates, in days.
    pub days: u32,
}

fn new_key() -> Result<PKey<Private>, CertsError> {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1)?;
    Ok(PKey::from_ec_key(EcKey::generate(&group)?)?)
}

fn serial() -> Result<Asn1Integer, CertsError> {
    let mut bn = BigNum::new()?;
    bn.rand(127, MsbOption::MAYBE_ZERO, false)?;
    Ok(bn.to_asn1_integer()?)
}

/// A host name as certificates carry it: letters, digits, `-`, `.`, and a
/// leading `*.` for wildcards.
fn is_host_name(name: &str) -> bool {
    let name = name.strip_prefix("*.").unwrap_or(name);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

struct Issuer<'a> {
    cert: &'a X509,
    key: &'a PKey<Private>,
}

enum Kind {
    Ca,
    Server,
    Client,
}

fn issue(
    common_name: &str,
    names: &[String],
    kind: &Kind,
    days: u32,
    key: &PKey<Private>,
    issuer: Option<&Issuer<'_>>,
) -> Result<X509, CertsError> {
    let mut name = X509NameBuilder::new()?;
    name.append_entry_by_text("O", "Keysilo development")?;
    name.append_entry_by_text("CN", common_name)?;
    let name = name.build();
    let mut builder = X509Builder::new()?;
    builder.set_version(2)?;
    let serial = serial()?;
    builder.set_serial_number(&serial)?;
    builder.set_subject_name(&name)?;
    builder.set_issuer_name(issuer.map_or(&name, |i| i.cert.subject_name()))?;
    builder.set_pubkey(key)?;
    // Backdated a little for clocks that lag.
    let not_before = Asn1Time::from_unix(unix_now_from_openssl()? - 300)?;
    let not_after = Asn1Time::days_from_now(days)?;
    builder.set_not_before(&not_before)?;
    builder.set_not_after(&not_after)?;
    match kind {
        Kind::Ca => {
            builder.append_extension(BasicConstraints::new().critical().ca().build()?)?;
            builder.append_extension(
                KeyUsage::new()
                    .critical()
                    .key_cert_sign()
                    .crl_sign()
                    .build()?,
            )?;
        }
        Kind::Server | Kind::Client => {
            builder.append_extension(BasicConstraints::new().critical().build()?)?;
            builder.append_extension(KeyUsage::new().critical().digital_signature().build()?)?;
            let mut usage = ExtendedKeyUsage::new();
            match kind {
                Kind::Server => usage.server_auth(),
                _ => usage.client_auth(),
            };
            builder.append_extension(usage.build()?)?;
        }
    }
    let subject_key_id = SubjectKeyIdentifier::new()
        .build(&builder.x509v3_context(issuer.map(|i| i.cert.as_ref()), None))?;
    builder.append_extension(subject_key_id)?;
    if let Some(issuer) = issuer {
        let authority_key_id = AuthorityKeyIdentifier::new()
            .keyid(true)
            .build(&builder.x509v3_context(Some(issuer.cert), None))?;
        builder.append_extension(authority_key_id)?;
    }
    if !names.is_empty() {
        let mut san = SubjectAlternativeName::new();
        for name in names {
            if name.parse::<IpAddr>().is_ok() {
                san.ip(name);
            } else if is_host_name(name) {
                san.dns(name);
            } else {
                return Err(CertsError::BadName(name.clone()));
            }
        }
        let san = san.build(&builder.x509v3_context(issuer.map(|i| i.cert.as_ref()), None))?;
        builder.append_extension(san)?;
    }
    builder.sign(issuer.map_or(key, |i| i.key), MessageDigest::sha256())?;
    Ok(builder.build())
}

/// The current Unix time as OpenSSL's clock has it.
fn unix_now_from_openssl() -> Result<i64, CertsError> {
    let now = Asn1Time::days_from_now(0)?;
    Ok(unix_of(&now)?)
}

fn write(path: &Path, bytes: &[u8], mode: u32) -> Result<(), CertsError> {
    // Replaced, not rewritten in place, so the mode of a new file holds.
    let _ = std::fs::remove_file(path);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(io(path))?;
    file.write_all(bytes).map_err(io(path))
}

/// Writes `ca.crt`/`ca.key` (kept when they exist), `server.crt`/
/// `server.key`, and `client-<name>.crt`/`.key` for each client into `dir`;
/// keys are mode 0600. Returns the files written.
pub fn generate(dir: &Path, options: &GenerateOptions) -> Result<Vec<PathBuf>, CertsError> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    for name in &options.clients {
        if !is_host_name(name) {
            return Err(CertsError::BadName(name.clone()));
        }
    }
    let mut written = Vec::new();
    let (ca_cert_path, ca_key_path) = (dir.join("ca.crt"), dir.join("ca.key"));
    let (ca, ca_key) = if ca_cert_path.exists() && ca_key_path.exists() {
        let cert = X509::from_pem(&std::fs::read(&ca_cert_path).map_err(io(&ca_cert_path))?)?;
        let key =
            PKey::private_key_from_pem(&std::fs::read(&ca_key_path).map_err(io(&ca_key_path))?)?;
        (cert, key)
    } else {
        let key = new_key()?;
        let cert = issue("Keysilo development CA", &[], &Kind::Ca, 3650, &key, None)?;
        write(&ca_key_path, &key.private_key_to_pem_pkcs8()?, 0o600)?;
        write(&ca_cert_path, &cert.to_pem()?, 0o644)?;
        written.extend([ca_cert_path, ca_key_path]);
        (cert, key)
    };
    let issuer = Issuer {
        cert: &ca,
        key: &ca_key,
    };
    let mut make = |stem: String, common_name: &str, names: &[String], kind: Kind| {
        let key = new_key()?;
        let cert = issue(common_name, names, &kind, options.days, &key, Some(&issuer))?;
        let (cert_path, key_path) = (
            dir.join(format!("{stem}.crt")),
            dir.join(format!("{stem}.key")),
        );
        write(&key_path, &key.private_key_to_pem_pkcs8()?, 0o600)?;
        write(&cert_path, &cert.to_pem()?, 0o644)?;
        written.extend([cert_path, key_path]);
        Ok::<_, CertsError>(())
    };
    if let Some(first) = options.server_names.first() {
        make("server".into(), first, &options.server_names, Kind::Server)?;
    }
    for client in &options.clients {
        make(
            format!("client-{client}"),
            client,
            std::slice::from_ref(client),
            Kind::Client,
        )?;
    }
    Ok(written)
}

/// One certificate, as `certs info` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct CertificateInfo {
    /// RFC 4514 subject.
    pub subject: String,
    /// RFC 4514 issuer.
    pub issuer: String,
    /// Serial number, hex.
    pub serial: String,
    /// DNS subject alternative names.
    pub dns_names: Vec<String>,
    /// IP address subject alternative names.
    pub ip_addresses: Vec<IpAddr>,
    /// URI subject alternative names.
    pub uris: Vec<String>,
    /// E-mail subject alternative names.
    pub emails: Vec<String>,
    /// Start of validity, Unix seconds.
    pub not_before: i64,
    /// End of validity, Unix seconds.
    pub not_after: i64,
    /// Whole days until `not_after` (negative once expired).
    pub days_remaining: i64,
    /// `x5t#S256` thumbprint (RFC 8705).
    pub sha256_thumbprint: String,
}

/// Reads every certificate in a PEM file.
pub fn read_certificates(path: &Path) -> Result<Vec<X509>, CertsError> {
    let certs = X509::stack_from_pem(&std::fs::read(path).map_err(io(path))?)?;
    if certs.is_empty() {
        return Err(CertsError::NoCertificate(path.to_owned()));
    }
    Ok(certs)
}

/// Describes every certificate in a PEM file; `now` is the Unix time.
pub fn info(path: &Path, now: i64) -> Result<Vec<CertificateInfo>, CertsError> {
    read_certificates(path)?
        .iter()
        .map(|cert| {
            let peer = PeerCertificate::from_x509(cert, false, keysilo_config::ClientIdentity::Cn)?;
            let not_after = unix_of(cert.not_after())?;
            Ok(CertificateInfo {
                subject: peer.subject.to_string(),
                issuer: DistinguishedName::of(cert.issuer_name()).to_string(),
                serial: cert.serial_number().to_bn()?.to_hex_str()?.to_string(),
                dns_names: peer.dns_names,
                ip_addresses: peer.ips,
                uris: peer.uris,
                emails: peer.emails,
                not_before: unix_of(cert.not_before())?,
                not_after,
                days_remaining: (not_after - now).div_euclid(86_400),
                sha256_thumbprint: peer.thumbprint,
            })
        })
        .collect()
}

/// One check of `certs validate`.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// `chain`, `key` or `expiry`.
    pub check: &'static str,
    /// Whether it passed.
    pub ok: bool,
    /// What was found.
    pub detail: String,
}

/// Checks a certificate file: the chain against `ca` (the system roots when
/// `None`), that `key` is its private key, and that it is valid at `now`
/// (a warning in the detail within 30 days of expiry).
pub fn validate(
    cert: &Path,
    key: Option<&Path>,
    ca: Option<&Path>,
    now: i64,
) -> Result<Vec<Check>, CertsError> {
    let certs = read_certificates(cert)?;
    let mut certs = certs.into_iter();
    let leaf = certs
        .next()
        .ok_or_else(|| CertsError::NoCertificate(cert.to_owned()))?;
    let mut untrusted = Stack::new()?;
    for extra in certs {
        untrusted.push(extra)?;
    }
    let mut store = X509StoreBuilder::new()?;
    match ca {
        Some(ca) => {
            for root in read_certificates(ca)? {
                store.add_cert(root)?;
            }
        }
        None => store.set_default_paths()?,
    }
    let store = store.build();
    let mut context = X509StoreContext::new()?;
    let (verified, error) = context.init(&store, &leaf, &untrusted, |c| {
        let ok = c.verify_cert()?;
        Ok((ok, c.error()))
    })?;
    let mut checks = vec![Check {
        check: "chain",
        ok: verified,
        detail: if verified {
            match ca {
                Some(ca) => format!("chains to {}", ca.display()),
                None => "chains to the system roots".into(),
            }
        } else {
            format!("does not verify: {}", error.error_string())
        },
    }];
    if let Some(key_path) = key {
        let private = PKey::private_key_from_pem(&std::fs::read(key_path).map_err(io(key_path))?)?;
        let matches = leaf.public_key()?.public_eq(&private);
        checks.push(Check {
            check: "key",
            ok: matches,
            detail: if matches {
                format!("{} is the certificate's key", key_path.display())
            } else {
                format!("{} is not the certificate's key", key_path.display())
            },
        });
    }
    let (not_before, not_after) = (unix_of(leaf.not_before())?, unix_of(leaf.not_after())?);
    let days = (not_after - now).div_euclid(86_400);
    let (ok, detail) = if now < not_before {
        (false, "not valid yet".to_owned())
    } else if now >= not_after {
        (false, format!("expired {} day(s) ago", -days))
    } else if days < 30 {
        (true, format!("expires in {days} day(s): renew it soon"))
    } else {
        (true, format!("valid for {days} more day(s)"))
    };
    checks.push(Check {
        check: "expiry",
        ok,
        detail,
    });
    Ok(checks)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> i64 {
        unix_now_from_openssl().unwrap()
    }

    #[test]
    fn generated_material_validates_and_describes_itself() {
        let dir = tempfile::tempdir().unwrap();
        let options = GenerateOptions {
            server_names: vec!["localhost".into(), "127.0.0.1".into()],
            clients: vec!["edge".into()],
            days: 30,
        };
        let written = generate(dir.path(), &options).unwrap();
        assert_eq!(written.len(), 6);
        let key_mode = std::fs::metadata(dir.path().join("server.key"))
            .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777)
            .unwrap();
        assert_eq!(key_mode, 0o600);

        let server = info(&dir.path().join("server.crt"), now()).unwrap();
        assert_eq!(server.len(), 1);
        assert_eq!(server[0].dns_names, ["localhost"]);
        assert_eq!(
            server[0].ip_addresses,
            ["127.0.0.1".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(server[0].subject, "CN=localhost,O=Keysilo development");
        assert!((29..=30).contains(&server[0].days_remaining));

        let ca = dir.path().join("ca.crt");
        for stem in ["server", "client-edge"] {
            let checks = validate(
                &dir.path().join(format!("{stem}.crt")),
                Some(&dir.path().join(format!("{stem}.key"))),
                Some(&ca),
                now(),
            )
            .unwrap();
            assert!(checks.iter().all(|c| c.ok), "{checks:?}");
        }

        // A second run keeps the CA, so old client certificates still chain.
        generate(
            dir.path(),
            &GenerateOptions {
                clients: vec![],
                ..options
            },
        )
        .unwrap();
        let checks = validate(&dir.path().join("client-edge.crt"), None, Some(&ca), now()).unwrap();
        assert!(checks.iter().all(|c| c.ok), "{checks:?}");
    }

    #[test]
    fn a_foreign_key_a_foreign_ca_and_expiry_fail() {
        let one = tempfile::tempdir().unwrap();
        let two = tempfile::tempdir().unwrap();
        let options = GenerateOptions {
            server_names: vec!["localhost".into()],
            clients: vec![],
            days: 1,
        };
        generate(one.path(), &options).unwrap();
        generate(two.path(), &options).unwrap();
        let checks = validate(
            &one.path().join("server.crt"),
            Some(&two.path().join("server.key")),
            Some(&two.path().join("ca.crt")),
            now() + 3 * 86_400,
        )
        .unwrap();
        assert!(checks.iter().all(|c| !c.ok), "{checks:?}");
    }

    #[test]
    fn names_that_are_not_hosts_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let options = GenerateOptions {
            server_names: vec!["not a host".into()],
            clients: vec![],
            days: 1,
        };
        assert!(matches!(
            generate(dir.path(), &options),
            Err(CertsError::BadName(_))
        ));
    }
}
