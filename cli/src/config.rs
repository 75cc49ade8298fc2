//! Configuration of `meridian start`: flags, environment variables and a TOML file.
//!
//! ```text
//!   precedence (highest first):   --flag   >   MERIDIAN_<NAME>   >   --config FILE   >   default
//!   e.g. epsilon:                 --epsilon-ms 4   MERIDIAN_EPSILON_MS=4   epsilon-ms = 4   4
//! ```
//!
//! The file's keys are the long flag names without the dashes (kebab-case, exactly as typed on
//! the command line), at the top level of the file; a flag that can be repeated (`--join`)
//! takes an array. Nothing here lists the keys: they are the arguments clap knows for `start`,
//! so a flag added to [`crate::cluster::StartArgs`] is a file key and (with its `env = …`) an
//! environment variable at once.
//!
//! How it works: argv is parsed once with every argument optional, to learn which values came
//! from the command line or the environment (clap's `value_source`). Each file key not set there
//! becomes `--key=value` appended to argv, and argv is parsed again, strictly. So a file value is
//! checked by the same parser as the flag, and required flags may come from the file.
//!
//! Validation at start ([`preflight`]) happens before the node opens its data directory: a join
//! address that does not answer (checked before the directory is even created), a data
//! directory that cannot be written and a listen address already in use are refused with a
//! message saying what to do, not a stack of I/O errors.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches, Command};

use crate::cluster::StartArgs;

/// The subcommand this module configures.
const START: &str = "start";
/// Arguments of `start` that are about reading the configuration, not settings: no file keys.
const NOT_KEYS: [&str; 3] = ["config", "print_config", "help"];
/// Most time spent trying to reach the `--join` addresses, all of them together.
pub const JOIN_CHECK_MAX: Duration = Duration::from_secs(5);
/// Largest configuration file read (a setting file, not a data file).
const FILE_BYTES_MAX: u64 = 1 << 20;

/// Options of `meridian start` about its configuration and logging (flattened into `start`).
#[derive(clap::Args, Clone, Debug)]
pub struct ConfigArgs {
    /// A TOML file of settings: keys are the flag names without `--` (`data-dir = "…"`,
    /// `epsilon-ms = 4`, `join = ["10.0.0.1:7000"]`). Flags and MERIDIAN_* variables override it.
    #[arg(long, env = "MERIDIAN_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Print the effective configuration (as TOML, each value with its source: flag, env, file
    /// or default) and exit without starting.
    #[arg(long)]
    pub print_config: bool,
    /// Log filter in `RUST_LOG` syntax (`info`, `debug`, `meridian_server=debug,info`).
    /// Without it, `RUST_LOG` applies, else `info`.
    #[arg(long, env = "MERIDIAN_LOG", value_name = "FILTER")]
    pub log: Option<String>,
    /// Log line format: `text` (human-readable, span fields such as `txn{id=…}` inline) or
    /// `json` (one object per line).
    #[arg(long, env = "MERIDIAN_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
}

/// Where a setting's value came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// A command-line flag.
    Flag,
    /// A `MERIDIAN_*` environment variable.
    Env,
    /// The `--config` file.
    File,
    /// The built-in default.
    Default,
    /// Not set at all (an optional setting).
    Unset,
}

impl Source {
    fn name(self) -> &'static str {
        match self {
            Source::Flag => "flag",
            Source::Env => "env",
            Source::File => "file",
            Source::Default => "default",
            Source::Unset => "unset",
        }
    }
}

/// The effective configuration of `start`: every setting, its value and its source.
pub struct Effective {
    /// `(key, TOML value or None, source, environment variable)`, in the order of `--help`.
    settings: Vec<(String, Option<String>, Source, Option<String>)>,
    file: Option<PathBuf>,
}

impl Effective {
    /// The configuration as a TOML file (unset settings commented out), each line annotated
    /// with where its value came from.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Some(f) = &self.file {
            let _ = writeln!(out, "# effective configuration of `meridian start` (file: {})", f.display());
        } else {
            let _ = writeln!(out, "# effective configuration of `meridian start` (no --config file)");
        }
        for (key, value, source, env) in &self.settings {
            let env = env.as_deref().map(|e| format!(", {e}")).unwrap_or_default();
            let _ = match value {
                Some(v) => writeln!(out, "{key} = {v}  # {}{env}", source.name()),
                None => writeln!(out, "# {key} =  # {}{env}", source.name()),
            };
        }
        out
    }
}

/// The kind of TOML value a setting takes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Integer,
    Float,
    Bool,
    String,
}

