//! The accept loop and the per-connection message loop.
//!
//! The message loop is ours rather than pgwire's `process_socket` for four reasons: frames pass
//! through the length [`guard`](crate::guard) before pgwire buffers them; the transaction status
//! is copied from the session after every message; a broken frame gets a FATAL ErrorResponse
//! saying what was wrong instead of a silently closed socket; and connections notice shutdown
//! between messages. Message handling itself is pgwire's (`process_message`).
//!
//! An `SSLRequest` switches the connection to TLS when the server has a certificate
//! ([`crate::PgSecurity`]): the loop answers `S`, hands the socket to rustls and goes on with a
//! fresh codec over the encrypted stream. A server with a certificate refuses plaintext
//! startups.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use meridian_sql::{KvStore, SqlState};
use pgwire::api::{ClientInfo, DefaultClient, NoopHandler, PgWireConnectionState};
use pgwire::error::{ErrorInfo, PgWireError};
use pgwire::messages::response::{GssEncResponse, ReadyForQuery, SslResponse, TransactionStatus};
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage, SslNegotiationMetaMessage};
use pgwire::tokio::server::{PgWireMessageServerCodec, process_message};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep_until};
use tokio_util::codec::Framed;

use crate::convert::fatal;
use crate::guard::{GuardError, GuardedStream};
use crate::handler::{Handler, Prepared};
use crate::{MESSAGE_BYTES_MAX, PgOptions, REJECTING_CONNECTIONS_MAX};

/// How long the accept loop pauses after an accept error (e.g. out of file descriptors), so it
/// does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);
/// Longest wait to deliver a FATAL message to a client that is not reading.
const FATAL_SEND_TIMEOUT: Duration = Duration::from_secs(1);
/// SQLSTATE `57P01`, PostgreSQL's code for a connection ended by a server shutdown.
const ADMIN_SHUTDOWN: &str = "57P01";

type Socket = Framed<GuardedStream<MaybeTls>, PgWireMessageServerCodec<Arc<Prepared>>>;

/// SQLSTATE `28000`, invalid_authorization_specification: a plaintext startup on a TLS port.
const INVALID_AUTHORIZATION: &str = "28000";
/// Longest a TLS handshake may take (inside the startup timeout as well).
const TLS_HANDSHAKE_MAX: Duration = Duration::from_secs(10);

/// A connection before or after its switch to TLS.
enum MaybeTls {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl AsyncRead for MaybeTls {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_read(cx, buf),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for MaybeTls {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_write(cx, buf),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_flush(cx),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_shutdown(cx),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// See [`crate::serve`].
pub async fn serve(
    listener: TcpListener,
    store: Arc<dyn KvStore>,
    opts: PgOptions,
    shutdown: impl Future<Output = ()>,
) {
    assert!(opts.connections_max > 0, "invariant: a server must accept at least one connection");
    let (stop_tx, stop_rx) = watch::channel(false);
    let admitted = Arc::new(Semaphore::new(opts.connections_max));
    let rejecting = Arc::new(Semaphore::new(REJECTING_CONNECTIONS_MAX));
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            Some(done) = connections.join_next(), if !connections.is_empty() => {
                if let Err(e) = done
                    && e.is_panic()
                {
                    tracing::error!("a PostgreSQL connection task panicked: {e}");
                }
            }
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!("accepting a PostgreSQL connection failed: {e}");
                        tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                        continue;
                    }
                };
                // Over the limit, a connection still gets a FATAL 53300 after its startup packet
                // (what PostgreSQL does), but only REJECTING_CONNECTIONS_MAX at a time.
                let (permit, reject) = match admitted.clone().try_acquire_owned() {
                    Ok(p) => (p, false),
                    Err(_) => match rejecting.clone().try_acquire_owned() {
                        Ok(p) => (p, true),
                        Err(_) => {
                            tracing::warn!(%peer, "dropping a PostgreSQL connection: at the connection limit");
                            continue;
                        }
                    },
                };
                let handler = Arc::new(Handler::new(store.clone(), reject, opts.security.sasl.clone()));
                let stop = stop_rx.clone();
                let startup_timeout = opts.startup_timeout;
                let tls = opts.security.tls.clone();
                connections.spawn(async move {
                    let _permit = permit;
                    tracing::debug!(%peer, reject, "PostgreSQL connection opened");
                    run_connection(stream, handler, stop, startup_timeout, tls).await;
                    tracing::debug!(%peer, "PostgreSQL connection closed");
                });
            }
        }
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let drained =
        tokio::time::timeout(opts.shutdown_grace, async { while connections.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!(
            "{} PostgreSQL connections still busy after {:?}; aborting them",
            connections.len(),
            opts.shutdown_grace
        );
        connections.shutdown().await;
    }
}

