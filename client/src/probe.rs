//! What is wrong with an address, when a call to it fails in a way retrying cannot fix.
//!
//! A client pointed at the wrong port learns little from gRPC: a PostgreSQL port answers the
//! HTTP/2 preface with a PostgreSQL error message, which the HTTP/2 layer reads as a frame "with
//! invalid size"; a TLS port answers with a TLS alert; an HTTP port answers `404` without
//! `grpc-status`. Retried, each of those fails the same way until the request's deadline. So
//! when a call fails with one of those shapes, [`diagnose`] looks at the port once — one
//! connection, one write, one read, bounded by [`PROBE_WAIT`] — and names what listens there.
//!
//! | a call fails with                                   | verdict                                         |
//! |-----------------------------------------------------|-------------------------------------------------|
//! | connection refused                                  | [`Verdict::Refused`]: nothing listens (the caller retries briefly: a node may be restarting) |
//! | a certificate the client's CA did not sign          | final: wrong CA                                 |
//! | plaintext at a TLS port (probe: a TLS alert)        | final: give the client the cluster's CA         |
//! | TLS at a plaintext port                             | final: the node runs without TLS                |
//! | HTTP/2 framing error (probe: a PostgreSQL message)  | final: a PostgreSQL port, not the node's `--listen` |
//! | HTTP status without `grpc-status`, or HTTP/1 answer | final: an HTTP port                             |
//! | `UNIMPLEMENTED` with a `grpc-status`                | final: a gRPC server that does not serve Meridian's calls |
//! | `UNAUTHENTICATED`                                   | final: the credentials                           |
//! | anything else (a timeout, a reset, a node's error)  | [`Verdict::Retry`]                              |
//!
//! Only failures of those shapes are probed, so a node that is down or paused costs no probe.

use std::time::Duration;

use crate::ClientError;

/// Longest a probe of one address may take (connect, write, read).
pub const PROBE_WAIT: Duration = Duration::from_secs(1);
/// Bytes of the answer a probe reads.
const PROBE_READ_MAX: usize = 64;
/// What a gRPC client sends first on a connection (RFC 9113 §3.4).
const HTTP2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// What a failed call says about the address it went to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Nothing listens there (connection refused): a node down or restarting.
    Refused(String),
    /// Retrying cannot help: the address or the credentials are wrong.
    Final(ClientError),
    /// Worth another attempt (maybe at another node).
    Retry(String),
}

/// What answered the probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Listener {
    /// A TLS server (it answered the preface with a TLS alert record).
    Tls,
    /// A PostgreSQL server (it answered with an `ErrorResponse`).
    Postgres,
    /// An HTTP/1 server.
    Http1,
    /// Something else, or nothing within [`PROBE_WAIT`].
    Other,
}

/// Classifies the first bytes a server sent back to the HTTP/2 preface.
pub(crate) fn classify_answer(head: &[u8]) -> Listener {
    match head {
        // A TLS record header: content type 21 (alert), version 3.x.
        [0x15, 0x03, ..] => Listener::Tls,
        // PostgreSQL's ErrorResponse: 'E', a length, then fields tagged S, V, C or M.
        [b'E', _, _, _, _, b'S' | b'V' | b'C' | b'M', ..] => Listener::Postgres,
        _ if head.starts_with(b"HTTP/1.") => Listener::Http1,
        _ => Listener::Other,
    }
}

/// Connects to `addr`, sends the HTTP/2 preface and classifies the answer. Bounded by
/// [`PROBE_WAIT`] in all.
pub(crate) async fn probe(addr: &str) -> Listener {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let probe = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
        s.write_all(HTTP2_PREFACE).await.ok()?;
        let mut head = Vec::with_capacity(PROBE_READ_MAX);
        let mut buf = [0u8; PROBE_READ_MAX];
        // Bounded: at most PROBE_READ_MAX bytes, and the whole probe by PROBE_WAIT.
        while head.len() < 8 {
            let n = s.read(&mut buf[..PROBE_READ_MAX - head.len()]).await.ok()?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        Some(classify_answer(&head))
    };
    tokio::time::timeout(PROBE_WAIT, probe).await.ok().flatten().unwrap_or(Listener::Other)
}

/// A failed call's text, with its causes.
fn chain(status: &tonic::Status) -> String {
    crate::status_text(status)
}

/// Whether the call failed because the TCP connection was refused.
pub(crate) fn refused(status: &tonic::Status) -> bool {
    use std::error::Error as _;
    let mut source = status.source();
    // Bounded: chains are short, but a cyclic one must not hang the client.
    for _ in 0..16 {
        let Some(e) = source else { break };
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return io.kind() == std::io::ErrorKind::ConnectionRefused;
        }
        source = e.source();
    }
    chain(status).to_ascii_lowercase().contains("connection refused")
}

