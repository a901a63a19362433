//! Distinguished names as RFC 4514 strings, and their comparison.
//!
//! RFC 8705 registers a client by the subject DN of its certificate "in
//! string representation as defined in RFC 4514". Strings differ in ways
//! names do not (`cn=a, o=b` and `CN=a,O=b`), so both sides are reduced to a
//! list of (attribute, value) pairs and compared: attribute types by OID,
//! values case-insensitively with insignificant spaces removed (the
//! `caseIgnoreMatch` of the attributes that appear in certificate subjects).
//! Multi-valued RDNs (`+`) are flattened in order on both sides.

use std::fmt;

use openssl::nid::Nid;
use openssl::x509::X509NameRef;

/// A DN that cannot be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DnError {
    /// Not an RFC 4514 string, with the reason.
    #[error("not an RFC 4514 distinguished name: {0}")]
    Syntax(&'static str),
    /// An attribute type OpenSSL does not know.
    #[error("unknown attribute type `{0}`")]
    UnknownAttribute(String),
}

/// One attribute of a name: its type and value.
#[derive(Debug, Clone)]
struct Attribute {
    nid: Nid,
    value: String,
}

/// A distinguished name, most specific attribute first (RFC 4514 order).
#[derive(Debug, Clone, Default)]
pub struct DistinguishedName {
    attributes: Vec<Attribute>,
}

/// RFC 4514's short names, spelled as OpenSSL spells them.
fn nid_of(name: &str) -> Result<Nid, DnError> {
    let known = match name.to_ascii_uppercase().as_str() {
        "CN" => Some(Nid::COMMONNAME),
        "L" => Some(Nid::LOCALITYNAME),
        "ST" => Some(Nid::STATEORPROVINCENAME),
        "O" => Some(Nid::ORGANIZATIONNAME),
        "OU" => Some(Nid::ORGANIZATIONALUNITNAME),
        "C" => Some(Nid::COUNTRYNAME),
        "STREET" => Some(Nid::STREETADDRESS),
        "DC" => Some(Nid::DOMAINCOMPONENT),
        "UID" => Some(Nid::USERID),
        "E" | "EMAILADDRESS" => Some(Nid::PKCS9_EMAILADDRESS),
        "SERIALNUMBER" => Some(Nid::SERIALNUMBER),
        _ => None,
    };
    if let Some(nid) = known {
        return Ok(nid);
    }
    // A dotted OID or another name OpenSSL knows.
    openssl::asn1::Asn1Object::from_str(name)
        .map(|object| object.nid())
        .ok()
        .filter(|nid| *nid != Nid::UNDEF)
        .ok_or_else(|| DnError::UnknownAttribute(name.to_owned()))
}

/// The RFC 4514 short name of `nid`, or OpenSSL's.
fn name_of(nid: Nid) -> String {
    match nid {
        Nid::COMMONNAME => "CN".into(),
        Nid::LOCALITYNAME => "L".into(),
        Nid::STATEORPROVINCENAME => "ST".into(),
        Nid::ORGANIZATIONNAME => "O".into(),
        Nid::ORGANIZATIONALUNITNAME => "OU".into(),
        Nid::COUNTRYNAME => "C".into(),
        Nid::STREETADDRESS => "STREET".into(),
        Nid::DOMAINCOMPONENT => "DC".into(),
        Nid::USERID => "UID".into(),
        other => other.short_name().unwrap_or("UNKNOWN").to_owned(),
    }
}

