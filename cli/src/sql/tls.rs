//! TLS for `meridian sql`: tokio-postgres's `MakeTlsConnect` over tokio-rustls (ring), with
//! libpq's `sslmode` semantics.
//!
//! ```text
//!   sslmode       TLS            server certificate                      what psql does alike
//!   disable       never          —                                       sslmode=disable
//!   prefer        if offered     CA chain if a CA is given, else none    sslmode=prefer
//!   require       required       CA chain if a CA is given, else none    sslmode=require
//!   verify-ca     required       CA chain (a CA is required)             sslmode=verify-ca
//!   verify-full   required       CA chain and host name (CA required)    sslmode=verify-full
//! ```
//!
//! The shell picks `verify-full` when given a CA (`--certs-dir`/`--ca-cert`) and no `sslmode`,
//! else `disable`; a secured node refuses plaintext ("this server requires TLS"). A server that
//! does not offer TLS when TLS is required fails the connection with "server does not support
//! TLS" (tokio-postgres's check after the `SSLRequest`); an unknown CA fails the handshake with
//! rustls's "invalid peer certificate: UnknownIssuer".
//!
//! The stream reports `tls-server-end-point` channel binding (RFC 5929: a hash of the server's
//! certificate, SHA-256 for SHA-1/SHA-256 signatures, SHA-384 for SHA-384 ones), so SCRAM runs as
//! SCRAM-SHA-256-PLUS when the server offers it: a password proof relayed through another TLS
//! connection does not verify. A certificate signed otherwise (Ed25519, RSA-PSS, SHA-512) gets
//! plain SCRAM-SHA-256, as the `tokio-postgres-rustls` crate does. That crate is not used: it
//! wants rustls's default features (the aws-lc-rs provider, built with cmake) and x509 parsing
//! crates; this is the small part of it we need, on the workspace's ring-only rustls.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use anyhow::Context as _;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};
use tokio_rustls::rustls;
use tokio_rustls::rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use tokio_rustls::rustls::pki_types::pem::PemObject as _;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio_rustls::rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};

/// How much TLS a connection wants, and how much of the server's certificate it checks
/// (libpq's `sslmode`; `allow` is taken as `prefer`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SslMode {
    /// Plaintext.
    Disable,
    /// TLS when the server offers it.
    Prefer,
    /// TLS or nothing.
    Require,
    /// TLS, and a server certificate the CA signed.
    VerifyCa,
    /// TLS, and a server certificate the CA signed for the host connected to.
    VerifyFull,
}

impl SslMode {
    /// Parses a `sslmode` value.
    pub fn parse(s: &str) -> anyhow::Result<SslMode> {
        Ok(match s {
            "disable" => SslMode::Disable,
            "allow" | "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            other => {
                anyhow::bail!("sslmode={other:?} is not one of disable, allow, prefer, require, verify-ca, verify-full")
            }
        })
    }

    /// The mode tokio-postgres negotiates with: it knows only whether TLS is off, optional or
    /// required; the verification is the connector's.
    pub fn negotiation(self) -> tokio_postgres::config::SslMode {
        match self {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => tokio_postgres::config::SslMode::Require,
        }
    }
}

/// What a connection string says about TLS, which tokio-postgres cannot take: `verify-ca` and
/// `verify-full` are not among its `sslmode`s, and it has no `sslrootcert`.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct TlsParams {
    /// `sslmode=`.
    pub sslmode: Option<SslMode>,
    /// `sslrootcert=`: the CA certificate file.
    pub sslrootcert: Option<std::path::PathBuf>,
}

