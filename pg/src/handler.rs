//! One connection's handlers: startup (trust), the simple query protocol and the extended one, all
//! over the connection's [`Session`].
//!
//! pgwire calls the handlers through `&self`, so the session sits behind an async mutex; a
//! connection handles one message at a time, so the lock is never contended.
//!
//! **Transaction status** comes from the session, never from guessing at statements: after every
//! message the connection loop (`server.rs`) copies [`Session::in_transaction`] into the
//! connection, and the simple query handler reads it for its ReadyForQuery. (pgwire's default
//! handlers infer the status from response kinds, which gets e.g. a failed `COMMIT` wrong.)

use std::fmt::Debug;
use std::sync::{Arc, LazyLock};

use async_trait::async_trait;
use futures::{Sink, SinkExt, stream};
use meridian_sql::{Column, DataType, KvStore, QueryResult, ResultKind, Session, SqlError, SqlState, TxnStatus};
use pgwire::api::auth::{
    DefaultServerParameterProvider, StartupHandler, finish_authentication, protocol_negotiation,
    save_startup_parameters_to_metadata,
};
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::{
    ExtendedQueryHandler, SimpleQueryHandler, send_describe_response, send_execution_response, send_query_response,
    send_ready_for_query,
};
use pgwire::api::results::{
    DescribePortalResponse, DescribeStatementResponse, FieldInfo, QueryResponse, Response, Tag,
};
use pgwire::api::stmt::{QueryParser, StoredStatement};
use pgwire::api::store::{Entry, PortalStore};
use pgwire::api::{
    ClientInfo, ClientPortalStore, DEFAULT_NAME, METADATA_USER, PgWireConnectionState, PidSecretKeyGenerator,
    RandomPidSecretKeyGenerator, Type,
};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::data::{NoData, ParameterDescription};
use pgwire::messages::extendedquery::{Describe, TARGET_TYPE_BYTE_STATEMENT};
use pgwire::messages::response::{EmptyQueryResponse, TransactionStatus};
use pgwire::messages::simplequery::Query;
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use tokio::sync::Mutex;

use crate::STATEMENT_BYTES_MAX;

/// SQLSTATE `28P01`, invalid_password.
const INVALID_PASSWORD: &str = "28P01";
use crate::convert::{self, param_type, user_error};

/// Process ids and cancel keys for BackendKeyData (cancelling is not supported yet; clients
/// still expect the message).
static PID_GENERATOR: LazyLock<RandomPidSecretKeyGenerator> = LazyLock::new(RandomPidSecretKeyGenerator::default);

/// The `server_version` reported to clients: PostgreSQL 16's protocol and catalog era, so tools
/// pick their modern code paths, plus what is really answering.
pub fn server_version() -> String {
    format!("16.0 (Meridian {})", env!("CARGO_PKG_VERSION"))
}

/// A prepared statement: its text and what `Session::describe` learnt about it at Parse time.
#[derive(Debug, Clone)]
pub struct Prepared {
    sql: String,
    params: Vec<Option<DataType>>,
    columns: Option<Vec<Column>>,
}

type SharedSession = Arc<Mutex<Session>>;

/// Parses (and describes) statements for the extended protocol.
pub struct Parser {
    session: SharedSession,
}

/// The handlers of one connection.
pub struct Handler {
    session: SharedSession,
    store: Arc<dyn KvStore>,
    parser: Arc<Parser>,
    /// Refuse the startup: the server is at its connection limit.
    reject: bool,
    /// SCRAM password authentication; `None`: trust.
    sasl: Option<Arc<crate::auth::Sasl>>,
}

impl Debug for Handler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handler").field("reject", &self.reject).finish_non_exhaustive()
    }
}

impl Handler {
    /// Handlers with a fresh session over `store`; with `reject`, the startup is refused with
    /// `53300 too many connections`; with `sasl`, clients authenticate with SCRAM.
    pub fn new(store: Arc<dyn KvStore>, reject: bool, sasl: Option<Arc<crate::auth::Sasl>>) -> Handler {
        let session = Arc::new(Mutex::new(Session::new(store.clone())));
        Handler { parser: Arc::new(Parser { session: session.clone() }), session, store, reject, sasl }
    }

    /// The session's transaction status, as ReadyForQuery reports it.
    pub async fn status(&self) -> TransactionStatus {
        wire_status(self.session.lock().await.in_transaction())
    }

    /// Ends the session, rolling back an open transaction.
    pub async fn close(&self) {
        let mut session = self.session.lock().await;
        std::mem::replace(&mut *session, Session::new(self.store.clone())).close().await;
    }
}

fn wire_status(status: TxnStatus) -> TransactionStatus {
    match status {
        TxnStatus::Idle => TransactionStatus::Idle,
        TxnStatus::InTransaction => TransactionStatus::Transaction,
        TxnStatus::Failed => TransactionStatus::Error,
    }
}

