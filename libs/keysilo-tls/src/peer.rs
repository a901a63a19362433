//! The client certificate of a connection, and how a registered client is
//! matched against it (RFC 8705 §2.1).

use std::net::IpAddr;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use keysilo_config::ClientIdentity;
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::ssl::SslRef;
use openssl::x509::{X509Ref, X509VerifyResult};

use crate::dn::{DistinguishedName, DnError};

/// What a connection's client certificate says, read once per connection.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PeerCertificate {
    /// `x5t#S256`: base64url SHA-256 of the DER certificate (RFC 8705 §3.1).
    pub thumbprint: String,
    /// The subject.
    pub subject: DistinguishedName,
    /// DNS subject alternative names, in order.
    pub dns_names: Vec<String>,
    /// URI subject alternative names.
    pub uris: Vec<String>,
    /// IP address subject alternative names.
    pub ips: Vec<IpAddr>,
    /// rfc822Name (e-mail) subject alternative names.
    pub emails: Vec<String>,
    /// The client's name by the configured [`ClientIdentity`].
    pub identity: Option<String>,
    /// Whether the chain verified against a configured client CA.
    pub verified: bool,
}

impl PeerCertificate {
    /// Reads a certificate; `verified` says whether its chain was checked.
    pub fn from_x509(
        cert: &X509Ref,
        verified: bool,
        identity: ClientIdentity,
    ) -> Result<Self, openssl::error::ErrorStack> {
        let der = cert.to_der()?;
        let digest = openssl::hash::hash(MessageDigest::sha256(), &der)?;
        let subject = DistinguishedName::of(cert.subject_name());
        let mut dns_names = Vec::new();
        let mut uris = Vec::new();
        let mut ips = Vec::new();
        let mut emails = Vec::new();
        for name in cert.subject_alt_names().into_iter().flatten() {
            if let Some(dns) = name.dnsname() {
                dns_names.push(dns.to_owned());
            } else if let Some(uri) = name.uri() {
                uris.push(uri.to_owned());
            } else if let Some(email) = name.email() {
                emails.push(email.to_owned());
            } else if let Some(ip) = name.ipaddress() {
                let ip = match ip.len() {
                    4 => <[u8; 4]>::try_from(ip).ok().map(IpAddr::from),
                    16 => <[u8; 16]>::try_from(ip).ok().map(IpAddr::from),
                    _ => None,
                };
                ips.extend(ip);
            }
        }
        let identity = match identity {
            ClientIdentity::Cn => subject.first(Nid::COMMONNAME).map(str::to_owned),
            ClientIdentity::Ou => subject
                .first(Nid::ORGANIZATIONALUNITNAME)
                .map(str::to_owned),
            ClientIdentity::O => subject.first(Nid::ORGANIZATIONNAME).map(str::to_owned),
            ClientIdentity::DnsSan => dns_names.first().cloned(),
            _ => None,
        };
        Ok(Self {
            thumbprint: URL_SAFE_NO_PAD.encode(digest),
            subject,
            dns_names,
            uris,
            ips,
            emails,
            identity,
            verified,
        })
    }

    /// The peer certificate of a finished handshake, if one was presented.
    pub fn of_connection(ssl: &SslRef, identity: ClientIdentity) -> Option<Self> {
        let cert = ssl.peer_certificate()?;
        let verified = ssl.verify_result() == X509VerifyResult::OK;
        match Self::from_x509(&cert, verified, identity) {
            Ok(peer) => Some(peer),
            Err(err) => {
                tracing::warn!(error = %err, "cannot read the client certificate");
                None
            }
        }
    }
}

/// How a `tls_client_auth` client is recognised: exactly one of RFC 8705
/// §2.1.2's metadata parameters.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum CertificateMatch {
    /// `tls_client_auth_subject_dn`.
    SubjectDn(DistinguishedName),
    /// `tls_client_auth_san_dns`.
    SanDns(String),
    /// `tls_client_auth_san_uri`.
    SanUri(String),
    /// `tls_client_auth_san_ip`.
    SanIp(IpAddr),
    /// `tls_client_auth_san_email`.
    SanEmail(String),
}

