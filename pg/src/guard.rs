//! A length check on every frontend message *before* its body is buffered.
//!
//! pgwire's decoder accepts Query, Parse and Bind messages of up to 1 GiB and buffers a message
//! whole before decoding it, so one client announcing a huge message could make the server hold
//! that much memory. [`GuardedStream`] sits between the socket and pgwire's framing, follows the
//! message boundaries in the byte stream, and fails the read as soon as a header announces more
//! than the limit — having buffered only the header.
//!
//! ```text
//!   before startup:  [len: u32][code: u32][len - 8 bytes]      SSLRequest / GSSENCRequest → again;
//!                                                              anything else (startup) → typed
//!   after startup:   [type: u8][len: u32][len - 4 bytes] …
//! ```
//!
//! The guard must see the protocol's plaintext: with TLS (issue 9) it wraps the decrypted stream.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The SSLRequest code (PostgreSQL protocol §55.7).
const SSL_REQUEST_CODE: u32 = 80_877_103;
/// The GSSENCRequest code.
const GSSENC_REQUEST_CODE: u32 = 80_877_104;
/// Longest startup packet accepted (PostgreSQL's own limit, `MAX_STARTUP_PACKET_LENGTH`).
pub const STARTUP_BYTES_MAX: u32 = 10_000;

/// Why the guard refused the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuardError {
    /// A message announced more bytes than the limit.
    TooLarge {
        /// The announced length, in bytes, of the message body.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// A length field too small to be valid: the stream is not the PostgreSQL protocol.
    Malformed(String),
}

impl std::fmt::Display for GuardError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GuardError::TooLarge { len, max } => {
                write!(f, "message of {len} bytes is larger than the limit of {max} bytes")
            }
            GuardError::Malformed(why) => write!(f, "invalid message: {why}"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Before the startup message: untyped packets.
    Untyped,
    /// After it: a type byte, then a length.
    Typed,
}

/// Follows message boundaries in a byte stream and checks every announced length.
#[derive(Debug)]
pub struct FrameGuard {
    phase: Phase,
    header: [u8; 8],
    have: usize,
    /// Body bytes of the current message still to pass.
    skip: u64,
    body_bytes_max: u64,
}

impl FrameGuard {
    /// A guard for a new connection allowing message bodies of up to `body_bytes_max` bytes.
    pub fn new(body_bytes_max: u64) -> FrameGuard {
        FrameGuard { phase: Phase::Untyped, header: [0; 8], have: 0, skip: 0, body_bytes_max }
    }

    /// Feeds the next bytes of the stream; an error means the stream must be closed.
    pub fn observe(&mut self, mut bytes: &[u8]) -> Result<(), GuardError> {
        while !bytes.is_empty() {
            if self.skip > 0 {
                let n = self.skip.min(bytes.len() as u64);
                self.skip -= n;
                bytes = &bytes[n as usize..];
                continue;
            }
            let need = match self.phase {
                Phase::Untyped => 8,
                Phase::Typed => 5,
            };
            let take = (need - self.have).min(bytes.len());
            self.header[self.have..self.have + take].copy_from_slice(&bytes[..take]);
            self.have += take;
            bytes = &bytes[take..];
            if self.have == need {
                self.have = 0;
                self.header_done()?;
            }
        }
        Ok(())
    }

    fn header_done(&mut self) -> Result<(), GuardError> {
        let word = |at: usize| u32::from_be_bytes(self.header[at..at + 4].try_into().expect("four bytes"));
        match self.phase {
            Phase::Untyped => {
                let (len, code) = (word(0), word(4));
                if len < 8 {
                    return Err(GuardError::Malformed(format!("startup packet length {len}")));
                }
                if len > STARTUP_BYTES_MAX {
                    return Err(GuardError::TooLarge { len: len.into(), max: STARTUP_BYTES_MAX.into() });
                }
                self.skip = u64::from(len - 8);
                if code != SSL_REQUEST_CODE && code != GSSENC_REQUEST_CODE {
                    self.phase = Phase::Typed;
                }
            }
            Phase::Typed => {
                let len = word(1);
                if len < 4 {
                    return Err(GuardError::Malformed(format!("message length {len}")));
                }
                let body = u64::from(len - 4);
                if body > self.body_bytes_max {
                    return Err(GuardError::TooLarge { len: body, max: self.body_bytes_max });
                }
                self.skip = body;
            }
        }
        Ok(())
    }
}