fn check_size(sql: &str) -> Result<(), SqlError> {
    if sql.len() > STATEMENT_BYTES_MAX {
        return Err(SqlError::new(
            SqlState::ProgramLimitExceeded,
            format!("statement text is {} bytes; the limit is {STATEMENT_BYTES_MAX} bytes", sql.len()),
        ));
    }
    Ok(())
}

/// The simple protocol's response to one statement's result.
fn response(result: Result<QueryResult, SqlError>) -> Response {
    match result {
        Err(e) => Response::Error(Box::new(convert::error_info(e))),
        Ok(QueryResult { kind: ResultKind::Command { tag }, .. }) => Response::Execution(Tag::new(&tag)),
        Ok(QueryResult { kind: ResultKind::Empty, .. }) => Response::EmptyQuery,
        Ok(QueryResult { kind: ResultKind::Rows { columns, rows }, .. }) => {
            match rows_response(&columns, &rows, &Format::UnifiedText) {
                Ok(r) => Response::Query(r),
                Err(e) => Response::Error(Box::new(e.into())),
            }
        }
    }
}

fn rows_response(
    columns: &[Column],
    rows: &[Vec<meridian_sql::Value>],
    format: &Format,
) -> PgWireResult<QueryResponse> {
    let fields = Arc::new(convert::fields(columns, Some(format))?);
    let rows = convert::encode_rows(fields.clone(), columns, rows)?;
    Ok(QueryResponse::new(fields, stream::iter(rows.into_iter().map(Ok))))
}

#[async_trait]
impl StartupHandler for Handler {
    async fn on_startup<C>(&self, client: &mut C, message: PgWireFrontendMessage) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if let Some(sasl) = &self.sasl {
            // SCRAM: pgwire's handler runs the exchange (the startup packet, then the SASL
            // messages) and finishes the startup once the proof checks out.
            if self.reject && matches!(message, PgWireFrontendMessage::Startup(_)) {
                return Err(PgWireError::UserError(Box::new(convert::fatal(
                    "53300",
                    "sorry, too many clients already",
                ))));
            }
            return sasl.on_startup(client, message).await.map_err(|e| match e {
                // pgwire names the user of the SCRAM message, which libpq leaves empty; PostgreSQL
                // names the user of the startup packet, the same way for a wrong password and an
                // unknown user (which `auth.rs` runs through the same exchange).
                PgWireError::InvalidPassword(_) => {
                    let user = client.metadata().get(METADATA_USER).cloned().unwrap_or_default();
                    PgWireError::UserError(Box::new(convert::fatal(
                        INVALID_PASSWORD,
                        format!("password authentication failed for user \"{user}\""),
                    )))
                }
                other => other,
            });
        }
        let PgWireFrontendMessage::Startup(startup) = message else {
            return Err(PgWireError::UserError(Box::new(convert::fatal(
                SqlState::ProtocolViolation.code(),
                "expected a startup message",
            ))));
        };
        if self.reject {
            // SQLSTATE 53300, too_many_connections.
            return Err(PgWireError::UserError(Box::new(convert::fatal("53300", "sorry, too many clients already"))));
        }
        protocol_negotiation(client, &startup).await?;
        save_startup_parameters_to_metadata(client, &startup);
        let (pid, key) = PID_GENERATOR.generate(&*client);
        client.set_pid_and_secret_key(pid, key);
        let mut parameters = DefaultServerParameterProvider::default();
        parameters.server_version = server_version();
        // Trust authentication (no password file): AuthenticationOk, parameters,
        // BackendKeyData, ReadyForQuery.
        finish_authentication(client, &parameters).await
    }
}

#[async_trait]
impl SimpleQueryHandler for Handler {
    /// Like pgwire's default, except that the ReadyForQuery status is the session's.
    async fn on_query<C>(&self, client: &mut C, query: Query) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if !matches!(client.state(), PgWireConnectionState::ReadyForQuery) {
            return Err(PgWireError::NotReadyForQuery);
        }
        client.set_state(PgWireConnectionState::QueryInProgress);
        let responses = SimpleQueryHandler::do_query(self, client, &query.query).await?;
        if responses.is_empty() {
            client.feed(PgWireBackendMessage::EmptyQueryResponse(EmptyQueryResponse::new())).await?;
        }
        for r in responses {
            match r {
                Response::EmptyQuery => {
                    client.feed(PgWireBackendMessage::EmptyQueryResponse(EmptyQueryResponse::new())).await?;
                }
                Response::Query(rows) => send_query_response(client, rows, true).await?,
                Response::Execution(tag) | Response::TransactionStart(tag) | Response::TransactionEnd(tag) => {
                    send_execution_response(client, tag).await?
                }
                Response::Error(e) => client.feed(PgWireBackendMessage::ErrorResponse((*e).into())).await?,
                Response::CopyIn(_) | Response::CopyOut(_) | Response::CopyBoth(_) => {
                    unreachable!("invariant: Meridian never answers with COPY")
                }
            }
        }
        let status = self.status().await;
        client.set_state(PgWireConnectionState::ReadyForQuery);
        client.set_transaction_status(status);
        send_ready_for_query(client, status).await
    }

    async fn do_query<C>(&self, _client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if let Err(e) = check_size(query) {
            return Ok(vec![Response::Error(Box::new(convert::error_info(e)))]);
        }
        let results = self.session.lock().await.execute(query).await;
        Ok(results.into_iter().map(response).collect())
    }
}

