//! Bearer-key auth: which routes need a key, and a comparison that does not leak by timing.

use http::Request;
use http::header;

use crate::error::{ApiError, ErrorKind};

/// Checks the request's `Authorization: Bearer` key against `keys`; no keys means the API is
/// open.
pub(crate) fn authorize<B>(keys: &[String], req: &Request<B>) -> Result<(), ApiError> {
    if keys.is_empty() {
        return Ok(());
    }
    let Some(value) = req.headers().get(header::AUTHORIZATION) else {
        return Err(ApiError::new(
            ErrorKind::InvalidApiKey,
            "Missing API key: send it as `Authorization: Bearer <key>`.",
        ));
    };
    // The scheme is case-insensitive (RFC 7235): `Bearer`, `bearer`, `BEARER`.
    let presented = value
        .to_str()
        .ok()
        .and_then(|v| v.trim_start().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, key)| key.trim())
        .unwrap_or_default();
    // Every key is compared, so timing does not reveal which one nearly matched.
    let ok = keys.iter().fold(false, |ok, k| {
        ok | constant_time_eq(k.as_bytes(), presented.as_bytes())
    });
    if ok {
        Ok(())
    } else {
        Err(ApiError::new(
            ErrorKind::InvalidApiKey,
            "Incorrect API key provided.",
        ))
    }
}

/// Compares without an early exit, so response time does not reveal how much of a key matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_compare_exactly() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }

    #[test]
    fn bearer_keys_are_checked() {
        let keys = vec!["k1".to_string(), "k2".to_string()];
        let with = |value: Option<&str>| {
            let mut req = Request::builder();
            if let Some(v) = value {
                req = req.header(header::AUTHORIZATION, v);
            }
            authorize(&keys, &req.body(()).unwrap())
        };
        assert!(with(Some("Bearer k2")).is_ok());
        assert!(with(Some("bearer k1 ")).is_ok());
        assert!(with(Some("BEARER k1")).is_ok());
        assert!(with(Some("BeArEr  k2")).is_ok());
        for bad in [None, Some("Bearer k3"), Some("k1"), Some("Basic k1")] {
            assert_eq!(
                with(bad).unwrap_err().kind,
                ErrorKind::InvalidApiKey,
                "{bad:?}"
            );
        }
        assert!(authorize(&[], &Request::new(())).is_ok());
    }
}
