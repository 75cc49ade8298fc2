//! `meridian cert`: a local certificate authority for one cluster, and the certificates its
//! nodes and clients present (issue 9).
//!
//! ```text
//!   D/ca.crt, ca.key                 create-ca: the cluster CA (self-signed, ECDSA P-256)
//!   D/node.<name>.crt, .key          node:      CN `node:<name>`, SANs from --host; serves and dials
//!   D/client.<name>.crt, .key        client:    CN `client:<name>`; for `meridian … --certs-dir`
//! ```
//!
//! Nodes trust exactly the certificates `ca.crt` signed: a node with a certificate from another
//! CA cannot join, and the node-to-node service accepts only `node:` certificates. Private keys
//! are written with mode 0600, and no file is overwritten without `--overwrite`. The CA key
//! signs every certificate of the cluster: keep it off the nodes once they have theirs.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use meridian_proto::auth::Secret;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};

/// Years a CA certificate is valid.
const CA_VALID_YEARS: i32 = 10;
/// Years a node or client certificate is valid.
const LEAF_VALID_YEARS: i32 = 2;

/// `meridian cert …`.
#[derive(clap::Subcommand)]
pub enum CertCommand {
    /// Create the cluster's certificate authority: `ca.crt` and `ca.key` in `--dir`.
    CreateCa {
        #[command(flatten)]
        common: Common,
    },
    /// Create a node certificate `node.<name>.crt`/`.key`, signed by the CA in `--dir`.
    Node {
        #[command(flatten)]
        common: Common,
        /// The node's name (the certificate's CN is `node:<name>`).
        #[arg(long)]
        name: String,
        /// A host name or IP address clients and peers use to reach the node (repeatable;
        /// every address in `--advertise`/`--join` must be one of them).
        #[arg(long = "host", required = true)]
        hosts: Vec<String>,
    },
    /// Create a client certificate `client.<name>.crt`/`.key`, signed by the CA in `--dir`.
    Client {
        #[command(flatten)]
        common: Common,
        /// The client's name (the certificate's CN is `client:<name>`).
        #[arg(long)]
        name: String,
    },
}

/// Options every `cert` command takes.
#[derive(clap::Args)]
pub struct Common {
    /// The certificates directory (created if missing).
    #[arg(long, env = "MERIDIAN_CERTS_DIR")]
    dir: PathBuf,
    /// Replace files that exist.
    #[arg(long)]
    overwrite: bool,
}

/// Runs a `cert` command.
pub fn run(cmd: CertCommand) -> anyhow::Result<()> {
    match cmd {
        CertCommand::CreateCa { common } => create_ca(&common.dir, common.overwrite),
        CertCommand::Node { common, name, hosts } => issue(&common.dir, common.overwrite, Kind::Node, &name, &hosts),
        CertCommand::Client { common, name } => issue(&common.dir, common.overwrite, Kind::Client, &name, &[]),
    }
}

/// The civil date (year, month, day) of a day count since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`).
fn civil_from_days(days: i64) -> (i32, u8, u8) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u8;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
    let y = (yoe + era * 400 + i64::from(m <= 2)) as i32;
    (y, m, d)
}

/// Valid from yesterday (some slack for clocks behind ours) for `years` years.
fn validity(params: &mut CertificateParams, years: i32) {
    let now_days = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() / 86_400).unwrap_or(0) as i64;
    let (y, m, d) = civil_from_days(now_days - 1);
    // The 28th at most: every month has one, whatever year the certificate ends in.
    params.not_before = rcgen::date_time_ymd(y, m, d);
    params.not_after = rcgen::date_time_ymd(y + years, m, d.min(28));
}

/// Writes `contents` to `path`, mode 0600 for private keys; refuses to replace a file unless
/// `overwrite`.
fn write_file(path: &Path, contents: &str, private: bool, overwrite: bool) -> anyhow::Result<()> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true);
    if overwrite {
        opts.create(true).truncate(true);
    } else {
        opts.create_new(true);
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(if private { 0o600 } else { 0o644 });
    }
    let mut f = opts.open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            anyhow::anyhow!("{} exists; pass --overwrite to replace it", path.display())
        } else {
            anyhow::anyhow!("writing {}: {e}", path.display())
        }
    })?;
    // An overwritten key file keeps its old mode: set it again.
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::PermissionsExt as _;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    f.write_all(contents.as_bytes()).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Refuses before writing anything if any of `paths` exists (and `overwrite` is off), so a
/// refused command leaves no half-written pair.
fn check_free(paths: &[&Path], overwrite: bool) -> anyhow::Result<()> {
    for p in paths {
        anyhow::ensure!(overwrite || !p.exists(), "{} exists; pass --overwrite to replace it", p.display());
    }
    Ok(())
}

