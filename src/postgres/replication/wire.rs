//! The replication connection (`replication=true` in the startup packet), on
//! the plugin's own socket: tokio-postgres cannot ask for one, and neither
//! psql nor pg_dump is a tool the physical connectors may count on. The
//! messages are postgres-protocol's; the settings (host, TLS, password,
//! timeout) are the same the metadata connection uses, and the server's
//! errors keep their SQLSTATE.

use bytes::BytesMut;
use fallible_iterator::FallibleIterator;
use postgres_protocol::authentication::{md5_hash, sasl};
use postgres_protocol::message::backend::{DataRowBody, ErrorFields, Message};
use postgres_protocol::message::frontend;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::Lsn;
use crate::postgres::connection::{ConnectError, Connection, PgError, SslMode};

/// A byte stream to the server, plain or TLS.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// What IDENTIFY_SYSTEM says about the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SystemId {
    /// The cluster's system identifier, the same on a primary and its standbys.
    pub system_identifier: String,
    /// The current timeline.
    pub timeline: u32,
    /// The current WAL write position.
    pub xlogpos: Lsn,
}

/// An open replication connection, ready for commands.
pub struct ReplicationConnection {
    stream: Box<dyn Io>,
    buf: BytesMut,
}

impl std::fmt::Debug for ReplicationConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReplicationConnection")
    }
}

impl ReplicationConnection {
    /// Connects, negotiates TLS as `ssl_mode` says, and authenticates, within
    /// `connect_timeout`.
    pub async fn open(conn: &Connection) -> Result<ReplicationConnection, ConnectError> {
        let target = conn.target_as("replication connection");
        let fail = |source: PgError| ConnectError::Connect {
            target: target.clone(),
            source,
        };
        match tokio::time::timeout(conn.connect_timeout, start(conn)).await {
            Ok(Ok(replication)) => Ok(replication),
            Ok(Err(Failure::Pg(e))) => Err(fail(e)),
            Ok(Err(Failure::Connect(e))) => Err(e),
            Err(_) => Err(ConnectError::Timeout {
                target: target.clone(),
                seconds: conn.connect_timeout.as_secs(),
            }),
        }
    }

    /// Runs IDENTIFY_SYSTEM: the system identifier, timeline and WAL position.
    pub async fn identify_system(&mut self) -> Result<SystemId, PgError> {
        let rows = self.simple_query("IDENTIFY_SYSTEM").await?;
        let bad = || PgError::client("IDENTIFY_SYSTEM", "the server's answer has no such row");
        let row = rows.first().ok_or_else(bad)?;
        let column = |i: usize| row.get(i).cloned().flatten().ok_or_else(bad);
        let timeline = column(1)?.parse().map_err(|_| bad())?;
        let xlogpos = column(2)?
            .parse()
            .map_err(|e: super::BadLsn| PgError::client("IDENTIFY_SYSTEM", e.to_string()))?;
        Ok(SystemId {
            system_identifier: column(0)?,
            timeline,
            xlogpos,
        })
    }

    /// Says goodbye to the server and closes the socket.
    pub async fn close(mut self) {
        let mut out = BytesMut::new();
        frontend::terminate(&mut out);
        let _ = self.stream.write_all(&out).await;
        let _ = self.stream.shutdown().await;
    }

    /// Runs one command with the simple query protocol; each row is its
    /// columns as text (None for NULL).
    pub(super) async fn simple_query(
        &mut self,
        command: &str,
    ) -> Result<Vec<Vec<Option<String>>>, PgError> {
        let mut out = BytesMut::new();
        frontend::query(command, &mut out).map_err(|e| io_error(command, e))?;
        self.send(&out).await.map_err(|e| io_error(command, e))?;
        let mut rows = Vec::new();
        let mut failed = None;
        loop {
            match self.receive().await.map_err(|e| io_error(command, e))? {
                Message::DataRow(body) => {
                    rows.push(columns(&body).map_err(|e| io_error(command, e))?)
                }
                Message::ErrorResponse(body) => failed = Some(server_error(body.fields())),
                Message::ReadyForQuery(_) => break,
                _ => {}
            }
        }
        match failed {
            Some(e) => Err(e.with_context(command.to_string())),
            None => Ok(rows),
        }
    }

