//! HTTP basic auth for the admin listener.
//!
//! Owns: decoding an `Authorization: Basic …` header and the `CredentialCheck` seam.
//! Invariant: a malformed header is a refusal, never a panic. Must not touch: password
//! files (the loader in `src/auth` fills a `CredentialCheck`; this module never reads disk).

use base64::Engine;

/// Longest `Authorization` value considered, bytes.
const AUTH_HEADER_BYTES_MAX: usize = 1024;

/// Decides whether a user name and password may use the admin listener. The MQTT
/// password-file loader implements it; any `Fn(&str, &str) -> bool` does too.
pub trait CredentialCheck: Send + Sync {
    /// True if `user` with `password` is allowed.
    fn check(&self, user: &str, password: &str) -> bool;
}

impl<F: Fn(&str, &str) -> bool + Send + Sync> CredentialCheck for F {
    fn check(&self, user: &str, password: &str) -> bool {
        self(user, password)
    }
}

/// The user name and password of a `Basic` authorization value.
pub fn basic_credentials(value: &str) -> Option<(String, String)> {
    if value.len() > AUTH_HEADER_BYTES_MAX {
        return None;
    }
    let (scheme, token) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(token.trim())
        .ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (user, pass) = text.split_once(':')?;
    Some((user.to_string(), pass.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_basic_and_refuses_the_rest() {
        // "admin:s3cret:with colon"
        let v = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("admin:s3cret:with colon")
        );
        assert_eq!(
            basic_credentials(&v),
            Some(("admin".into(), "s3cret:with colon".into()))
        );
        assert_eq!(
            basic_credentials("basic YTpi"),
            Some(("a".into(), "b".into()))
        );
        for bad in [
            "",
            "Basic",
            "Bearer YTpi",
            "Basic !!!",
            "Basic bm9jb2xvbg==",
            &"Basic ".repeat(300),
        ] {
            assert_eq!(basic_credentials(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_closure_is_a_credential_check() {
        let c: &dyn CredentialCheck = &|u: &str, p: &str| u == "admin" && p == "pw";
        assert!(c.check("admin", "pw"));
        assert!(!c.check("admin", "PW"));
    }
}