fn create_ca(dir: &Path, overwrite: bool) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let (crt, key) = (dir.join("ca.crt"), dir.join("ca.key"));
    check_free(&[&crt, &key], overwrite)?;
    let key_pair = KeyPair::generate().context("generating the CA key")?;
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    // A subject of its own: a certificate of another cluster's CA then names an issuer this
    // cluster does not know (rustls: `UnknownIssuer`) instead of failing the signature check of a
    // same-named CA (`BadSignature`), which reads like tampering.
    params.distinguished_name.push(DnType::CommonName, format!("Meridian cluster CA {}", ca_id()));
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    validity(&mut params, CA_VALID_YEARS);
    let cert = params.self_signed(&key_pair).context("signing the CA certificate")?;
    write_file(&key, &key_pair.serialize_pem(), true, overwrite)?;
    write_file(&crt, &cert.pem(), false, overwrite)?;
    println!("created {} and {} (keep ca.key secret: it signs every certificate)", crt.display(), key.display());
    Ok(())
}

/// A random id for a new CA's subject name: 64 bits from the OS RNG, in hex.
fn ca_id() -> String {
    format!("{:016x}", rand::random::<u64>())
}

#[derive(Clone, Copy)]
enum Kind {
    Node,
    Client,
}

fn issue(dir: &Path, overwrite: bool, kind: Kind, name: &str, hosts: &[String]) -> anyhow::Result<()> {
    anyhow::ensure!(
        !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
        "--name must be letters, digits, '-' or '_' (it becomes a file name)"
    );
    let ca_crt = std::fs::read_to_string(dir.join("ca.crt")).with_context(|| {
        format!("reading {}/ca.crt; create the CA first with `meridian cert create-ca`", dir.display())
    })?;
    let ca_key = std::fs::read_to_string(dir.join("ca.key"))
        .with_context(|| format!("reading {}/ca.key (needed to sign)", dir.display()))?;
    let ca_key = KeyPair::from_pem(&ca_key).context("parsing ca.key")?;
    let issuer = Issuer::from_ca_cert_pem(&ca_crt, ca_key).context("parsing ca.crt")?;
    let (prefix, cn, eku) = match kind {
        Kind::Node => (
            "node",
            format!("{}{name}", meridian_server::shell::tls::NODE_CN_PREFIX),
            // A node serves (server) and dials its peers (client).
            vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth],
        ),
        Kind::Client => (
            "client",
            format!("{}{name}", meridian_server::shell::tls::CLIENT_CN_PREFIX),
            vec![ExtendedKeyUsagePurpose::ClientAuth],
        ),
    };
    let (crt, key) = (dir.join(format!("{prefix}.{name}.crt")), dir.join(format!("{prefix}.{name}.key")));
    check_free(&[&crt, &key], overwrite)?;
    let mut params =
        CertificateParams::new(hosts.to_vec()).context("a --host is neither an IP address nor a DNS name")?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, cn);
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = eku;
    params.use_authority_key_identifier_extension = true;
    validity(&mut params, LEAF_VALID_YEARS);
    let key_pair = KeyPair::generate().context("generating the key")?;
    let cert = params.signed_by(&key_pair, &issuer).context("signing the certificate")?;
    write_file(&key, &key_pair.serialize_pem(), true, overwrite)?;
    write_file(&crt, &cert.pem(), false, overwrite)?;
    println!("created {} and {}", crt.display(), key.display());
    Ok(())
}

/// The environment variable that may hold the client token (never a flag: a flag's value shows
/// in `ps` and in shell history).
pub const TOKEN_ENV: &str = "MERIDIAN_TOKEN";

/// How client commands (`kv`, `admin`, `status`, `workload`, `backup`, `restore`) reach a
/// secured cluster. (`sql` takes `--certs-dir`/`--ca-cert` with the same meaning, and a password.)
///
/// Every option is global: it may come before or after a subcommand
/// (`meridian kv --addr A put k v` and `meridian kv put --addr A k v` are the same).
#[derive(clap::Args, Clone, Default)]
pub struct ClientAuthArgs {
    /// Connect with TLS, trusting the CA certificate `ca.crt` in this directory (and
    /// presenting `client.<name>.crt` with `--cert-name`).
    #[arg(long, env = "MERIDIAN_CERTS_DIR", global = true)]
    pub certs_dir: Option<PathBuf>,
    /// Connect with TLS, trusting this CA certificate file (instead of `--certs-dir`).
    #[arg(long, env = "MERIDIAN_CA_CERT", conflicts_with = "certs_dir", global = true)]
    pub ca_cert: Option<PathBuf>,
    /// Present the client certificate `client.<name>.crt` of `--certs-dir`.
    #[arg(long = "cert-name", env = "MERIDIAN_CLIENT_CERT_NAME", requires = "certs_dir", global = true)]
    pub cert_name: Option<String>,
    /// Read the token the nodes want from the first line of this file (or set the
    /// MERIDIAN_TOKEN environment variable; the token is never a flag value, which `ps` and shell
    /// history would show).
    #[arg(long, env = "MERIDIAN_TOKEN_FILE", global = true)]
    pub token_file: Option<PathBuf>,
}