/// The value as `caseIgnoreMatch` sees it: lower case, runs of spaces as
/// one, none at either end.
fn folded(value: &str) -> String {
    value
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

fn hex_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

impl DistinguishedName {
    /// Reads an RFC 4514 string such as `CN=client,O=Example\, Inc.,C=SE`.
    /// Hex-encoded BER values (`#04…`) are refused.
    pub fn parse(text: &str) -> Result<Self, DnError> {
        let bytes = text.as_bytes();
        if bytes.len() > 1024 {
            return Err(DnError::Syntax("longer than 1024 bytes"));
        }
        let mut attributes = Vec::new();
        let mut at = 0;
        while at < bytes.len() {
            // attributeType "="
            let rest = bytes.get(at..).unwrap_or_default();
            let equals = rest
                .iter()
                .position(|b| *b == b'=')
                .ok_or(DnError::Syntax("an attribute without `=`"))?;
            let kind = std::str::from_utf8(rest.get(..equals).unwrap_or_default())
                .map_err(|_| DnError::Syntax("invalid UTF-8"))?
                .trim();
            if kind.is_empty() {
                return Err(DnError::Syntax("an empty attribute type"));
            }
            let nid = nid_of(kind)?;
            at += equals + 1;
            if bytes.get(at) == Some(&b'#') {
                return Err(DnError::Syntax("hex-encoded values are not supported"));
            }
            // attributeValue, up to an unescaped `,` or `+`.
            let mut value = Vec::new();
            loop {
                match bytes.get(at) {
                    None => break,
                    Some(b',' | b'+') => {
                        at += 1;
                        if at == bytes.len() {
                            return Err(DnError::Syntax("a trailing separator"));
                        }
                        break;
                    }
                    Some(b'\\') => {
                        let next = *bytes
                            .get(at + 1)
                            .ok_or(DnError::Syntax("a dangling `\\`"))?;
                        if let Some(high) = hex_value(next) {
                            let low = bytes
                                .get(at + 2)
                                .copied()
                                .and_then(hex_value)
                                .ok_or(DnError::Syntax("a `\\` with one hex digit"))?;
                            value.push(high * 16 + low);
                            at += 3;
                        } else if b" \"#+,;<=>\\".contains(&next) {
                            value.push(next);
                            at += 2;
                        } else {
                            return Err(DnError::Syntax("an invalid escape"));
                        }
                    }
                    Some(b'"' | b';' | b'<' | b'>') => {
                        return Err(DnError::Syntax("an unescaped special character"));
                    }
                    Some(other) => {
                        value.push(*other);
                        at += 1;
                    }
                }
            }
            let value = String::from_utf8(value).map_err(|_| DnError::Syntax("invalid UTF-8"))?;
            if value.trim().is_empty() {
                return Err(DnError::Syntax("an empty value"));
            }
            attributes.push(Attribute {
                nid,
                value: value.trim().to_owned(),
            });
        }
        if attributes.is_empty() {
            return Err(DnError::Syntax("no attributes"));
        }
        Ok(Self { attributes })
    }

    /// The subject or issuer of a certificate; values that are not valid
    /// strings are kept as OpenSSL prints them.
    pub fn of(name: &X509NameRef) -> Self {
        let mut attributes: Vec<Attribute> = name
            .entries()
            .map(|entry| Attribute {
                nid: entry.object().nid(),
                value: entry.data().to_string().unwrap_or_default(),
            })
            .collect();
        // ASN.1 order is least specific first; RFC 4514 strings reverse it.
        attributes.reverse();
        Self { attributes }
    }

    /// The first value of attribute `nid`, in RFC 4514 order.
    pub fn first(&self, nid: Nid) -> Option<&str> {
        self.attributes
            .iter()
            .find(|a| a.nid == nid)
            .map(|a| a.value.as_str())
    }

    /// Whether both name the same entity (see the module docs).
    pub fn matches(&self, other: &Self) -> bool {
        self.attributes.len() == other.attributes.len()
            && self
                .attributes
                .iter()
                .zip(&other.attributes)
                .all(|(a, b)| a.nid == b.nid && folded(&a.value) == folded(&b.value))
    }
}

impl fmt::Display for DistinguishedName {
    /// The RFC 4514 string, with special characters escaped.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, attribute) in self.attributes.iter().enumerate() {
            if index > 0 {
                f.write_str(",")?;
            }
            write!(f, "{}=", name_of(attribute.nid))?;
            let last = attribute.value.chars().count().saturating_sub(1);
            for (position, c) in attribute.value.chars().enumerate() {
                let escape = matches!(c, '"' | '+' | ',' | ';' | '<' | '>' | '\\')
                    || (position == 0 && matches!(c, ' ' | '#'))
                    || (position == last && c == ' ');
                if escape {
                    f.write_str("\\")?;
                }
                if c.is_control() {
                    // As hex pairs (RFC 4514 §2.4), so the string stays
                    // printable and parses back to the same name.
                    let mut utf8 = [0u8; 4];
                    for byte in c.encode_utf8(&mut utf8).bytes() {
                        write!(f, "\\{byte:02X}")?;
                    }
                } else {
                    write!(f, "{c}")?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equivalent_spellings_match() {
        let a = DistinguishedName::parse("CN=client one,O=Example\\, Inc.,C=SE").unwrap();
        let b = DistinguishedName::parse("cn = Client  One , o=example\\2C inc., c=se").unwrap();
        assert!(a.matches(&b));
        assert_eq!(a.to_string(), "CN=client one,O=Example\\, Inc.,C=SE");
    }

    #[test]
    fn order_and_extra_attributes_matter() {
        let a = DistinguishedName::parse("CN=a,O=b").unwrap();
        assert!(!a.matches(&DistinguishedName::parse("O=b,CN=a").unwrap()));
        assert!(!a.matches(&DistinguishedName::parse("CN=a,O=b,C=SE").unwrap()));
        assert!(!a.matches(&DistinguishedName::parse("CN=a,OU=b").unwrap()));
    }

    #[test]
    fn oids_and_names_are_one_type() {
        let a = DistinguishedName::parse("2.5.4.3=a").unwrap();
        assert!(a.matches(&DistinguishedName::parse("CN=a").unwrap()));
    }

    #[test]
    fn malformed_strings_are_refused() {
        for bad in [
            "",
            "CN",
            "=a",
            "CN=",
            "CN=a,",
            "CN=a\\",
            "CN=a\\x",
            "CN=#0403616263",
            "CN=a;b",
            "NOTATYPE=a",
        ] {
            assert!(DistinguishedName::parse(bad).is_err(), "{bad:?}");
        }
    }

    /// Found by `fuzz/fuzz_targets/json.rs`: an escaped control character
    /// was written back raw, so the stored form of an accepted
    /// `tls_client_auth_subject_dn` no longer parsed when the client came to
    /// authenticate, and the client could never authenticate.
    #[test]
    fn control_characters_are_written_as_hex_pairs_and_read_back() {
        let dn = DistinguishedName::parse("CN=w\\1Cr 7,O=a\\0Ab\\C2\\80,OU=\\00x").unwrap();
        let text = dn.to_string();
        assert_eq!(text, "CN=w\\1Cr 7,O=a\\0Ab\\C2\\80,OU=\\00x");
        assert!(!text.chars().any(char::is_control), "{text:?}");
        assert!(DistinguishedName::parse(&text).unwrap().matches(&dn));

        let registered =
            crate::CertificateMatch::parse("tls_client_auth_subject_dn", "CN=w\\1Cr 7").unwrap();
        let stored = registered.value();
        assert_eq!(stored, "CN=w\\1Cr 7");
        assert!(crate::CertificateMatch::parse(registered.parameter(), &stored).is_ok());
    }

    #[test]
    fn a_certificate_subject_reads_in_rfc_4514_order() {
        let mut builder = openssl::x509::X509NameBuilder::new().unwrap();
        builder.append_entry_by_text("C", "SE").unwrap();
        builder.append_entry_by_text("O", "Example, Inc.").unwrap();
        builder.append_entry_by_text("CN", "client").unwrap();
        let name = builder.build();
        let dn = DistinguishedName::of(&name);
        assert_eq!(dn.to_string(), "CN=client,O=Example\\, Inc.,C=SE");
        assert_eq!(dn.first(Nid::COMMONNAME), Some("client"));
        assert!(dn.matches(&DistinguishedName::parse(&dn.to_string()).unwrap()));
    }
}
