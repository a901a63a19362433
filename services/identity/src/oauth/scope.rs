//! OAuth2 scope values (RFC 6749 §3.3).

use std::collections::BTreeSet;

/// The scope that lets a tenant admin call its tenant's admin API.
pub const ADMIN: &str = "admin";

/// Whether `token` is a valid scope token: `1*( %x21 / %x23-5B / %x5D-7E )`.
pub fn is_scope_token(token: &str) -> bool {
    !token.is_empty()
        && token.len() <= 128
        && token
            .bytes()
            .all(|b| b == 0x21 || (0x23..=0x5B).contains(&b) || (0x5D..=0x7E).contains(&b))
}

/// Parses a space-separated scope parameter; `None` if a token is invalid.
pub fn parse(raw: &str) -> Option<BTreeSet<String>> {
    raw.split(' ')
        .filter(|t| !t.is_empty())
        .map(|t| is_scope_token(t).then(|| t.to_owned()))
        .collect()
}

/// The space-separated form.
pub fn join(scopes: &BTreeSet<String>) -> String {
    scopes
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(" ")
}