/// The CA certificate file a client trusts: `--ca-cert`, else `ca.crt` in `--certs-dir`.
pub fn ca_file(ca_cert: Option<&Path>, certs_dir: Option<&Path>) -> Option<PathBuf> {
    match (ca_cert, certs_dir) {
        (Some(f), _) => Some(f.to_path_buf()),
        (None, Some(d)) => Some(d.join("ca.crt")),
        (None, None) => None,
    }
}

/// A client's TLS files, read: the CA (PEM) and its certificate and key, if it presents one.
type TlsFiles = (Vec<u8>, Option<(Vec<u8>, Secret<Vec<u8>>)>);

impl ClientAuthArgs {
    /// The client's connect options.
    pub fn options(&self) -> anyhow::Result<meridian_client::ClientOptions> {
        let tls = self.tls_files()?.map(|(ca, identity)| {
            let tls = meridian_client::ClientTls::new(ca);
            match identity {
                Some((crt, key)) => tls.with_identity(crt, key),
                None => tls,
            }
        });
        Ok(meridian_client::ClientOptions { tls, token: self.token()? })
    }

    /// An admin client for the one node at `addr`, with these credentials: for what must work
    /// without the meta range (`meridian status` when the cluster view is unavailable).
    pub async fn admin_at(
        &self,
        addr: &str,
    ) -> anyhow::Result<
        meridian_proto::v1::admin_client::AdminClient<
            tonic::service::interceptor::InterceptedService<tonic::transport::Channel, meridian_proto::auth::Bearer>,
        >,
    > {
        use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
        let tls = self.tls_files()?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        let mut endpoint = Endpoint::from_shared(format!("{scheme}://{addr}"))
            .with_context(|| format!("bad address {addr}"))?
            .connect_timeout(std::time::Duration::from_secs(2));
        if let Some((ca, identity)) = tls {
            let mut config = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca));
            if let Some((crt, key)) = identity {
                config = config.identity(Identity::from_pem(crt, key.expose()));
            }
            endpoint = endpoint.tls_config(config).with_context(|| format!("TLS settings for {addr}"))?;
        }
        let channel = endpoint.connect().await.with_context(|| format!("connecting to {addr}"))?;
        let bearer = meridian_proto::auth::Bearer::new(self.token()?.as_ref()).map_err(anyhow::Error::msg)?;
        Ok(meridian_proto::v1::admin_client::AdminClient::with_interceptor(channel, bearer))
    }

    fn tls_files(&self) -> anyhow::Result<Option<TlsFiles>> {
        let Some(ca) = ca_file(self.ca_cert.as_deref(), self.certs_dir.as_deref()) else { return Ok(None) };
        let pem = std::fs::read(&ca).with_context(|| format!("reading the CA certificate {}", ca.display()))?;
        let identity = match (&self.certs_dir, &self.cert_name) {
            (Some(dir), Some(name)) => {
                let (crt, key) = (dir.join(format!("client.{name}.crt")), dir.join(format!("client.{name}.key")));
                Some((
                    std::fs::read(&crt).with_context(|| format!("reading {}", crt.display()))?,
                    Secret::new(std::fs::read(&key).with_context(|| format!("reading {}", key.display()))?),
                ))
            }
            _ => None,
        };
        Ok(Some((pem, identity)))
    }

    fn token(&self) -> anyhow::Result<Option<Secret<String>>> {
        let from_env = std::env::var_os(TOKEN_ENV).map(|t| Secret::new(t.to_string_lossy().trim().to_string()));
        Ok(match (&self.token_file, from_env) {
            (Some(_), Some(_)) => anyhow::bail!(
                "both --token-file (or MERIDIAN_TOKEN_FILE) and {TOKEN_ENV} are set: give the token one way"
            ),
            (Some(f), None) => Some(
                meridian_proto::auth::read_secret_file(f).with_context(|| format!("--token-file {}", f.display()))?,
            ),
            (None, Some(t)) => Some(t),
            (None, None) => None,
        })
    }
}

/// How a node's own PostgreSQL gateway reaches the node: TLS with the node's certificate as
/// its client credential, when the node has certificates.
pub fn node_client_options(
    certs_dir: Option<&Path>,
    cert_name: Option<&str>,
) -> anyhow::Result<meridian_client::ClientOptions> {
    let Some(dir) = certs_dir else { return Ok(Default::default()) };
    let (crt, key) = node_files(dir, cert_name)?;
    let ca = std::fs::read(dir.join("ca.crt")).with_context(|| format!("reading {}/ca.crt", dir.display()))?;
    let tls = meridian_client::ClientTls::new(ca).with_identity(
        std::fs::read(&crt).with_context(|| format!("reading {}", crt.display()))?,
        Secret::new(std::fs::read(&key).with_context(|| format!("reading {}", key.display()))?),
    );
    Ok(meridian_client::ClientOptions { tls: Some(tls), token: None })
}