impl Kind {
    fn of(arg: &Arg) -> Kind {
        use std::any::TypeId;
        if matches!(arg.get_action(), ArgAction::SetTrue | ArgAction::SetFalse) {
            return Kind::Bool;
        }
        let t = arg.get_value_parser().type_id();
        let integers = [
            TypeId::of::<u8>(),
            TypeId::of::<u16>(),
            TypeId::of::<u32>(),
            TypeId::of::<u64>(),
            TypeId::of::<usize>(),
            TypeId::of::<i8>(),
            TypeId::of::<i16>(),
            TypeId::of::<i32>(),
            TypeId::of::<i64>(),
            TypeId::of::<isize>(),
        ];
        if integers.iter().any(|i| t == *i) {
            Kind::Integer
        } else if t == TypeId::of::<f64>() || t == TypeId::of::<f32>() {
            Kind::Float
        } else if t == TypeId::of::<bool>() {
            Kind::Bool
        } else {
            Kind::String
        }
    }

    fn article(self) -> &'static str {
        match self {
            Kind::Integer => "an integer",
            Kind::Float => "a float",
            Kind::Bool => "a boolean (true or false)",
            Kind::String => "a string",
        }
    }

    /// `raw` (as clap holds it) as a TOML value.
    fn toml(self, raw: &str) -> String {
        match self {
            Kind::Integer | Kind::Float | Kind::Bool => raw.to_string(),
            Kind::String => toml_string(raw),
        }
    }
}

/// A TOML basic string.
fn toml_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// How a TOML value is named in errors ("found a string").
fn toml_kind(v: &toml_edit::Value) -> &'static str {
    match v {
        toml_edit::Value::String(_) => "a string",
        toml_edit::Value::Integer(_) => "an integer",
        toml_edit::Value::Float(_) => "a float",
        toml_edit::Value::Boolean(_) => "a boolean",
        toml_edit::Value::Datetime(_) => "a date-time",
        toml_edit::Value::Array(_) => "an array",
        toml_edit::Value::InlineTable(_) => "a table",
    }
}

/// The 1-based line of byte `at` in `text`.
fn line_of(text: &str, at: usize) -> usize {
    text.as_bytes()[..at.min(text.len())].iter().filter(|b| **b == b'\n').count() + 1
}

/// A configuration file's top-level table, parsed.
struct File {
    path: PathBuf,
    doc: toml_edit::Document<String>,
}

impl File {
    fn load(path: &Path) -> anyhow::Result<File> {
        let len = std::fs::metadata(path)
            .with_context(|| format!("config {}: cannot read it (check --config / MERIDIAN_CONFIG)", path.display()))?
            .len();
        anyhow::ensure!(
            len <= FILE_BYTES_MAX,
            "config {}: {len} bytes is too large for a configuration file (limit {FILE_BYTES_MAX})",
            path.display()
        );
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("config {}: cannot read it (check --config / MERIDIAN_CONFIG)", path.display()))?;
        let doc = toml_edit::Document::parse(text)
            .map_err(|e| anyhow::anyhow!("config {}: {}", path.display(), e.to_string().trim_end()))?;
        Ok(File { path: path.to_path_buf(), doc })
    }

    /// "config FILE, line N" for an item with a span.
    fn at(&self, span: Option<std::ops::Range<usize>>) -> String {
        match span {
            Some(s) => format!("config {}, line {}", self.path.display(), line_of(self.doc.raw(), s.start)),
            None => format!("config {}", self.path.display()),
        }
    }
}

/// The settings of `start` that a file may set: every argument with a long name, except the
/// ones about the configuration itself.
fn keys(start: &Command) -> Vec<&Arg> {
    start.get_arguments().filter(|a| a.get_long().is_some() && !NOT_KEYS.contains(&a.get_id().as_str())).collect()
}

/// The valid key nearest to `key` (for "did you mean"), by edit distance after treating `_`
/// as `-`.
fn nearest<'a>(key: &str, valid: &[&'a str]) -> Option<&'a str> {
    let key = key.replace('_', "-");
    valid.iter().map(|v| (strsim::levenshtein(&key, v), *v)).min().map(|(_, v)| v)
}