/// A registration value that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum MatchError {
    /// The subject DN does not parse.
    #[error(transparent)]
    Dn(#[from] DnError),
    /// The kind is none of RFC 8705's.
    #[error("unknown certificate match `{0}`")]
    UnknownKind(String),
    /// The value is empty, too long or malformed for its kind.
    #[error("invalid {0}")]
    Invalid(&'static str),
}

impl CertificateMatch {
    /// The RFC 8705 metadata parameters, in the order they are looked for.
    pub const PARAMETERS: [&'static str; 5] = [
        "tls_client_auth_subject_dn",
        "tls_client_auth_san_dns",
        "tls_client_auth_san_uri",
        "tls_client_auth_san_ip",
        "tls_client_auth_san_email",
    ];

    /// Reads a registration given as its metadata parameter and value.
    pub fn parse(parameter: &str, value: &str) -> Result<Self, MatchError> {
        let value = value.trim();
        if value.is_empty() || value.len() > 1024 || value.chars().any(char::is_control) {
            return Err(MatchError::Invalid("certificate match value"));
        }
        match parameter {
            "tls_client_auth_subject_dn" => {
                let dn = DistinguishedName::parse(value)?;
                // Its stored (canonical) form must parse again when the
                // client authenticates: `E=` is written `emailAddress=`.
                if dn.to_string().len() > 1024 {
                    return Err(MatchError::Invalid("subject DN: over 1024 bytes as stored"));
                }
                Ok(Self::SubjectDn(dn))
            }
            "tls_client_auth_san_dns" => Ok(Self::SanDns(value.to_ascii_lowercase())),
            "tls_client_auth_san_uri" => Ok(Self::SanUri(value.to_owned())),
            "tls_client_auth_san_ip" => value
                .parse()
                .map(Self::SanIp)
                .map_err(|_| MatchError::Invalid("IP address")),
            "tls_client_auth_san_email" if value.contains('@') => {
                Ok(Self::SanEmail(value.to_owned()))
            }
            "tls_client_auth_san_email" => Err(MatchError::Invalid("e-mail address")),
            other => Err(MatchError::UnknownKind(other.to_owned())),
        }
    }

    /// The metadata parameter this registration is given as.
    pub fn parameter(&self) -> &'static str {
        match self {
            Self::SubjectDn(_) => "tls_client_auth_subject_dn",
            Self::SanDns(_) => "tls_client_auth_san_dns",
            Self::SanUri(_) => "tls_client_auth_san_uri",
            Self::SanIp(_) => "tls_client_auth_san_ip",
            Self::SanEmail(_) => "tls_client_auth_san_email",
        }
    }

    /// The value in canonical form (as stored and shown).
    pub fn value(&self) -> String {
        match self {
            Self::SubjectDn(dn) => dn.to_string(),
            Self::SanDns(v) | Self::SanUri(v) | Self::SanEmail(v) => v.clone(),
            Self::SanIp(ip) => ip.to_string(),
        }
    }

    /// Whether `peer` is the registered client. The chain must have been
    /// verified: an unverified certificate proves nothing about its names.
    pub fn matches(&self, peer: &PeerCertificate) -> bool {
        if !peer.verified {
            return false;
        }
        match self {
            Self::SubjectDn(dn) => dn.matches(&peer.subject),
            Self::SanDns(name) => peer.dns_names.iter().any(|d| d.eq_ignore_ascii_case(name)),
            Self::SanUri(uri) => peer.uris.iter().any(|u| u == uri),
            Self::SanIp(ip) => peer.ips.contains(ip),
            Self::SanEmail(email) => peer.emails.iter().any(|e| e.eq_ignore_ascii_case(email)),
        }
    }
}

#[cfg(test)]
mod tests {
    use openssl::ec::{EcGroup, EcKey};
    use openssl::pkey::PKey;
    use openssl::x509::extension::SubjectAlternativeName;
    use openssl::x509::{X509, X509NameBuilder};

    use super::*;