/// What the failed call `status` to `addr` says, probing the port when the failure's shape
/// suggests another protocol. `tls`: whether the client spoke TLS.
pub(crate) async fn diagnose(addr: &str, status: &tonic::Status, tls: bool) -> Verdict {
    let text = chain(status);
    let lower = text.to_ascii_lowercase();
    if status.code() == tonic::Code::Unauthenticated {
        return Verdict::Final(ClientError::Unauthenticated(format!("{addr}: {}", status.message())));
    }
    if refused(status) {
        return Verdict::Refused(format!("nothing listens at {addr} (connection refused)"));
    }
    if lower.contains("invalid peer certificate") {
        return Verdict::Final(ClientError::Unauthenticated(format!(
            "{addr}'s certificate is not one this client trusts ({}): give the client the cluster's CA \
             (--certs-dir DIR with its ca.crt, or --ca-cert FILE; ClientOptions::tls)",
            peer_certificate_reason(&text)
        )));
    }
    if tls
        && (lower.contains("corrupt message")
            || lower.contains("invalidcontenttype")
            || lower.contains("wrong version"))
    {
        return Verdict::Final(ClientError::Unauthenticated(format!(
            "{addr} does not speak TLS (the node runs without --certs-dir): connect without --certs-dir/--ca-cert, \
             or start the nodes with certificates ({text})"
        )));
    }
    if lower.contains("mapped from http status code") {
        return Verdict::Final(ClientError::WrongAddress(format!(
            "{addr} is an HTTP port, not a Meridian node's gRPC port ({}): give the node's --listen address, not \
             its --http-listen one",
            status.message()
        )));
    }
    if status.code() == tonic::Code::Unimplemented {
        return Verdict::Final(ClientError::WrongAddress(format!(
            "{addr} speaks gRPC but does not serve Meridian's calls ({}): give a Meridian node's --listen address \
             (of this version)",
            status.message()
        )));
    }
    // The shapes a server of another protocol causes: an HTTP/2 framing error (INTERNAL), or
    // a connection closed in the middle (UNKNOWN / UNAVAILABLE with an h2 error).
    let framing = status.code() == tonic::Code::Internal || lower.contains("h2 protocol error");
    if framing && !tls {
        match probe(addr).await {
            Listener::Tls => {
                return Verdict::Final(ClientError::Unauthenticated(format!(
                    "{addr} speaks TLS and this client connected without it: give it the cluster's CA \
                     (--certs-dir DIR or --ca-cert FILE; ClientOptions::tls)"
                )));
            }
            Listener::Postgres => {
                return Verdict::Final(ClientError::WrongAddress(format!(
                    "{addr} is a PostgreSQL port, not a Meridian node's gRPC port: give the node's --listen address \
                     (use `meridian sql --addr {addr}` or psql for this one)"
                )));
            }
            Listener::Http1 => {
                return Verdict::Final(ClientError::WrongAddress(format!(
                    "{addr} is an HTTP port (it answers HTTP/1.1, not gRPC): give the node's --listen address, not \
                     its --http-listen one"
                )));
            }
            Listener::Other => {}
        }
    }
    Verdict::Retry(format!("{addr}: {text}"))
}

/// The rustls reason in a certificate error ("UnknownIssuer", "BadSignature", …), or the text.
fn peer_certificate_reason(text: &str) -> String {
    match text.split_once("invalid peer certificate: ") {
        Some((_, rest)) => rest.split(':').next().unwrap_or(rest).trim().to_string(),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_to_the_preface_are_named() {
        assert_eq!(classify_answer(&[0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x46]), Listener::Tls);
        // What Meridian's PostgreSQL port sends: a FATAL ErrorResponse.
        let mut pg = vec![b'E', 0, 0, 0, 40];
        pg.extend_from_slice(b"SFATAL\0C54000\0Mstartup packet too large\0\0");
        assert_eq!(classify_answer(&pg), Listener::Postgres);
        assert_eq!(classify_answer(b"HTTP/1.1 400 Bad Request\r\n"), Listener::Http1);
        // An HTTP/2 server's SETTINGS frame, silence and garbage name nothing.
        assert_eq!(classify_answer(&[0, 0, 6, 4, 0, 0, 0, 0, 0]), Listener::Other);
        assert_eq!(classify_answer(&[]), Listener::Other);
        assert_eq!(classify_answer(b"Ehlo"), Listener::Other);
    }

    #[test]
    fn the_rustls_reason_is_cut_out_of_the_chain() {
        let t = "transport error: error trying to connect: invalid peer certificate: UnknownIssuer";
        assert_eq!(peer_certificate_reason(t), "UnknownIssuer");
        assert_eq!(peer_certificate_reason("other"), "other");
    }
}