/// A stream whose reads fail once the [`FrameGuard`] refuses what was read. Writes pass through.
#[derive(Debug)]
pub struct GuardedStream<S> {
    inner: S,
    guard: FrameGuard,
    refused: Option<GuardError>,
}

impl<S> GuardedStream<S> {
    /// Wraps `inner`, allowing message bodies of up to `body_bytes_max` bytes.
    pub fn new(inner: S, body_bytes_max: u64) -> GuardedStream<S> {
        GuardedStream { inner, guard: FrameGuard::new(body_bytes_max), refused: None }
    }

    /// The stream inside (a connection switching to TLS after its `SSLRequest`).
    pub fn into_inner(self) -> S {
        self.inner
    }

    /// Why reads fail, once they do.
    pub fn refused(&self) -> Option<&GuardError> {
        self.refused.as_ref()
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for GuardedStream<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if let Some(e) = &self.refused {
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, e.to_string())));
        }
        let before = buf.filled().len();
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if let Err(e) = this.guard.observe(&buf.filled()[before..]) {
                    // Hide what was read: pgwire must not decode past the refused header.
                    buf.set_filled(before);
                    let err = io::Error::new(io::ErrorKind::InvalidData, e.to_string());
                    this.refused = Some(e);
                    return Poll::Ready(Err(err));
                }
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for GuardedStream<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn startup() -> Vec<u8> {
        let body = b"\x00\x03\x00\x00user\x00me\x00\x00";
        let mut out = ((body.len() + 4) as u32).to_be_bytes().to_vec();
        out.extend_from_slice(body);
        out
    }

    fn typed(kind: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![kind];
        out.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
        out.extend_from_slice(body);
        out
    }

    fn ssl_request() -> Vec<u8> {
        let mut out = 8u32.to_be_bytes().to_vec();
        out.extend_from_slice(&SSL_REQUEST_CODE.to_be_bytes());
        out
    }

    #[test]
    fn follows_a_session_byte_by_byte_and_in_one_piece() {
        let mut stream = ssl_request();
        stream.extend(startup());
        stream.extend(typed(b'Q', b"SELECT 1\0"));
        stream.extend(typed(b'S', b""));
        stream.extend(typed(b'Q', &[b'x'; 100]));
        let mut whole = FrameGuard::new(100);
        whole.observe(&stream).unwrap();
        let mut bytewise = FrameGuard::new(100);
        for b in &stream {
            bytewise.observe(std::slice::from_ref(b)).unwrap();
        }
        assert_eq!(bytewise.phase, Phase::Typed);
        assert_eq!((bytewise.have, bytewise.skip), (0, 0));
    }

    #[test]
    fn refuses_a_large_message_from_its_header() {
        let mut guard = FrameGuard::new(100);
        guard.observe(&startup()).unwrap();
        let mut header = vec![b'Q'];
        header.extend_from_slice(&(1_000_000u32).to_be_bytes());
        assert_eq!(guard.observe(&header), Err(GuardError::TooLarge { len: 999_996, max: 100 }));
    }

    #[test]
    fn refuses_garbage() {
        assert!(matches!(FrameGuard::new(100).observe(&[0, 0, 0, 1, 0, 0, 0, 0]), Err(GuardError::Malformed(_))));
        // A TLS ClientHello where a startup packet should be: its "length" is enormous.
        assert!(matches!(
            FrameGuard::new(100).observe(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01]),
            Err(GuardError::TooLarge { .. })
        ));
        let mut guard = FrameGuard::new(100);
        guard.observe(&startup()).unwrap();
        assert!(matches!(guard.observe(&[b'Q', 0, 0, 0, 2]), Err(GuardError::Malformed(_))));
    }
}
