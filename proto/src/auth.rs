//! How a caller proves who it is on the wire (issue 9), shared by the node and the client.
//!
//! Two credentials exist, and a request needs one of them when the node asks for it:
//!
//! - **mTLS**: a certificate signed by the cluster's CA (`meridian cert`). Nodes always present
//!   theirs when they dial each other; the node-to-node service (`Node`: `Deliver`, `Ping`)
//!   accepts nothing else. A client may present one too.
//! - **A bearer token**: gRPC metadata `authorization: Bearer <token>` on client-facing services
//!   (`Kv`, `Admin`, `FaultInjection`), when the node was started with `--token-file`.
//!
//! Secrets travel in [`Secret`], whose `Debug` and `Display` print `***`: a token, password or
//! private key that ends up in a log line or an error message shows as stars.

/// The metadata key carrying the bearer token (lowercase, as gRPC metadata keys must be).
pub const AUTHORIZATION: &str = "authorization";
/// The scheme prefix of the token in [`AUTHORIZATION`].
pub const BEARER_PREFIX: &str = "Bearer ";

/// A value that must never be printed: tokens, passwords, private keys.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    /// Wraps a secret.
    pub fn new(value: T) -> Self {
        Secret(value)
    }

    /// The secret itself, for the one place that must use it (a header, a TLS config).
    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T> std::fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

impl<T> std::fmt::Display for Secret<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// Compares two byte strings in time that depends only on their lengths, so a caller cannot
/// learn a token byte by byte from how fast it is refused.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Reads a secret from the first line of a file (trailing newline and spaces trimmed). Secrets
/// come from files, never from flags, so they stay out of `ps` and shell history.
pub fn read_secret_file(path: &std::path::Path) -> std::io::Result<Secret<String>> {
    let text = std::fs::read_to_string(path)?;
    let first = text.lines().next().unwrap_or("").trim().to_string();
    if first.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{} is empty: put the secret on its first line", path.display()),
        ));
    }
    Ok(Secret(first))
}

/// A tonic interceptor for the calling side: adds `authorization: Bearer <token>` to every
/// request when it has a token, and nothing otherwise.
#[derive(Clone, Default)]
pub struct Bearer {
    header: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
}

impl Bearer {
    /// An interceptor sending `token`; a token that is not valid header text is refused here,
    /// at start, not at the first call. The error does not repeat the token.
    pub fn new(token: Option<&Secret<String>>) -> Result<Bearer, String> {
        let header = match token {
            None => None,
            Some(t) => {
                let mut h: tonic::metadata::MetadataValue<_> =
                    format!("{BEARER_PREFIX}{}", t.expose()).parse().map_err(|_| {
                        "the token holds characters not allowed in a header: use printable ASCII".to_string()
                    })?;
                // Kept out of HTTP/2 header compression tables and debug output.
                h.set_sensitive(true);
                Some(h)
            }
        };
        Ok(Bearer { header })
    }
}

impl std::fmt::Debug for Bearer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.header.is_some() { "Bearer(***)" } else { "Bearer(none)" })
    }
}

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(h) = &self.header {
            req.metadata_mut().insert(AUTHORIZATION, h.clone());
        }
        Ok(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        let s = Secret::new("hunter2".to_string());
        assert_eq!(format!("{s:?} {s} {:?}", Some(&s)), "*** *** Some(***)");
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn bearer_adds_the_header_and_hides_it() {
        use tonic::service::Interceptor;
        let mut b = Bearer::new(Some(&Secret::new("s3cret".to_string()))).expect("ascii");
        assert_eq!(format!("{b:?}"), "Bearer(***)");
        let r = b.call(tonic::Request::new(())).expect("adds");
        assert_eq!(r.metadata().get(AUTHORIZATION).and_then(|v| v.to_str().ok()), Some("Bearer s3cret"));
        let r = Bearer::default().call(tonic::Request::new(())).expect("adds nothing");
        assert!(r.metadata().get(AUTHORIZATION).is_none());
        assert!(Bearer::new(Some(&Secret::new("bad\ntoken".to_string()))).is_err());
    }

    #[test]
    fn constant_time_eq_is_eq() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(constant_time_eq(b"", b""));
    }
}
