//! TLS and authentication on the node's gRPC port (issue 9).
//!
//! One port serves everyone, so the TLS handshake *asks* for a client certificate but does not
//! demand one; what a request needs is decided per service by a [`Gate`] (a tonic interceptor):
//!
//! ```text
//!   service                         TLS on (--certs-dir)                 TLS off
//!   Node (Deliver, Ping)            a node certificate of the cluster    the token, if one is set
//!                                   CA (CN `node:<name>`)
//!   Kv, Admin, FaultInjection       the token, if one is set, or any     the token, if one is set
//!                                   certificate of the cluster CA
//! ```
//!
//! rustls verifies every certificate a peer presents against the cluster CA during the
//! handshake, so a certificate from another CA never gets as far as a gate: the connection is
//! refused with "unknown CA" (the dialing node's join then fails saying so). The node runs the
//! handshakes itself ([`incoming`]) rather than through tonic, which drops a failed one without
//! a word: every refused handshake is logged with the peer's address and rustls's reason, so a
//! node or client with another CA's certificate shows in the cluster's logs too. Nodes dial each
//! other with their own node certificate and, when a token is set, the token as well: the token
//! is how nodes of an insecure cluster with `--token-file` recognise each other.
//!
//! Without `--certs-dir` and `--token-file` the node runs exactly as before, and says once, at
//! start, that it is unauthenticated and unencrypted.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use meridian_proto::auth::{AUTHORIZATION, BEARER_PREFIX, Secret, constant_time_eq};
use tonic::service::Interceptor;
use tonic::transport::{Certificate, ClientTlsConfig, Identity};
use tonic::{Request, Status};

/// Prefix of the common name of node certificates (`meridian cert node`).
pub const NODE_CN_PREFIX: &str = "node:";
/// Prefix of the common name of client certificates (`meridian cert client`).
pub const CLIENT_CN_PREFIX: &str = "client:";
/// The CA certificate's file name in a certificates directory.
pub const CA_CERT_FILE: &str = "ca.crt";

/// Errors loading certificates.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {path}: {error}; create certificates with `meridian cert`")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// The directory holds no node certificate, or several without a name to choose.
    #[error("{0}")]
    Missing(String),
}

/// A node's TLS material: the cluster CA and the node's own certificate and key (PEM).
#[derive(Clone, Debug)]
pub struct NodeTls {
    ca_pem: Vec<u8>,
    cert_pem: Vec<u8>,
    key_pem: Secret<Vec<u8>>,
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|error| TlsError::Read { path: path.to_path_buf(), error })
}

impl NodeTls {
    /// TLS material from PEM text.
    pub fn from_pem(ca_pem: Vec<u8>, cert_pem: Vec<u8>, key_pem: Secret<Vec<u8>>) -> NodeTls {
        NodeTls { ca_pem, cert_pem, key_pem }
    }

    /// Loads `ca.crt` and the node's certificate from `dir`: `node.<name>.crt`/`.key` when a
    /// name is given, else `node.crt`/`node.key`, else the only `node.*.crt` there is.
    pub fn load(dir: &Path, name: Option<&str>) -> Result<NodeTls, TlsError> {
        let base = match name {
            Some(n) => format!("node.{n}"),
            None if dir.join("node.crt").exists() => "node".to_string(),
            None => {
                let entries = std::fs::read_dir(dir).map_err(|error| TlsError::Read { path: dir.into(), error })?;
                let mut found: Vec<String> = entries
                    .filter_map(|e| e.ok()?.file_name().into_string().ok())
                    .filter(|f| f.starts_with("node.") && f.ends_with(".crt"))
                    .map(|f| f.trim_end_matches(".crt").to_string())
                    .collect();
                found.sort();
                match found.len() {
                    1 => found.remove(0),
                    0 => {
                        return Err(TlsError::Missing(format!(
                            "{} holds no node certificate (node.crt or node.<name>.crt); create one with `meridian cert node`",
                            dir.display()
                        )));
                    }
                    _ => {
                        return Err(TlsError::Missing(format!(
                            "{} holds several node certificates ({}); choose one with --cert-name",
                            dir.display(),
                            found.join(", ")
                        )));
                    }
                }
            }
        };
        Ok(NodeTls {
            ca_pem: read(&dir.join(CA_CERT_FILE))?,
            cert_pem: read(&dir.join(format!("{base}.crt")))?,
            key_pem: Secret::new(read(&dir.join(format!("{base}.key")))?),
        })
    }