/// The node certificate and key files `NodeTls::load` picks in `dir`.
fn node_files(dir: &Path, name: Option<&str>) -> anyhow::Result<(PathBuf, PathBuf)> {
    let base = match name {
        Some(n) => format!("node.{n}"),
        None if dir.join("node.crt").exists() => "node".into(),
        None => {
            let mut found: Vec<String> = std::fs::read_dir(dir)
                .with_context(|| format!("reading {}", dir.display()))?
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|f| f.starts_with("node.") && f.ends_with(".crt"))
                .map(|f| f.trim_end_matches(".crt").to_string())
                .collect();
            anyhow::ensure!(found.len() == 1, "{} must hold one node certificate, or pass --cert-name", dir.display());
            found.remove(0)
        }
    };
    Ok((dir.join(format!("{base}.crt")), dir.join(format!("{base}.key"))))
}

/// The PostgreSQL port's TLS (the node's certificate) and SCRAM passwords.
pub fn pg_security(
    certs_dir: Option<&Path>,
    cert_name: Option<&str>,
    password_file: Option<&Path>,
) -> anyhow::Result<meridian_pg::PgSecurity> {
    let passwords = password_file.map(meridian_pg::PgPasswords::load).transpose()?;
    if passwords.is_none() {
        tracing::warn!("no --pg-password-file: the PostgreSQL port accepts any user without a password");
    }
    let tls = match certs_dir {
        None => None,
        Some(dir) => {
            let (crt, key) = node_files(dir, cert_name)?;
            Some((
                std::fs::read(&crt).with_context(|| format!("reading {}", crt.display()))?,
                Secret::new(std::fs::read(&key).with_context(|| format!("reading {}", key.display()))?),
            ))
        }
    };
    let tls_ref = tls.as_ref().map(|(c, k)| (c.as_slice(), k.expose().as_slice()));
    Ok(meridian_pg::PgSecurity::new(tls_ref, passwords)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
        assert_eq!(civil_from_days(20_417), (2025, 11, 25));
    }

    #[test]
    fn every_ca_has_a_subject_of_its_own() {
        // The subject's CN, as it stands in the certificate's DER (an ASCII string there).
        let cn = |dir: &Path| {
            use tokio_rustls::rustls::pki_types::pem::PemObject as _;
            let pem = std::fs::read(dir.join("ca.crt")).expect("ca.crt");
            let der = tokio_rustls::rustls::pki_types::CertificateDer::from_pem_slice(&pem).expect("a PEM certificate");
            let prefix = b"Meridian cluster CA ";
            let at = der.windows(prefix.len()).position(|w| w == prefix).expect("the CA's CN names Meridian");
            String::from_utf8_lossy(&der[at..at + prefix.len() + 16]).into_owned()
        };
        let (a, b) = (tempfile::tempdir().expect("tmp"), tempfile::tempdir().expect("tmp"));
        create_ca(a.path(), false).expect("ca a");
        create_ca(b.path(), false).expect("ca b");
        let (a, b) = (cn(a.path()), cn(b.path()));
        assert_ne!(a, b, "two clusters' CAs must not share a subject (a foreign chain would fail as BadSignature)");
    }

    #[test]
    fn keys_are_private_and_nothing_is_overwritten() {
        let dir = tempfile::tempdir().expect("tmp");
        create_ca(dir.path(), false).expect("ca");
        issue(dir.path(), false, Kind::Node, "n1", &["127.0.0.1".into(), "localhost".into()]).expect("node");
        issue(dir.path(), false, Kind::Client, "alice", &[]).expect("client");
        #[cfg(unix)]
        for f in ["ca.key", "node.n1.key", "client.alice.key"] {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(dir.path().join(f)).expect("exists").permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{f}");
        }
        let before = std::fs::read(dir.path().join("ca.key")).expect("read");
        assert!(create_ca(dir.path(), false).is_err(), "the CA must not be replaced silently");
        assert!(issue(dir.path(), false, Kind::Node, "n1", &["127.0.0.1".into()]).is_err());
        assert_eq!(std::fs::read(dir.path().join("ca.key")).expect("read"), before);
        issue(dir.path(), true, Kind::Node, "n1", &["127.0.0.1".into()]).expect("--overwrite replaces");
        assert!(issue(dir.path(), false, Kind::Client, "../x", &[]).is_err(), "names become file names");
    }
}