#[async_trait]
impl QueryParser for Parser {
    type Statement = Arc<Prepared>;

    /// Parses and describes the statement now, so a Parse of a statement naming an unknown table
    /// fails at once, as in PostgreSQL.
    async fn parse_sql<C>(&self, _client: &C, sql: &str, _types: &[Option<Type>]) -> PgWireResult<Option<Arc<Prepared>>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        check_size(sql).map_err(user_error)?;
        let shape = self.session.lock().await.describe(sql).await.map_err(user_error)?;
        Ok(Some(Arc::new(Prepared { sql: sql.to_string(), params: shape.params, columns: shape.columns })))
    }

    fn get_parameter_types(&self, stmt: &Arc<Prepared>) -> PgWireResult<Vec<Type>> {
        Ok(stmt.params.iter().map(|t| param_type(*t)).collect())
    }

    fn get_result_schema(&self, stmt: &Arc<Prepared>, format: Option<&Format>) -> PgWireResult<Vec<FieldInfo>> {
        convert::fields(stmt.columns.as_deref().unwrap_or_default(), format)
    }
}

/// Parameter types for ParameterDescription: the client's where it gave one, else Meridian's.
fn statement_param_types(stmt: &StoredStatement<Arc<Prepared>>) -> Vec<Type> {
    let n = stmt.parameter_types.len().max(stmt.statement.params.len());
    (0..n)
        .map(|i| {
            stmt.parameter_types
                .get(i)
                .cloned()
                .flatten()
                .unwrap_or_else(|| param_type(stmt.statement.params.get(i).copied().flatten()))
        })
        .collect()
}

#[async_trait]
impl ExtendedQueryHandler for Handler {
    type Statement = Arc<Prepared>;
    type QueryParser = Parser;

    fn query_parser(&self) -> Arc<Parser> {
        self.parser.clone()
    }

    /// pgwire's default answers a statement with parameters but no result columns with an empty
    /// RowDescription; PostgreSQL (and this) sends NoData.
    async fn on_describe<C>(&self, client: &mut C, message: Describe) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if message.target_type != TARGET_TYPE_BYTE_STATEMENT {
            return self._on_describe(client, message).await;
        }
        let name = message.name.as_deref().unwrap_or(DEFAULT_NAME);
        let Some(Entry::Value(stmt)) = client.portal_store().get_statement(name) else {
            return self._on_describe(client, message).await;
        };
        let response = self.do_describe_statement(client, &stmt).await?;
        if response.fields.is_empty() && !response.parameters.is_empty() {
            let oids = response.parameters.iter().map(|t| t.oid()).collect();
            client.send(PgWireBackendMessage::ParameterDescription(ParameterDescription::new(oids))).await?;
            client.send(PgWireBackendMessage::NoData(NoData::new())).await?;
            return Ok(());
        }
        send_describe_response(client, &response).await
    }

    async fn do_describe_statement<C>(
        &self,
        _client: &mut C,
        stmt: &StoredStatement<Self::Statement>,
    ) -> PgWireResult<DescribeStatementResponse>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let fields = convert::fields(stmt.statement.columns.as_deref().unwrap_or_default(), None)?;
        Ok(DescribeStatementResponse::new(statement_param_types(stmt), fields))
    }

    async fn do_describe_portal<C>(
        &self,
        _client: &mut C,
        portal: &Portal<Self::Statement>,
    ) -> PgWireResult<DescribePortalResponse>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let columns = portal.statement.statement.columns.as_deref().unwrap_or_default();
        Ok(DescribePortalResponse::new(convert::fields(columns, Some(&portal.result_column_format))?))
    }

    async fn do_query<C>(
        &self,
        _client: &mut C,
        portal: &Portal<Self::Statement>,
        _max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let stmt = &portal.statement;
        let prepared = &stmt.statement;
        let values = convert::decode_params(
            &portal.parameters,
            &portal.parameter_format,
            &stmt.parameter_types,
            &prepared.params,
        )
        .map_err(user_error)?;
        let result = self.session.lock().await.execute_with(&prepared.sql, &values).await.map_err(user_error)?;
        match result.kind {
            ResultKind::Command { tag } => Ok(Response::Execution(Tag::new(&tag))),
            ResultKind::Empty => Ok(Response::EmptyQuery),
            ResultKind::Rows { columns, rows } => {
                if prepared.columns.as_ref() != Some(&columns) {
                    // The client decoded RowDescription from Parse time; a table changed since.
                    return Err(user_error(SqlError::new(
                        SqlState::FeatureNotSupported,
                        "cached plan must not change result type; prepare the statement again",
                    )));
                }
                Ok(Response::Query(rows_response(&columns, &rows, &portal.result_column_format)?))
            }
        }
    }
}