    /// The accepting side, run by the node itself ([`incoming`]): present the node certificate,
    /// ask for (but do not demand) a client certificate, and verify any that comes against the
    /// cluster CA; HTTP/2 only (ALPN `h2`).
    pub(super) fn acceptor(&self) -> Result<tokio_rustls::TlsAcceptor, String> {
        use rustls_pki_types::pem::PemObject as _;
        use rustls_pki_types::{CertificateDer, PrivateKeyDer};
        use tokio_rustls::rustls::{RootCertStore, ServerConfig, server::WebPkiClientVerifier};
        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let mut roots = RootCertStore::empty();
        for ca in CertificateDer::pem_slice_iter(&self.ca_pem) {
            roots.add(ca.map_err(|e| format!("ca.crt: {e}"))?).map_err(|e| format!("ca.crt: {e}"))?;
        }
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .allow_unauthenticated()
            .build()
            .map_err(|e| format!("client certificate verifier: {e}"))?;
        let certs = CertificateDer::pem_slice_iter(&self.cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("node certificate: {e}"))?;
        let key = PrivateKeyDer::from_pem_slice(self.key_pem.expose()).map_err(|e| format!("node key: {e}"))?;
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs, key)
            .map_err(|e| format!("node certificate and key: {e}"))?;
        config.alpn_protocols.push(b"h2".to_vec());
        Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
    }

    /// The dialing side: verify the peer against the cluster CA, present the node certificate.
    pub(super) fn client_config(&self) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.ca_pem))
            .identity(Identity::from_pem(&self.cert_pem, self.key_pem.expose()))
    }
}

/// Longest a TLS handshake may take before the connection is dropped.
const HANDSHAKE_MAX: Duration = Duration::from_secs(10);
/// Handshakes in progress at once; more connections wait to be accepted.
const HANDSHAKES_IN_FLIGHT_MAX: usize = 256;
/// Connections past their handshake, waiting for the gRPC server to take them.
const ACCEPTED_QUEUE_MAX: usize = 64;