/// Serves one connection until the client leaves, breaks the protocol, or the server stops.
async fn run_connection(
    stream: TcpStream,
    handler: Arc<Handler>,
    mut stop: watch::Receiver<bool>,
    startup_timeout: Duration,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    let Ok(peer) = stream.peer_addr() else { return };
    let _ = stream.set_nodelay(true);
    let mut socket: Socket = Framed::new(
        GuardedStream::new(MaybeTls::Plain(stream), MESSAGE_BYTES_MAX),
        PgWireMessageServerCodec::new(DefaultClient::new(peer, false)),
    );
    let mut secure = false;
    let startup_deadline = Instant::now() + startup_timeout;
    let noop = Arc::new(NoopHandler);
    loop {
        let in_startup = matches!(
            socket.state(),
            PgWireConnectionState::AwaitingSslRequest
                | PgWireConnectionState::AwaitingStartup
                | PgWireConnectionState::AuthenticationInProgress
        );
        let next = tokio::select! {
            biased;
            _ = stop.changed() => {
                send_fatal(&mut socket, fatal(ADMIN_SHUTDOWN, "terminating connection: the server is shutting down")).await;
                break;
            }
            _ = sleep_until(startup_deadline), if in_startup => {
                send_fatal(&mut socket, fatal(SqlState::ProtocolViolation.code(), "canceling authentication due to timeout")).await;
                break;
            }
            next = socket.next() => next,
        };
        let message = match next {
            None => break,
            Some(Ok(message)) => message,
            Some(Err(e)) => {
                let info = match socket.get_ref().refused() {
                    Some(refused @ GuardError::TooLarge { .. }) => {
                        fatal(SqlState::ProgramLimitExceeded.code(), refused.to_string())
                    }
                    Some(refused) => fatal(SqlState::ProtocolViolation.code(), refused.to_string()),
                    None => fatal(SqlState::ProtocolViolation.code(), format!("invalid frontend message: {e}")),
                };
                send_fatal(&mut socket, info).await;
                break;
            }
        };
        match message {
            PgWireFrontendMessage::SslNegotiation(SslNegotiationMetaMessage::PostgresSsl(_)) => {
                let Some(acceptor) = tls.as_ref().filter(|_| !secure) else {
                    // No certificate: 'N', and the client goes on in plaintext or gives up.
                    if socket.send(PgWireBackendMessage::SslResponse(SslResponse::Refuse)).await.is_err() {
                        break;
                    }
                    continue;
                };
                if socket.send(PgWireBackendMessage::SslResponse(SslResponse::Accept)).await.is_err() {
                    break;
                }
                // The client sends nothing more until the handshake: the read buffer is empty.
                let MaybeTls::Plain(tcp) = socket.into_inner().into_inner() else {
                    unreachable!("invariant: a connection switches to TLS once (`secure` guards it)")
                };
                let accepted = tokio::time::timeout(TLS_HANDSHAKE_MAX, acceptor.accept(tcp)).await;
                let stream = match accepted {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, "PostgreSQL TLS handshake failed: {e}");
                        break;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "PostgreSQL TLS handshake timed out");
                        break;
                    }
                };
                socket = Framed::new(
                    GuardedStream::new(MaybeTls::Tls(Box::new(stream)), MESSAGE_BYTES_MAX),
                    PgWireMessageServerCodec::new(DefaultClient::new(peer, true)),
                );
                socket.set_state(PgWireConnectionState::AwaitingStartup);
                secure = true;
                continue;
            }
            PgWireFrontendMessage::SslNegotiation(SslNegotiationMetaMessage::PostgresGss(_)) => {
                if socket.send(PgWireBackendMessage::GssEncResponse(GssEncResponse::Refuse)).await.is_err() {
                    break;
                }
                continue;
            }
            PgWireFrontendMessage::SslNegotiation(_) => {
                // Not a negotiation request: the startup packet, decoded next.
                socket.set_state(PgWireConnectionState::AwaitingStartup);
                continue;
            }
            PgWireFrontendMessage::Terminate(_) => break,
            PgWireFrontendMessage::Startup(_) if tls.is_some() && !secure => {
                send_fatal(
                    &mut socket,
                    fatal(INVALID_AUTHORIZATION, "this server requires TLS: connect with sslmode=require or stricter"),
                )
                .await;
                break;
            }
            _ => {}
        }
        let is_cancel = matches!(message, PgWireFrontendMessage::CancelRequest(_));
        let is_extended = message.is_extended_query();
        let result = process_message(
            message,
            &mut socket,
            handler.clone(),
            handler.clone(),
            handler.clone(),
            noop.clone(),
            noop.clone(),
        )
        .await;
        let status = handler.status().await;
        socket.set_transaction_status(status);
        if let Err(e) = result {
            // An error before the session is established always ends the connection: a client
            // must never get past startup by making it fail.
            let fatal_now = in_startup || e.is_fatal();
            if report_error(&mut socket, e, is_extended, status, fatal_now).await.is_err() || fatal_now {
                break;
            }
        }
        if is_cancel {
            break;
        }
    }
    handler.close().await;
}

/// Sends an error for a message that failed. After an extended-protocol message the connection
/// skips to the next Sync (which answers ReadyForQuery); after a simple one it is ready at once.
async fn report_error(
    socket: &mut Socket,
    error: PgWireError,
    is_extended: bool,
    status: TransactionStatus,
    fatal_now: bool,
) -> Result<(), PgWireError> {
    let mut info: ErrorInfo = error.into();
    if fatal_now {
        info.severity = pgwire::error::SEVERITY_FATAL.to_string();
        send_fatal(socket, info).await;
        return Ok(());
    }
    socket.feed(PgWireBackendMessage::ErrorResponse(info.into())).await?;
    if is_extended {
        socket.set_state(PgWireConnectionState::AwaitingSync);
    } else {
        socket.set_state(PgWireConnectionState::ReadyForQuery);
        socket.feed(PgWireBackendMessage::ReadyForQuery(ReadyForQuery::new(status))).await?;
    }
    socket.flush().await?;
    Ok(())
}

/// Best effort: the connection is about to close whatever happens.
async fn send_fatal(socket: &mut Socket, info: ErrorInfo) {
    tracing::debug!(code = %info.code, "closing a PostgreSQL connection: {}", info.message);
    let _ =
        tokio::time::timeout(FATAL_SEND_TIMEOUT, socket.send(PgWireBackendMessage::ErrorResponse(info.into()))).await;
}