/// Takes `sslmode` and `sslrootcert` out of a connection string, a URL
/// (`postgresql://…?sslmode=verify-full&sslrootcert=ca.crt`) or `key=value` pairs
/// (`host=… sslmode=verify-full`); returns the rest, for tokio-postgres to parse.
pub fn split_tls_params(conninfo: &str) -> anyhow::Result<(String, TlsParams)> {
    let mut params = TlsParams::default();
    let mut take = |key: &str, value: String| -> anyhow::Result<bool> {
        match key {
            "sslmode" => params.sslmode = Some(SslMode::parse(&value)?),
            "sslrootcert" => {
                anyhow::ensure!(value != "system", "sslrootcert=system is not supported: name the CA file");
                params.sslrootcert = Some(value.into());
            }
            _ => return Ok(false),
        }
        Ok(true)
    };
    let rest = if conninfo.starts_with("postgres://") || conninfo.starts_with("postgresql://") {
        let Some((base, query)) = conninfo.split_once('?') else { return Ok((conninfo.to_string(), params)) };
        let mut kept = Vec::new();
        for pair in query.split('&') {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            if !take(&percent_decode(k)?, percent_decode(v)?)? {
                kept.push(pair);
            }
        }
        if kept.is_empty() { base.to_string() } else { format!("{base}?{}", kept.join("&")) }
    } else {
        let mut kept = Vec::new();
        for (k, v) in key_values(conninfo)? {
            if !take(&k, v.clone())? {
                // Quoted, with `\` and `'` escaped: the value may hold spaces.
                kept.push(format!("{k}='{}'", v.replace('\\', "\\\\").replace('\'', "\\'")));
            }
        }
        kept.join(" ")
    };
    Ok((rest, params))
}

/// Decodes `%XX` escapes of a URL part.
fn percent_decode(s: &str) -> anyhow::Result<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
            let byte = hex.and_then(|h| u8::from_str_radix(h, 16).ok());
            out.push(byte.with_context(|| format!("a bad %-escape in the URL near {s:?}"))?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).context("the URL decodes to invalid UTF-8")
}

/// The `key = value` pairs of a libpq connection string; a value is bare or in single quotes,
/// and `\` escapes the next character in both.
fn key_values(s: &str) -> anyhow::Result<Vec<(String, String)>> {
    let mut pairs = Vec::new();
    let mut it = s.chars().peekable();
    loop {
        while it.next_if(|c| c.is_whitespace()).is_some() {}
        if it.peek().is_none() {
            return Ok(pairs);
        }
        let mut key = String::new();
        while let Some(c) = it.next_if(|c| !c.is_whitespace() && *c != '=') {
            key.push(c);
        }
        while it.next_if(|c| c.is_whitespace()).is_some() {}
        anyhow::ensure!(it.next() == Some('='), "the connection string lacks '=' after {key:?}");
        while it.next_if(|c| c.is_whitespace()).is_some() {}
        let quoted = it.next_if_eq(&'\'').is_some();
        let mut value = String::new();
        loop {
            match it.next() {
                None if quoted => anyhow::bail!("the connection string's value of {key:?} lacks its closing quote"),
                None => break,
                Some('\'') if quoted => break,
                Some(c) if c.is_whitespace() && !quoted => break,
                Some('\\') => value.extend(it.next()),
                Some(c) => value.push(c),
            }
        }
        pairs.push((key, value));
    }
}

/// Makes a [`RustlsConnect`] per host; cheap to clone.
#[derive(Clone)]
pub struct MakeRustlsConnect {
    config: Arc<rustls::ClientConfig>,
}

impl MakeRustlsConnect {
    /// A connector for `mode`, trusting the CA certificates in `ca_pem` (PEM) when given.
    pub fn new(mode: SslMode, ca_pem: Option<&[u8]>) -> anyhow::Result<MakeRustlsConnect> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .context("TLS protocol versions")?;
        let verifier: Arc<dyn ServerCertVerifier> = match ca_pem {
            None => {
                anyhow::ensure!(
                    !matches!(mode, SslMode::VerifyCa | SslMode::VerifyFull),
                    "sslmode=verify-ca and verify-full check the server against the cluster CA: pass \
                     --certs-dir DIR or --ca-cert FILE (or sslrootcert= in --url)"
                );
                Arc::new(Unverified(provider))
            }
            Some(pem) => {
                let mut roots = rustls::RootCertStore::empty();
                for cert in CertificateDer::pem_slice_iter(pem) {
                    roots.add(cert.context("the CA certificate is not valid PEM")?).context("the CA certificate")?;
                }
                anyhow::ensure!(!roots.is_empty(), "the CA certificate file holds no certificate");
                let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                    .build()
                    .context("the CA certificate")?;
                if mode == SslMode::VerifyFull { webpki } else { Arc::new(AnyName(webpki)) }
            }
        };
        let config = builder.dangerous().with_custom_certificate_verifier(verifier).with_no_client_auth();
        Ok(MakeRustlsConnect { config: Arc::new(config) })
    }
}