    fn certificate() -> X509 {
        let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
        let key = PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap();
        let mut name = X509NameBuilder::new().unwrap();
        name.append_entry_by_text("O", "Acme").unwrap();
        name.append_entry_by_text("OU", "payments").unwrap();
        name.append_entry_by_text("CN", "worker-7").unwrap();
        let name = name.build();
        let mut builder = X509::builder().unwrap();
        builder.set_version(2).unwrap();
        builder.set_subject_name(&name).unwrap();
        builder.set_issuer_name(&name).unwrap();
        builder.set_pubkey(&key).unwrap();
        let now = openssl::asn1::Asn1Time::days_from_now(0).unwrap();
        let later = openssl::asn1::Asn1Time::days_from_now(1).unwrap();
        builder.set_not_before(&now).unwrap();
        builder.set_not_after(&later).unwrap();
        let san = SubjectAlternativeName::new()
            .dns("worker-7.acme.test")
            .dns("second.acme.test")
            .uri("spiffe://acme.test/worker")
            .ip("10.0.0.7")
            .email("ops@acme.test")
            .build(&builder.x509v3_context(None, None))
            .unwrap();
        builder.append_extension(san).unwrap();
        builder.sign(&key, MessageDigest::sha256()).unwrap();
        builder.build()
    }

    #[test]
    fn the_configured_attribute_names_the_client() {
        let cert = certificate();
        for (identity, expected) in [
            (ClientIdentity::Cn, "worker-7"),
            (ClientIdentity::Ou, "payments"),
            (ClientIdentity::O, "Acme"),
            (ClientIdentity::DnsSan, "worker-7.acme.test"),
        ] {
            let peer = PeerCertificate::from_x509(&cert, true, identity).unwrap();
            assert_eq!(peer.identity.as_deref(), Some(expected), "{identity:?}");
        }
        let peer = PeerCertificate::from_x509(&cert, true, ClientIdentity::Cn).unwrap();
        assert_eq!(peer.subject.to_string(), "CN=worker-7,OU=payments,O=Acme");
        assert_eq!(peer.thumbprint.len(), 43);
    }

    #[test]
    fn every_registration_kind_matches_only_a_verified_certificate() {
        let cert = certificate();
        let verified = PeerCertificate::from_x509(&cert, true, ClientIdentity::Cn).unwrap();
        let unverified = PeerCertificate::from_x509(&cert, false, ClientIdentity::Cn).unwrap();
        for (parameter, good, bad) in [
            (
                "tls_client_auth_subject_dn",
                "cn=Worker-7, ou=payments, o=acme",
                "CN=worker-7,O=Acme",
            ),
            ("tls_client_auth_san_dns", "SECOND.acme.test", "acme.test"),
            (
                "tls_client_auth_san_uri",
                "spiffe://acme.test/worker",
                "spiffe://acme.test/other",
            ),
            ("tls_client_auth_san_ip", "10.0.0.7", "10.0.0.8"),
            (
                "tls_client_auth_san_email",
                "ops@acme.test",
                "dev@acme.test",
            ),
        ] {
            let good = CertificateMatch::parse(parameter, good).unwrap();
            assert_eq!(good.parameter(), parameter);
            assert!(good.matches(&verified), "{parameter}");
            assert!(!good.matches(&unverified), "{parameter} unverified");
            let bad = CertificateMatch::parse(parameter, bad).unwrap();
            assert!(!bad.matches(&verified), "{parameter} other");
        }
        assert!(CertificateMatch::parse("tls_client_auth_san_ip", "not-ip").is_err());
        assert!(CertificateMatch::parse("tls_client_auth_subject_dn", "CN").is_err());
        assert!(CertificateMatch::parse("tls_client_auth_san_email", "no-at").is_err());
        assert!(CertificateMatch::parse("self_signed", "x").is_err());
        // Accepted only if the stored form parses back (`E=` grows).
        let long = vec!["E=a@b"; 160].join(",");
        assert!(long.len() <= 1024);
        assert!(CertificateMatch::parse("tls_client_auth_subject_dn", &long).is_err());
    }
}