/// Turns one file value into command-line arguments, checked by the flag's own parser.
fn file_args(
    file: &File,
    start: &Command,
    arg: &Arg,
    key: &str,
    item: &toml_edit::Item,
) -> anyhow::Result<Vec<String>> {
    let kind = Kind::of(arg);
    let repeatable = matches!(arg.get_action(), ArgAction::Append);
    let where_ = file.at(item.span());
    let Some(value) = item.as_value() else {
        bail!("{where_}: key `{key}`: expected {}, found a table", kind.article());
    };
    let values: Vec<&toml_edit::Value> = match value.as_array() {
        Some(a) if repeatable => a.iter().collect(),
        Some(_) => bail!("{where_}: key `{key}`: expected {}, found an array", kind.article()),
        None => vec![value],
    };
    let mut args = Vec::new();
    for v in values {
        let text = match (kind, v) {
            (Kind::Integer, toml_edit::Value::Integer(i)) => i.value().to_string(),
            (Kind::Float, toml_edit::Value::Float(f)) => f.value().to_string(),
            (Kind::Float, toml_edit::Value::Integer(i)) => i.value().to_string(),
            (Kind::Bool, toml_edit::Value::Boolean(b)) => b.value().to_string(),
            (Kind::String, toml_edit::Value::String(s)) => s.value().clone(),
            (k, v) => bail!(
                "{}: key `{key}`: expected {}{}, found {}",
                file.at(v.span()),
                k.article(),
                if repeatable { " or an array of them" } else { "" },
                toml_kind(v)
            ),
        };
        let flag = format!("--{key}");
        let one: Vec<String> = match arg.get_action() {
            ArgAction::SetTrue if text == "true" => vec![flag],
            ArgAction::SetFalse if text == "false" => vec![flag],
            ArgAction::SetTrue | ArgAction::SetFalse => vec![],
            _ => vec![format!("{flag}={text}")],
        };
        // The flag's own parser checks the value (a socket address, a number in range …).
        let probe = start.clone().mut_args(|a| a.required(false)).no_binary_name(true);
        if let Err(e) = probe.try_get_matches_from(&one) {
            use std::error::Error as _;
            let why = match e.source() {
                Some(s) => s.to_string(),
                None => e.to_string().lines().next().unwrap_or_default().trim_start_matches("error: ").to_string(),
            };
            bail!("{}: key `{key}`: invalid value {}: {why}", file.at(v.span()), toml_string(&text));
        }
        args.extend(one);
    }
    Ok(args)
}

/// Parses argv. For `start`, merges in the `--config` file (flag > env > file > default) and
/// returns the effective configuration beside the matches; other commands parse as usual.
/// Exits (as clap does) on `--help`, `--version` and command-line errors.
pub fn parse(cmd: Command, argv: Vec<OsString>) -> anyhow::Result<(ArgMatches, Option<Effective>)> {
    let relaxed = cmd.clone().mut_subcommand(START, |s| s.mut_args(|a| a.required(false)));
    let first = relaxed.try_get_matches_from(&argv).unwrap_or_else(|e| e.exit());
    let Some((START, sub)) = first.subcommand() else {
        return Ok((cmd.try_get_matches_from(&argv).unwrap_or_else(|e| e.exit()), None));
    };
    let start = cmd.find_subcommand(START).expect("the CLI has a start subcommand").clone();
    let settings = keys(&start);
    let mut from_file = BTreeSet::new();
    let mut extra: Vec<OsString> = Vec::new();
    let path = sub.get_one::<PathBuf>("config").cloned();
    if let Some(path) = &path {
        let file = File::load(path)?;
        let valid: Vec<&str> = settings.iter().filter_map(|a| a.get_long()).collect();
        for (key, item) in file.doc.iter() {
            let Some(arg) = settings.iter().find(|a| a.get_long() == Some(key)) else {
                let span = file.doc.as_table().key(key).and_then(|k| k.span());
                let hint = nearest(key, &valid).map(|n| format!("; did you mean `{n}`?")).unwrap_or_default();
                bail!(
                    "{}: unknown key `{key}`{hint} (keys are the flags of `meridian start --help` without `--`: {})",
                    file.at(span),
                    valid.join(", ")
                );
            };
            let id = arg.get_id().as_str();
            let args = file_args(&file, &start, arg, key, item)?;
            if matches!(sub.value_source(id), Some(ValueSource::CommandLine | ValueSource::EnvVariable)) {
                continue; // a flag or an environment variable wins over the file
            }
            from_file.insert(id.to_string());
            extra.extend(args.into_iter().map(OsString::from));
        }
    }
    let mut full = argv;
    full.extend(extra);
    let matches = cmd.try_get_matches_from(&full).unwrap_or_else(|e| e.exit());
    let (_, last) = matches.subcommand().expect("parsed the start subcommand again");
    let effective = settings
        .iter()
        .map(|a| {
            let id = a.get_id().as_str();
            let kind = Kind::of(a);
            let source = if from_file.contains(id) {
                Source::File
            } else {
                match sub.value_source(id) {
                    Some(ValueSource::CommandLine) => Source::Flag,
                    Some(ValueSource::EnvVariable) => Source::Env,
                    Some(ValueSource::DefaultValue) => Source::Default,
                    _ => Source::Unset,
                }
            };
            let raw: Vec<String> =
                last.get_raw(id).map(|vs| vs.map(|v| v.to_string_lossy().into_owned()).collect()).unwrap_or_default();
            let value = match (a.get_action(), raw.as_slice()) {
                (ArgAction::SetTrue | ArgAction::SetFalse, _) => Some(last.get_flag(id).to_string()),
                (ArgAction::Append, r) => (!r.is_empty() || source != Source::Unset)
                    .then(|| format!("[{}]", r.iter().map(|v| kind.toml(v)).collect::<Vec<_>>().join(", "))),
                (_, []) => None,
                (_, r) => Some(kind.toml(&r[0])),
            };
            let source = if source == Source::Unset && value.is_some() { Source::Default } else { source };
            let env = a.get_env().map(|e| e.to_string_lossy().into_owned());
            (a.get_long().expect("keys have long names").to_string(), value, source, env)
        })
        .collect();
    Ok((matches, Some(Effective { settings: effective, file: path })))
}

