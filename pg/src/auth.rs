//! TLS and passwords on the PostgreSQL port (issue 9).
//!
//! - **TLS**: with a certificate configured, a client's `SSLRequest` is answered `S` and the
//!   connection continues inside TLS (tokio-rustls); a client that does not ask for TLS is
//!   refused at its startup packet (FATAL `28000`), so `sslmode=disable` cannot bypass it.
//! - **Passwords**: SCRAM-SHA-256 through pgwire's SASL startup handler (with
//!   `SCRAM-SHA-256-PLUS` channel binding when TLS is on). Only SCRAM verifiers are kept in
//!   memory (salt, `StoredKey`, `ServerKey`): never the password, which is dropped after
//!   hashing. A wrong or missing password, or an unknown user, is refused with PostgreSQL's
//!   `28P01 password authentication failed for user "NAME"`, naming the user the client sent.
//!   An unknown user goes through the same exchange as a known one, with a made-up verifier
//!   whose salt is the same on every attempt (PostgreSQL's mock authentication): no answer, nor
//!   the step it comes at, tells a caller which users exist.
//!
//! Without either, the port accepts any user without a password (trust), as before.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use pgwire::api::auth::sasl::SASLAuthStartupHandler;
use pgwire::api::auth::sasl::scram::{SCRAM_ITERATIONS, ScramAuth, ScramSecret, gen_salted_password};
use pgwire::api::auth::{AuthSource, DefaultServerParameterProvider, LoginInfo, Password};
use pgwire::error::{PgWireError, PgWireResult};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// The user a password file with a bare password (no `user:`) is for.
pub const DEFAULT_USER: &str = "meridian";
/// Most users a password file may hold.
pub const USERS_MAX: usize = 1_000;
/// Bytes of random salt per user.
const SALT_BYTES: usize = 16;
/// Bytes of the key unknown users' made-up verifiers are derived with.
const MOCK_KEY_BYTES: usize = 32;

/// Errors setting up the port's security.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// A file could not be read.
    #[error("cannot read {0}: {1}")]
    Read(String, std::io::Error),
    /// The password file is malformed.
    #[error("password file {0}: {1}")]
    Passwords(String, String),
    /// The certificate or key is unusable.
    #[error("TLS: {0}")]
    Tls(String),
}

/// One user's SCRAM verifier.
struct Verifier {
    salt: Vec<u8>,
    stored_key: Vec<u8>,
    server_key: Vec<u8>,
}

/// The users allowed on the port, as SCRAM verifiers (no plaintext kept).
pub struct PgPasswords {
    users: HashMap<String, Verifier>,
    /// Random key of the made-up verifiers of unknown users ([`PgPasswords::mock_verifier`]).
    mock_key: [u8; MOCK_KEY_BYTES],
}

impl std::fmt::Debug for PgPasswords {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut users: Vec<&String> = self.users.keys().collect();
        users.sort();
        f.debug_struct("PgPasswords").field("users", &users).finish_non_exhaustive()
    }
}

impl PgPasswords {
    /// Parses `user:password` lines (blank lines and `#` comments skipped), or a file whose
    /// only line is a bare password for [`DEFAULT_USER`]. Errors name the line, never its text.
    pub fn parse(text: &str, origin: &str) -> Result<PgPasswords, AuthError> {
        let lines: Vec<(usize, &str)> = text
            .lines()
            .enumerate()
            .map(|(i, l)| (i + 1, l.trim_end_matches('\r')))
            .filter(|(_, l)| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
            .collect();
        let bad = |why: String| AuthError::Passwords(origin.to_string(), why);
        if lines.len() > USERS_MAX {
            return Err(bad(format!("{} users; at most {USERS_MAX}", lines.len())));
        }
        let mut users = HashMap::new();
        for &(n, line) in &lines {
            let (user, password) = match line.split_once(':') {
                Some((u, p)) => (u.trim(), p),
                None if lines.len() == 1 => (DEFAULT_USER, line),
                None => return Err(bad(format!("line {n} is not `user:password`"))),
            };
            if user.is_empty() || password.is_empty() {
                return Err(bad(format!("line {n} has an empty user or password")));
            }
            if users.insert(user.to_string(), Self::verifier(password)).is_some() {
                return Err(bad(format!("line {n} repeats user {user:?}")));
            }
        }
        if users.is_empty() {
            return Err(bad("no users: write `user:password` lines".into()));
        }
        Ok(PgPasswords { users, mock_key: rand::random() })
    }

    /// Reads and parses a password file.
    pub fn load(path: &Path) -> Result<PgPasswords, AuthError> {
        let text = std::fs::read_to_string(path).map_err(|e| AuthError::Read(path.display().to_string(), e))?;
        Self::parse(&text, &path.display().to_string())
    }

    fn verifier(password: &str) -> Verifier {
        let salt: [u8; SALT_BYTES] = rand::random();
        let salted = gen_salted_password(password, &salt, SCRAM_ITERATIONS);
        let ScramSecret::Verifier { salt, stored_key, server_key, .. } =
            ScramSecret::verifier_from_salted_password(salt.to_vec(), salted, SCRAM_ITERATIONS)
        else {
            unreachable!("verifier_from_salted_password returns a verifier")
        };
        Verifier { salt, stored_key, server_key }
    }

    /// A verifier for a user who does not exist, so that the SCRAM exchange runs to its end and
    /// fails there as a wrong password does. Derived from the user name with a key of this
    /// process (HMAC-SHA-256, through PBKDF2 of one iteration): the same salt on every attempt, as
    /// a real user's, and a stored key no proof matches.
    fn mock_verifier(&self, user: &str) -> Verifier {
        let key: String = self.mock_key.iter().map(|b| format!("{b:02x}")).collect();
        let derive = |purpose: &str| gen_salted_password(&key, format!("{purpose}:{user}").as_bytes(), 1);
        let mut salt = derive("salt");
        salt.truncate(SALT_BYTES);
        Verifier { salt, stored_key: derive("stored"), server_key: derive("server") }
    }

    /// The users, sorted.
    pub fn users(&self) -> Vec<String> {
        let mut u: Vec<String> = self.users.keys().cloned().collect();
        u.sort();
        u
    }
}

#[async_trait]
impl AuthSource for PgPasswords {
    async fn get_password(&self, login: &LoginInfo) -> PgWireResult<Password> {
        // Only SCRAM is offered; there is no password to hand out.
        Err(PgWireError::InvalidPassword(login.user().unwrap_or_default().to_owned()))
    }

