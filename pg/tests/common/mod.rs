//! Test helpers: a server on loopback over `MemKv`, a `tokio-postgres` client, and a raw protocol
//! client for what drivers hide (command tags, status bytes, broken input).

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use meridian_pg::PgOptions;
use meridian_sql::{KvStore, MemKv};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Longest any single wait in these tests may take.
pub const WAIT: Duration = Duration::from_secs(10);
/// Most messages read while waiting for one answer.
const MESSAGES_MAX: usize = 10_000;

/// A running `meridian_pg::serve` on 127.0.0.1.
pub struct TestServer {
    pub addr: SocketAddr,
    pub store: MemKv,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl TestServer {
    pub async fn start() -> TestServer {
        TestServer::start_with(PgOptions::default()).await
    }

    pub async fn start_with(opts: PgOptions) -> TestServer {
        TestServer::start_wrapped(opts, |store| Arc::new(store)).await
    }

    /// A server over `wrap(store)`: the `MemKv` seen through a `KvStore` of the test's own.
    pub async fn start_wrapped(opts: PgOptions, wrap: impl FnOnce(MemKv) -> Arc<dyn KvStore>) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        let store = MemKv::new();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(meridian_pg::serve(listener, wrap(store.clone()), opts, async move {
            let _ = stopped.await;
        }));
        TestServer { addr, store, stop: Some(stop), task: Some(task) }
    }

    pub fn conninfo(&self) -> String {
        format!("host=127.0.0.1 port={} user=tester dbname=meridian", self.addr.port())
    }

    pub async fn connect(&self) -> tokio_postgres::Client {
        self.try_connect().await.expect("connect")
    }

    pub async fn try_connect(&self) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        let (client, connection) =
            tokio::time::timeout(WAIT, tokio_postgres::connect(&self.conninfo(), tokio_postgres::NoTls))
                .await
                .expect("connect timed out")?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(client)
    }

    /// Stops the server and waits for `serve` to return.
    pub async fn stop(mut self) {
        let _ = self.stop.take().expect("stopped once").send(());
        let task = self.task.take().expect("stopped once");
        tokio::time::timeout(WAIT, task).await.expect("serve returned in time").expect("serve did not panic");
    }
}

/// One backend message: its type byte and body.
#[derive(Debug, Clone)]
pub struct Msg {
    pub kind: u8,
    pub body: Vec<u8>,
}

impl Msg {
    /// The CommandComplete tag.
    pub fn tag(&self) -> Option<String> {
        (self.kind == b'C').then(|| cstr(&self.body).0)
    }

    /// A field of an ErrorResponse/NoticeResponse ('C' = SQLSTATE, 'M' = message, 'S', 'P').
    pub fn field(&self, code: u8) -> Option<String> {
        if self.kind != b'E' && self.kind != b'N' {
            return None;
        }
        let mut rest = &self.body[..];
        while let Some((&f, tail)) = rest.split_first() {
            if f == 0 {
                break;
            }
            let (value, n) = cstr(tail);
            if f == code {
                return Some(value);
            }
            rest = &tail[n..];
        }
        None
    }

    /// Column names and type OIDs of a RowDescription.
    pub fn columns(&self) -> Vec<(String, u32)> {
        assert_eq!(self.kind, b'T');
        let count = i16::from_be_bytes([self.body[0], self.body[1]]) as usize;
        let mut at = 2;
        let mut out = Vec::new();
        for _ in 0..count {
            let (name, n) = cstr(&self.body[at..]);
            at += n;
            let oid = u32::from_be_bytes(self.body[at + 6..at + 10].try_into().unwrap());
            at += 18;
            out.push((name, oid));
        }
        out
    }

    /// The text values of a DataRow (`None` for NULL).
    pub fn values(&self) -> Vec<Option<String>> {
        assert_eq!(self.kind, b'D');
        let count = i16::from_be_bytes([self.body[0], self.body[1]]) as usize;
        let mut at = 2;
        let mut out = Vec::new();
        for _ in 0..count {
            let len = i32::from_be_bytes(self.body[at..at + 4].try_into().unwrap());
            at += 4;
            if len < 0 {
                out.push(None);
            } else {
                out.push(Some(String::from_utf8_lossy(&self.body[at..at + len as usize]).into_owned()));
                at += len as usize;
            }
        }
        out
    }
}