/// Checks at start that need the outside world, before the data directory is touched: a node
/// answers at one of the `--join` addresses (unless the data directory already belongs to a
/// cluster), the data directory can be written, the listen addresses are free.
pub fn preflight(args: &StartArgs) -> anyhow::Result<()> {
    let member = args.data_dir.join("db").exists();
    if !args.join.is_empty() && !member {
        check_join(&args.join)?;
    }
    check_writable(&args.data_dir)?;
    // Before the ports: a second node on a running node's directory is told that, not that
    // its ports are taken. The node takes the lock for good when it starts.
    drop(meridian_server::shell::DataDirLock::acquire(&args.data_dir)?);
    check_free("--listen", Some(args.listen))?;
    check_free("--pg-listen", args.pg_listen)?;
    check_free("--http-listen", args.http_listen)?;
    Ok(())
}

/// Succeeds once any join address accepts a TCP connection, trying each in turn within
/// [`JOIN_CHECK_MAX`] in all.
fn check_join(join: &[String]) -> anyhow::Result<()> {
    let deadline = Instant::now() + JOIN_CHECK_MAX;
    let mut failures = Vec::new();
    for addr in join {
        let host = addr.trim_start_matches("http://").trim_start_matches("https://");
        let resolved: Vec<SocketAddr> = match host.to_socket_addrs() {
            Ok(a) => a.collect(),
            Err(e) => {
                failures.push(format!("cannot resolve join address {addr}: {e}"));
                continue;
            }
        };
        for sa in resolved {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                failures.push(format!("cannot reach join address {addr}: no answer within {JOIN_CHECK_MAX:?}"));
                break;
            }
            match TcpStream::connect_timeout(&sa, left) {
                Ok(_) => return Ok(()),
                Err(e) => failures.push(format!("cannot reach join address {addr}: {}", io_reason(&e))),
            }
        }
    }
    bail!(
        "{} — is a node running there? (--join names a node of the cluster to join; leave it out to bootstrap a new cluster)",
        failures.join("; ")
    )
}

/// An I/O error's reason without the "(os error N)" suffix.
fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => "connection refused".into(),
        std::io::ErrorKind::TimedOut => "timed out".into(),
        _ => e.to_string(),
    }
}

/// Creates the data directory if missing and writes (then removes) a probe file in it.
fn check_writable(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| {
        format!("data directory {}: cannot create it; choose a --data-dir this user can write", dir.display())
    })?;
    let probe = dir.join(".meridian-write-check");
    std::fs::write(&probe, b"ok").with_context(|| {
        format!("data directory {} is not writable; choose another --data-dir or fix its permissions", dir.display())
    })?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

/// Fails clearly when `addr` is already bound by someone else.
fn check_free(flag: &str, addr: Option<SocketAddr>) -> anyhow::Result<()> {
    let Some(addr) = addr else { return Ok(()) };
    match std::net::TcpListener::bind(addr) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => bail!(
            "{flag} {addr}: the address is already in use (another node or program listens there); pick another port"
        ),
        Err(e) => bail!("{flag} {addr}: cannot listen there: {}", io_reason(&e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_strings_round_trip() {
        for s in ["plain", "with \"quotes\"", "back\\slash", "tab\there"] {
            let doc = toml_edit::Document::parse(format!("k = {}", toml_string(s))).expect("valid TOML");
            assert_eq!(doc.as_table().get("k").and_then(|i| i.as_str()), Some(s));
        }
    }

    #[test]
    fn nearest_key_treats_underscores_as_dashes() {
        let valid = ["data-dir", "epsilon-ms", "lease-ms"];
        assert_eq!(nearest("data_dir", &valid), Some("data-dir"));
        assert_eq!(nearest("epsilon", &valid), Some("epsilon-ms"));
    }

    #[test]
    fn lines_count_from_one() {
        assert_eq!(line_of("a\nb\nc", 0), 1);
        assert_eq!(line_of("a\nb\nc", 2), 2);
        assert_eq!(line_of("a\nb\nc", 4), 3);
    }
}