    pub(super) async fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes).await?;
        self.stream.flush().await
    }

    /// The next message from the server, notices logged and skipped.
    async fn receive(&mut self) -> std::io::Result<Message> {
        match self.receive_incoming().await? {
            Incoming::Message(message) => Ok(message),
            Incoming::CopyBoth => Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "the server started streaming out of turn",
            )),
        }
    }

    /// The next message from the server, including the CopyBothResponse
    /// that starts streaming (which postgres-protocol does not parse).
    pub(super) async fn receive_incoming(&mut self) -> std::io::Result<Incoming> {
        loop {
            if self.buf.len() >= 5 && self.buf[0] == b'W' {
                let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]);
                let total = len as usize + 1;
                if self.buf.len() >= total {
                    let _ = self.buf.split_to(total);
                    return Ok(Incoming::CopyBoth);
                }
            } else if let Some(message) = Message::parse(&mut self.buf)? {
                if let Message::NoticeResponse(body) = &message {
                    tracing::debug!("replication connection: {}", server_error(body.fields()));
                    continue;
                }
                return Ok(Incoming::Message(message));
            }
            if self.stream.read_buf(&mut self.buf).await? == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the server closed the connection",
                ));
            }
        }
    }
}

/// A message from the server, as [`ReplicationConnection::receive_incoming`] reads it.
pub(super) enum Incoming {
    /// CopyBothResponse: the server streams from now on.
    CopyBoth,
    /// Any other message.
    Message(Message),
}

/// Why a start failed: what the server or the socket said, or the TLS settings.
enum Failure {
    Pg(PgError),
    Connect(ConnectError),
}

impl From<PgError> for Failure {
    fn from(e: PgError) -> Failure {
        Failure::Pg(e)
    }
}

/// The socket, TLS, the startup packet and authentication, up to ReadyForQuery.
async fn start(conn: &Connection) -> Result<ReplicationConnection, Failure> {
    let socket: Box<dyn Io> = if conn.host.starts_with('/') {
        let path = format!("{}/.s.PGSQL.{}", conn.host, conn.port);
        Box::new(
            tokio::net::UnixStream::connect(&path)
                .await
                .map_err(|e| PgError::client("", format!("cannot reach {path}: {e}")))?,
        )
    } else {
        let tcp = tokio::net::TcpStream::connect((conn.host.as_str(), conn.port))
            .await
            .map_err(|e| PgError::client("", e.to_string()))?;
        let _ = tcp.set_nodelay(true);
        Box::new(tcp)
    };
    let (stream, binding) = negotiate_tls(conn, socket).await?;
    let mut replication = ReplicationConnection {
        stream,
        buf: BytesMut::new(),
    };
    let mut out = BytesMut::new();
    frontend::startup_message(
        [
            ("user", conn.user.as_str()),
            ("replication", "true"),
            ("application_name", "plakar-postgresql"),
            ("client_encoding", "UTF8"),
        ],
        &mut out,
    )
    .map_err(|e| io_error("", e))?;
    replication.send(&out).await.map_err(|e| io_error("", e))?;
    authenticate(&mut replication, conn, binding).await?;
    loop {
        match replication.receive().await.map_err(|e| io_error("", e))? {
            Message::ReadyForQuery(_) => return Ok(replication),
            Message::ErrorResponse(body) => return Err(server_error(body.fields()).into()),
            _ => {}
        }
    }
}

/// TLS as `ssl_mode` asks: none, tried first, or demanded. Returns the
/// stream and, under TLS, the server certificate's hash for SCRAM channel binding.
async fn negotiate_tls(
    conn: &Connection,
    mut socket: Box<dyn Io>,
) -> Result<(Box<dyn Io>, Option<Vec<u8>>), Failure> {
    if conn.tls.mode == SslMode::Disable {
        return Ok((socket, None));
    }
    let mut out = BytesMut::new();
    frontend::ssl_request(&mut out);
    socket.write_all(&out).await.map_err(|e| io_error("", e))?;
    let mut answer = [0u8; 1];
    socket
        .read_exact(&mut answer)
        .await
        .map_err(|e| io_error("", e))?;
    if answer[0] != b'S' {
        return match conn.tls.mode {
            SslMode::Allow | SslMode::Prefer => Ok((socket, None)),
            mode => Err(PgError::client(
                "",
                format!(
                    "the server does not accept TLS, which ssl_mode={} demands",
                    mode.as_str()
                ),
            )
            .into()),
        };
    }
    let connector = conn.tls_connector().map_err(Failure::Connect)?;
    let tls = tokio_native_tls::TlsConnector::from(connector)
        .connect(&conn.host, socket)
        .await
        .map_err(|e| PgError::client("", format!("the TLS handshake failed: {e}")))?;
    let binding = tls.get_ref().tls_server_end_point().ok().flatten();
    Ok((Box::new(tls), binding))
}