impl<S> MakeTlsConnect<S> for MakeRustlsConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type TlsConnect = RustlsConnect;
    type Error = rustls::pki_types::InvalidDnsNameError;

    fn make_tls_connect(&mut self, domain: &str) -> Result<RustlsConnect, Self::Error> {
        let name = ServerName::try_from(domain.to_string())?;
        Ok(RustlsConnect { connector: tokio_rustls::TlsConnector::from(self.config.clone()), name })
    }
}

/// The TLS handshake with one host.
pub struct RustlsConnect {
    connector: tokio_rustls::TlsConnector,
    name: ServerName<'static>,
}

impl<S> TlsConnect<S> for RustlsConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<RustlsStream<S>>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move { self.connector.connect(self.name, stream).await.map(RustlsStream) })
    }
}

/// A TLS connection to a PostgreSQL port.
pub struct RustlsStream<S>(tokio_rustls::client::TlsStream<S>);

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for RustlsStream<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for RustlsStream<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> TlsStream for RustlsStream<S> {
    fn channel_binding(&self) -> ChannelBinding {
        let (_, conn) = self.0.get_ref();
        match conn.peer_certificates().and_then(|c| c.first()).and_then(|c| end_point_hash(c)) {
            Some(hash) => ChannelBinding::tls_server_end_point(hash),
            None => ChannelBinding::none(),
        }
    }
}

/// The hash functions of RFC 5929's `tls-server-end-point`.
#[derive(Debug, PartialEq, Eq)]
enum EndPointHash {
    Sha256,
    Sha384,
}

/// `tls-server-end-point` channel binding data of a certificate (DER), or `None` when its
/// signature algorithm is one we do not map (see the module documentation).
fn end_point_hash(cert_der: &[u8]) -> Option<Vec<u8>> {
    use rustls::crypto::ring::cipher_suite::{TLS13_AES_128_GCM_SHA256, TLS13_AES_256_GCM_SHA384};
    let suite = match end_point_hash_of(signature_algorithm(cert_der)?)? {
        EndPointHash::Sha256 => TLS13_AES_128_GCM_SHA256,
        EndPointHash::Sha384 => TLS13_AES_256_GCM_SHA384,
    };
    let hash = suite.tls13().expect("a TLS 1.3 suite constant is a TLS 1.3 suite").common.hash_provider;
    Some(hash.hash(cert_der).as_ref().to_vec())
}

/// RFC 5929 §4.1: the certificate's signature hash, with MD5 and SHA-1 replaced by SHA-256.
fn end_point_hash_of(oid: &[u8]) -> Option<EndPointHash> {
    const ECDSA: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03]; // 1.2.840.10045.4.3
    const PKCS1: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01]; // 1.2.840.113549.1.1
    let (family, last) = oid.split_last().map(|(l, f)| (f, *l))?;
    match (family, last) {
        (ECDSA, 0x01 | 0x02) => Some(EndPointHash::Sha256), // ecdsa-with-SHA1, -SHA256
        (ECDSA, 0x03) => Some(EndPointHash::Sha384),
        (PKCS1, 0x04 | 0x05 | 0x0b) => Some(EndPointHash::Sha256), // md5, sha1, sha256 WithRSA
        (PKCS1, 0x0c) => Some(EndPointHash::Sha384),
        _ => None,
    }
}

/// The OID (content bytes) of a certificate's outer `signatureAlgorithm`:
/// `Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm SEQUENCE { OID, … }, … }`.
fn signature_algorithm(cert_der: &[u8]) -> Option<&[u8]> {
    let (tag, cert, _) = der_tlv(cert_der)?;
    if tag != 0x30 {
        return None;
    }
    let (_, _, after_tbs) = der_tlv(cert)?;
    let (tag, alg, _) = der_tlv(after_tbs)?;
    if tag != 0x30 {
        return None;
    }
    let (tag, oid, _) = der_tlv(alg)?;
    (tag == 0x06).then_some(oid)
}

/// One DER TLV at the start of `b`: (tag, contents, the rest after it).
fn der_tlv(b: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = b.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        // Long form: the low bits count the length bytes; a certificate needs at most 4.
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n].iter().fold(0usize, |acc, &x| (acc << 8) | usize::from(x));
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// `sslmode=verify-ca`, and `prefer`/`require` with a CA: the chain must lead to the CA, the
/// host name is not checked.
#[derive(Debug)]
struct AnyName(Arc<rustls::client::WebPkiServerVerifier>);