    async fn get_scram_secret(&self, login: &LoginInfo) -> PgWireResult<(ScramSecret, Option<()>)> {
        let user = login.user().unwrap_or_default();
        let mock;
        let v = match self.users.get(user) {
            Some(v) => v,
            None => {
                mock = self.mock_verifier(user);
                &mock
            }
        };
        Ok((
            ScramSecret::Verifier {
                salt: v.salt.clone(),
                iterations: SCRAM_ITERATIONS,
                stored_key: v.stored_key.clone(),
                server_key: v.server_key.clone(),
            },
            None,
        ))
    }
}

/// The startup handler that runs SCRAM.
pub(crate) type Sasl = SASLAuthStartupHandler<DefaultServerParameterProvider>;

/// TLS and passwords for [`crate::serve`]; the default is neither (trust, plaintext).
#[derive(Clone, Default)]
pub struct PgSecurity {
    pub(crate) tls: Option<tokio_rustls::TlsAcceptor>,
    pub(crate) sasl: Option<Arc<Sasl>>,
}

impl std::fmt::Debug for PgSecurity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgSecurity").field("tls", &self.tls.is_some()).field("scram", &self.sasl.is_some()).finish()
    }
}

impl PgSecurity {
    /// Whether the port requires TLS.
    pub fn has_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// TLS with this certificate chain and key (PEM) when given, and SCRAM with `passwords`
    /// when given.
    pub fn new(tls: Option<(&[u8], &[u8])>, passwords: Option<PgPasswords>) -> Result<PgSecurity, AuthError> {
        let acceptor = match tls {
            None => None,
            Some((cert_pem, key_pem)) => {
                let certs = CertificateDer::pem_slice_iter(cert_pem)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| AuthError::Tls(format!("certificate: {e}")))?;
                let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| AuthError::Tls(format!("key: {e}")))?;
                let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
                let config = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()
                    .map_err(|e| AuthError::Tls(e.to_string()))?
                    .with_no_client_auth()
                    .with_single_cert(certs, key)
                    .map_err(|e| AuthError::Tls(e.to_string()))?;
                Some(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
            }
        };
        let sasl = match passwords {
            None => None,
            Some(p) => {
                let mut scram = ScramAuth::new(Arc::new(p));
                if let Some((cert_pem, _)) = tls {
                    // SCRAM-SHA-256-PLUS: the proof is bound to this TLS server certificate.
                    scram.configure_certificate(cert_pem).map_err(|e| AuthError::Tls(e.to_string()))?;
                }
                let mut params = DefaultServerParameterProvider::default();
                params.server_version = crate::handler::server_version();
                Some(Arc::new(SASLAuthStartupHandler::new(Arc::new(params)).with_scram(scram)))
            }
        };
        Ok(PgSecurity { tls: acceptor, sasl })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_files_parse_and_keep_no_plaintext() {
        let p = PgPasswords::parse("# users\nalice:pa:ss\n\nbob:x\n", "f").expect("parses");
        assert_eq!(p.users(), vec!["alice", "bob"]);
        assert!(!format!("{p:?}").contains("pa:ss"));
        let one = PgPasswords::parse("s3cret\n", "f").expect("bare password");
        assert_eq!(one.users(), vec![DEFAULT_USER]);
        for bad in ["", "a:\n", "a:x\na:y\n", "a:x\nnocolon\n"] {
            let e = PgPasswords::parse(bad, "f").expect_err(bad);
            assert!(!e.to_string().contains('x') || !e.to_string().contains("y\n"), "{e}");
        }
        let e = PgPasswords::parse("a:hunter2\nnocolon-hunter3\n", "f").expect_err("line 2");
        assert!(!e.to_string().contains("hunter"), "errors must not echo secrets: {e}");
    }

    #[test]
    fn unknown_users_get_a_stable_made_up_verifier_shaped_like_a_real_one() {
        let p = PgPasswords::parse("alice:x\n", "f").expect("parses");
        let (a, b) = (p.mock_verifier("mallory"), p.mock_verifier("mallory"));
        assert_eq!(a.salt, b.salt, "the same salt on every attempt, as a real user's");
        assert_ne!(a.salt, p.mock_verifier("trudy").salt, "each unknown user has a salt of their own");
        let real = &p.users["alice"];
        assert_eq!(a.salt.len(), real.salt.len());
        assert_eq!(a.stored_key.len(), real.stored_key.len(), "a proof of the right length is checked, not refused");
        let other = PgPasswords::parse("alice:x\n", "f").expect("parses");
        assert_ne!(a.salt, other.mock_verifier("mallory").salt, "derived with a key of this process");
    }
}