/// The connections of `listener` after their TLS handshake, for tonic's
/// `serve_with_incoming`. Each handshake runs on a task of its own, bounded by
/// [`HANDSHAKE_MAX`] (a slow peer delays nobody else); one that fails is logged with the peer's
/// address and why. Accepting stops when the server drops the stream.
pub(super) fn incoming(
    listener: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
) -> tokio_stream::wrappers::ReceiverStream<std::io::Result<tokio_rustls::server::TlsStream<tokio::net::TcpStream>>> {
    let (tx, rx) = tokio::sync::mpsc::channel(ACCEPTED_QUEUE_MAX);
    let permits = Arc::new(tokio::sync::Semaphore::new(HANDSHAKES_IN_FLIGHT_MAX));
    tokio::spawn(async move {
        loop {
            let permit = tokio::select! {
                _ = tx.closed() => break,
                p = permits.clone().acquire_owned() => p.expect("the semaphore is never closed"),
            };
            let (tcp, peer) = tokio::select! {
                _ = tx.closed() => break,
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of descriptors, say: the next accept may work.
                        tracing::warn!(error = %e, "accepting a connection failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            // Nagle off, as on connections tonic accepts itself.
            let _ = tcp.set_nodelay(true);
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                let _permit = permit;
                match tokio::time::timeout(HANDSHAKE_MAX, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => {
                        let _ = tx.send(Ok(tls)).await;
                    }
                    Ok(Err(e)) => tracing::warn!(%peer, "refused a TLS handshake from {peer}: {e}{}", refusal_hint(&e)),
                    Err(_) => {
                        tracing::warn!(%peer, "refused a TLS handshake from {peer}: not done within {HANDSHAKE_MAX:?}")
                    }
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// What a refused handshake most likely means, for the log line.
fn refusal_hint(e: &std::io::Error) -> &'static str {
    let text = e.to_string();
    if text.contains("certificate") || text.contains("UnknownCA") || text.contains("BadCertificate") {
        " (a node or client whose certificate is not of this cluster's CA?)"
    } else if text.contains("corrupt message") || text.contains("InvalidContentType") {
        " (a client without TLS?)"
    } else {
        ""
    }
}

/// Which rule a [`Gate`] applies (see the module table).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum GateKind {
    /// The node-to-node service.
    Peer,
    /// Client-facing services.
    Client,
}

/// The interceptor in front of one service: lets a request through or refuses it with
/// `Unauthenticated`, saying what credential is missing.
#[derive(Clone)]
pub(super) struct Gate {
    kind: GateKind,
    tls: bool,
    token: Option<Arc<Secret<String>>>,
}

/// The common name of a DER certificate, if it has one.
fn common_name(der: &[u8]) -> Option<String> {
    x509_certificate::X509Certificate::from_der(der).ok()?.subject_common_name()
}

impl Gate {
    pub(super) fn new(kind: GateKind, tls: bool, token: Option<Arc<Secret<String>>>) -> Gate {
        Gate { kind, tls, token }
    }

    fn token_ok(&self, req: &Request<()>) -> Result<bool, Status> {
        let Some(want) = &self.token else { return Ok(true) };
        let Some(got) = req.metadata().get(AUTHORIZATION) else { return Ok(false) };
        let got = got.to_str().unwrap_or("");
        let Some(got) = got.strip_prefix(BEARER_PREFIX) else {
            return Err(Status::unauthenticated("the authorization metadata must be `Bearer <token>`"));
        };
        if constant_time_eq(got.as_bytes(), want.expose().as_bytes()) {
            Ok(true)
        } else {
            Err(Status::unauthenticated("invalid token: check --token-file or MERIDIAN_TOKEN"))
        }
    }

    fn check(&self, req: &Request<()>) -> Result<(), Status> {
        // rustls has verified every presented certificate against the cluster CA.
        let certs = req.peer_certs();
        match self.kind {
            GateKind::Peer if self.tls => {
                let node_cn = certs
                    .as_ref()
                    .and_then(|c| c.first())
                    .and_then(|c| common_name(c))
                    .filter(|cn| cn.starts_with(NODE_CN_PREFIX));
                match node_cn {
                    Some(_) => Ok(()),
                    None => Err(Status::unauthenticated(
                        "the node-to-node service needs a node certificate of the cluster CA (`meridian cert node`)",
                    )),
                }
            }
            GateKind::Peer | GateKind::Client => {
                if certs.is_some_and(|c| !c.is_empty()) && self.kind == GateKind::Client {
                    return Ok(());
                }
                match self.token_ok(req)? {
                    true => Ok(()),
                    false => Err(Status::unauthenticated(
                        "this node requires a token: pass --token-file or set MERIDIAN_TOKEN \
                         (gRPC metadata `authorization: Bearer <token>`), or a client certificate",
                    )),
                }
            }
        }
    }
}

impl Interceptor for Gate {
    fn call(&mut self, req: Request<()>) -> Result<Request<()>, Status> {
        self.check(&req)?;
        Ok(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_token(t: &str) -> Request<()> {
        let mut r = Request::new(());
        r.metadata_mut().insert(AUTHORIZATION, format!("Bearer {t}").parse().expect("ascii"));
        r
    }

    #[test]
    fn client_gate_wants_the_token_and_peer_gate_a_node_cert() {
        let token = Some(Arc::new(Secret::new("s3cret".to_string())));
        let client = Gate::new(GateKind::Client, false, token.clone());
        assert!(client.check(&with_token("s3cret")).is_ok());
        let wrong = client.check(&with_token("nope")).expect_err("wrong token refused");
        assert_eq!(wrong.code(), tonic::Code::Unauthenticated);
        assert!(!wrong.message().contains("s3cret"), "the refusal must not echo the token");
        let none = client.check(&Request::new(())).expect_err("no token refused");
        assert_eq!(none.code(), tonic::Code::Unauthenticated);
        // Insecure and tokenless: everything passes, as before issue 9.
        assert!(Gate::new(GateKind::Client, false, None).check(&Request::new(())).is_ok());
        assert!(Gate::new(GateKind::Peer, false, None).check(&Request::new(())).is_ok());
        // With TLS, the peer service wants a node certificate; a token is not enough.
        let peer = Gate::new(GateKind::Peer, true, token);
        assert_eq!(peer.check(&with_token("s3cret")).expect_err("no cert").code(), tonic::Code::Unauthenticated);
    }
}