/// Answers the server's authentication request: none, a password (clear or
/// MD5), or SCRAM-SHA-256, with channel binding when TLS offers it.
async fn authenticate(
    replication: &mut ReplicationConnection,
    conn: &Connection,
    binding: Option<Vec<u8>>,
) -> Result<(), Failure> {
    let io = |e| io_error("", e);
    let password = || {
        conn.password().ok_or_else(|| {
            PgError::client(
                "",
                "the server asks for a password and none was given; set the option `password` or put it in `location`",
            )
        })
    };
    let mut out = BytesMut::new();
    match replication.receive().await.map_err(io)? {
        Message::AuthenticationOk => return Ok(()),
        Message::ErrorResponse(body) => return Err(server_error(body.fields()).into()),
        Message::AuthenticationCleartextPassword => {
            frontend::password_message(password()?.as_bytes(), &mut out).map_err(io)?;
        }
        Message::AuthenticationMd5Password(body) => {
            let hash = md5_hash(conn.user.as_bytes(), password()?.as_bytes(), body.salt());
            frontend::password_message(hash.as_bytes(), &mut out).map_err(io)?;
        }
        Message::AuthenticationSasl(body) => {
            let (mut plain, mut plus) = (false, false);
            let mut mechanisms = body.mechanisms();
            while let Some(m) = mechanisms.next().map_err(io)? {
                plain |= m == sasl::SCRAM_SHA_256;
                plus |= m == sasl::SCRAM_SHA_256_PLUS;
            }
            let (mechanism, binding) = match binding {
                Some(hash) if plus => (
                    sasl::SCRAM_SHA_256_PLUS,
                    sasl::ChannelBinding::tls_server_end_point(hash),
                ),
                Some(_) if plain => (sasl::SCRAM_SHA_256, sasl::ChannelBinding::unrequested()),
                None if plain => (sasl::SCRAM_SHA_256, sasl::ChannelBinding::unsupported()),
                _ => {
                    return Err(PgError::client(
                        "",
                        "the server offers no SASL mechanism the plugin speaks (SCRAM-SHA-256)",
                    )
                    .into())
                }
            };
            let mut scram = sasl::ScramSha256::new(password()?.as_bytes(), binding);
            frontend::sasl_initial_response(mechanism, scram.message(), &mut out).map_err(io)?;
            replication.send(&out).await.map_err(io)?;
            out.clear();
            match replication.receive().await.map_err(io)? {
                Message::AuthenticationSaslContinue(body) => {
                    scram.update(body.data()).map_err(io)?
                }
                Message::ErrorResponse(body) => return Err(server_error(body.fields()).into()),
                _ => return Err(unexpected().into()),
            }
            frontend::sasl_response(scram.message(), &mut out).map_err(io)?;
            replication.send(&out).await.map_err(io)?;
            match replication.receive().await.map_err(io)? {
                Message::AuthenticationSaslFinal(body) => scram.finish(body.data()).map_err(io)?,
                Message::ErrorResponse(body) => return Err(server_error(body.fields()).into()),
                _ => return Err(unexpected().into()),
            }
            out.clear();
        }
        _ => {
            return Err(PgError::client(
                "",
                "the server asks for an authentication method the plugin's own connection does not speak (GSSAPI, SSPI); use scram-sha-256, md5, password, trust or peer for replication in pg_hba.conf",
            )
            .into())
        }
    }
    if !out.is_empty() {
        replication.send(&out).await.map_err(io)?;
    }
    match replication.receive().await.map_err(io)? {
        Message::AuthenticationOk => Ok(()),
        Message::ErrorResponse(body) => Err(server_error(body.fields()).into()),
        _ => Err(unexpected().into()),
    }
}

fn unexpected() -> PgError {
    PgError::client("", "the server answered out of turn during authentication")
}

/// An I/O or protocol failure, worded with what was being done.
pub(super) fn io_error(context: &str, e: std::io::Error) -> PgError {
    PgError::client(context.to_string(), e.to_string())
}

/// The server's error, from its fields.
pub(super) fn server_error(mut fields: ErrorFields<'_>) -> PgError {
    let (mut code, mut message, mut detail, mut hint) = (String::new(), None, None, None);
    while let Ok(Some(field)) = fields.next() {
        let value = String::from_utf8_lossy(field.value_bytes()).into_owned();
        match field.type_() {
            b'C' => code = value,
            b'M' => message = Some(value),
            b'D' => detail = Some(value),
            b'H' => hint = Some(value),
            _ => {}
        }
    }
    PgError::server(
        "",
        &code,
        message.unwrap_or_else(|| "the server reported an error without a message".into()),
        detail,
        hint,
    )
}

/// A data row's columns as text.
fn columns(body: &DataRowBody) -> std::io::Result<Vec<Option<String>>> {
    let buffer = body.buffer();
    body.ranges()
        .map(|range| Ok(range.map(|r| String::from_utf8_lossy(&buffer[r]).into_owned())))
        .collect()
}