fn cstr(bytes: &[u8]) -> (String, usize) {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    (String::from_utf8_lossy(&bytes[..end]).into_owned(), end + 1)
}

/// A hand-rolled protocol client.
pub struct Raw {
    pub stream: TcpStream,
}

pub fn startup_packet(user: &str) -> Vec<u8> {
    let mut body = vec![0, 3, 0, 0];
    for (k, v) in [("user", user), ("database", "meridian")] {
        body.extend_from_slice(k.as_bytes());
        body.push(0);
        body.extend_from_slice(v.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut out = ((body.len() + 4) as u32).to_be_bytes().to_vec();
    out.extend(body);
    out
}

pub fn message(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![kind];
    out.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    out.extend_from_slice(body);
    out
}

impl Raw {
    pub async fn connect(addr: SocketAddr) -> Raw {
        Raw { stream: TcpStream::connect(addr).await.expect("tcp connect") }
    }

    /// Connects and completes a startup.
    pub async fn startup(addr: SocketAddr) -> Raw {
        let mut raw = Raw::connect(addr).await;
        raw.write(&startup_packet("raw")).await;
        let msgs = raw.until_ready().await;
        assert_eq!(msgs[0].kind, b'R', "AuthenticationOk first: {msgs:?}");
        raw
    }

    pub async fn write(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
    }

    /// The next message, or `None` once the server closed the connection.
    pub async fn read(&mut self) -> Option<Msg> {
        let mut header = [0u8; 5];
        let read =
            tokio::time::timeout(WAIT, self.stream.read_exact(&mut header)).await.expect("server answered in time");
        if read.is_err() {
            return None;
        }
        let len = u32::from_be_bytes(header[1..5].try_into().unwrap()) as usize;
        let mut body = vec![0u8; len - 4];
        let read =
            tokio::time::timeout(WAIT, self.stream.read_exact(&mut body)).await.expect("server answered in time");
        read.ok()?;
        Some(Msg { kind: header[0], body })
    }

    /// Messages up to and including ReadyForQuery.
    pub async fn until_ready(&mut self) -> Vec<Msg> {
        let mut out = Vec::new();
        for _ in 0..MESSAGES_MAX {
            let msg = self.read().await.unwrap_or_else(|| panic!("connection closed; got {out:?}"));
            let done = msg.kind == b'Z';
            out.push(msg);
            if done {
                return out;
            }
        }
        panic!("no ReadyForQuery in {MESSAGES_MAX} messages");
    }

    /// Every message until the server closes the connection.
    pub async fn until_closed(&mut self) -> Vec<Msg> {
        let mut out = Vec::new();
        for _ in 0..MESSAGES_MAX {
            match self.read().await {
                Some(msg) => out.push(msg),
                None => return out,
            }
        }
        panic!("connection not closed after {MESSAGES_MAX} messages");
    }

    /// A simple query; its answers up to ReadyForQuery.
    pub async fn query(&mut self, sql: &str) -> Vec<Msg> {
        let mut body = sql.as_bytes().to_vec();
        body.push(0);
        self.write(&message(b'Q', &body)).await;
        self.until_ready().await
    }
}

/// The status byte of the last ReadyForQuery.
pub fn status(msgs: &[Msg]) -> u8 {
    let z = msgs.iter().rev().find(|m| m.kind == b'Z').expect("a ReadyForQuery");
    z.body[0]
}

pub fn tags(msgs: &[Msg]) -> Vec<String> {
    msgs.iter().filter_map(Msg::tag).collect()
}

pub fn error_codes(msgs: &[Msg]) -> Vec<String> {
    msgs.iter().filter_map(|m| if m.kind == b'E' { m.field(b'C') } else { None }).collect()
}