impl ServerCertVerifier for AnyName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.0.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// `sslmode=prefer`/`require` without a CA: encryption against passive listeners only, as in
/// libpq. The handshake's signatures are still checked (the server holds the certificate's key).
#[derive(Debug)]
struct Unverified(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(alg: &'static rcgen::SignatureAlgorithm) -> Vec<u8> {
        let key = rcgen::KeyPair::generate_for(alg).expect("key");
        let params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).expect("params");
        params.self_signed(&key).expect("sign").der().to_vec()
    }

    #[test]
    fn channel_binding_hashes_by_the_signature_algorithm() {
        let p256 = cert(&rcgen::PKCS_ECDSA_P256_SHA256);
        assert_eq!(end_point_hash_of(signature_algorithm(&p256).expect("oid")), Some(EndPointHash::Sha256));
        assert_eq!(end_point_hash(&p256).expect("sha-256").len(), 32);
        let p384 = cert(&rcgen::PKCS_ECDSA_P384_SHA384);
        assert_eq!(end_point_hash_of(signature_algorithm(&p384).expect("oid")), Some(EndPointHash::Sha384));
        assert_eq!(end_point_hash(&p384).expect("sha-384").len(), 48);
        let ed = cert(&rcgen::PKCS_ED25519);
        assert!(signature_algorithm(&ed).is_some(), "Ed25519 has an OID");
        assert_eq!(end_point_hash(&ed), None, "no RFC 5929 hash for Ed25519: plain SCRAM");
        // Truncated or garbage input is no binding, never a panic.
        for n in [0, 1, 2, 10, p256.len() / 2] {
            assert_eq!(end_point_hash(&p256[..n]), None, "{n} bytes");
        }
        assert_eq!(end_point_hash(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]), None);
    }

    #[test]
    fn tls_params_come_out_of_urls_and_key_values() {
        let (rest, p) = split_tls_params(
            "postgresql://alice@localhost:5433/meridian?sslmode=verify-full&sslrootcert=%2Ftmp%2Fca.crt",
        )
        .expect("url");
        assert_eq!(rest, "postgresql://alice@localhost:5433/meridian");
        assert_eq!(p, TlsParams { sslmode: Some(SslMode::VerifyFull), sslrootcert: Some("/tmp/ca.crt".into()) });
        let (rest, p) = split_tls_params("postgres://h/db?application_name=x&sslmode=require").expect("url");
        assert_eq!((rest.as_str(), p.sslmode), ("postgres://h/db?application_name=x", Some(SslMode::Require)));
        let (rest, p) = split_tls_params("postgres://h/db").expect("no query");
        assert_eq!((rest.as_str(), p), ("postgres://h/db", TlsParams::default()));

        let (rest, p) =
            split_tls_params("host=localhost  port = 5433 sslrootcert='/a b/ca.crt' sslmode=verify-ca user=it\\'s")
                .expect("key=value");
        assert_eq!(rest, "host='localhost' port='5433' user='it\\'s'");
        assert_eq!(p, TlsParams { sslmode: Some(SslMode::VerifyCa), sslrootcert: Some("/a b/ca.crt".into()) });
        let config: tokio_postgres::Config = rest.parse().expect("tokio-postgres takes the rest");
        assert_eq!(config.get_user(), Some("it's"));

        assert!(split_tls_params("host=x sslmode=bogus").is_err());
        assert!(split_tls_params("host='x").is_err());
        assert!(split_tls_params("host").is_err());
        assert!(split_tls_params("postgres://h/db?sslmode=%zz").is_err());
        assert!(split_tls_params("sslrootcert=system").is_err());
    }

    #[test]
    fn sslmodes_parse_and_verification_needs_a_ca() {
        assert_eq!(SslMode::parse("allow").expect("allow"), SslMode::Prefer);
        assert_eq!(SslMode::parse("verify-full").expect("verify-full"), SslMode::VerifyFull);
        assert!(SslMode::parse("verify_full").is_err());
        let e = MakeRustlsConnect::new(SslMode::VerifyFull, None).err().expect("no CA");
        assert!(e.to_string().contains("--certs-dir"), "{e}");
        assert!(MakeRustlsConnect::new(SslMode::Require, None).is_ok());
        let e = MakeRustlsConnect::new(SslMode::VerifyFull, Some(b"not pem")).err().expect("bad CA");
        assert!(format!("{e:#}").contains("no certificate"), "{e:#}");
    }
}
