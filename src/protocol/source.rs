//! The importer side of the protocol, once for every source connector:
//! `Init`, `Ping` and `Close`; `Import`'s announcements and the ledger of
//! acknowledgements that decides between `finished` and an error; `Open`'s
//! content stream. A connector implements [`Source`] and says only what is
//! new about it.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::sync::Arc;

use futures::FutureExt;
use prost::bytes::Bytes;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Request, Response, Status, Streaming};

use super::connectors::Record;
use super::importer::{
    importer_server, CloseRequest, CloseResponse, ImportRequest, ImportResponse, InitRequest,
    InitResponse, OpenRequest, OpenResponse, PingRequest, PingResponse,
};
use super::{guard, Failure, ResponseStream, Slot};

/// A backup source: what `Init` prepares, the records it announces, the
/// content behind each.
#[tonic::async_trait]
pub trait Source: Send + Sync + Sized + 'static {
    /// The connector's errors; they become a gRPC status only at this edge.
    type Error: Failure + From<Ended>;

    /// Checks the configuration and prepares the backup; nothing is copied yet.
    async fn init(config: &HashMap<String, String>) -> Result<Self, Self::Error>;

    /// Where the snapshot comes from, as Plakar shows it.
    fn origin(&self) -> String;

    /// Location flags for Plakar (see [`super::flags`]).
    fn flags(&self) -> u32 {
        super::flags::STREAM
    }

    /// Checks that the server can still be reached.
    async fn ping(&self) -> Result<(), Self::Error>;

    /// Announces every record through `run`, serving content on the way if
    /// the source must (a stream read once); returns once all are announced.
    async fn import(self: Arc<Self>, run: &mut ImportRun) -> Result<(), Self::Error>;

    /// Streams the content of the record at `path` into `content`.
    async fn open(self: Arc<Self>, path: String, content: Content) -> Result<(), Self::Error>;

    /// What failed while content was served, checked once every record is
    /// stored: a failure here fails the backup.
    fn failure(&self) -> Option<String> {
        None
    }
}

/// Plakar ended the backup before it was complete.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum Ended {
    /// Plakar closed the `Import` call.
    #[error("Plakar ended the backup")]
    Import,
    /// Plakar stopped acknowledging records that are still unstored.
    #[error("Plakar ended the backup before storing {0}")]
    BeforeStoring(String),
}

/// One `Import` call: the records announced, and Plakar's acknowledgements.
///
/// Plakar acknowledges each record once it has stored it, and only then is
/// that record's content known to be complete. `finished` is sent only after
/// every acknowledgement; a failure ends the stream with an error instead of
/// `finished`, so that Plakar commits no snapshot.
pub struct ImportRun {
    acks: Streaming<ImportRequest>,
    tx: mpsc::Sender<Result<ImportResponse, Status>>,
    /// Records announced and not yet acknowledged.
    pending: BTreeSet<String>,
    /// What Plakar said it could not store: the path, and why.
    unstored: Vec<(String, String)>,
}

impl ImportRun {
    /// Sends a record, to be acknowledged before the backup can finish.
    pub async fn announce(&mut self, record: Record) -> Result<(), Ended> {
        self.pending.insert(record.pathname.clone());
        let msg = ImportResponse {
            record: Some(record),
            finished: false,
        };
        self.tx.send(Ok(msg)).await.map_err(|_| Ended::Import)?;
        self.take_arrived()
    }

    /// Takes the acknowledgements that have arrived, without waiting: while
    /// a source announces tens of thousands of records, neither they nor the
    /// records pending pile up beyond what Plakar has yet to store.
    fn take_arrived(&mut self) -> Result<(), Ended> {
        while let Some(ack) = self.acks.message().now_or_never() {
            match ack {
                Ok(Some(request)) => {
                    self.take(request);
                }
                Ok(None) | Err(_) => return Err(self.ended()),
            }
        }
        Ok(())
    }

    /// Runs `work` while taking Plakar's acknowledgements; `None` when the
    /// record at `path` was acknowledged before `work` was done (Plakar
    /// stored it without reading it).
    pub async fn unless_stored<T>(
        &mut self,
        path: &str,
        work: impl Future<Output = T>,
    ) -> Result<Option<T>, Ended> {
        if !self.pending.contains(path) {
            // Acknowledged already, as the records announced before it were.
            return Ok(None);
        }
        tokio::pin!(work);
        loop {
            tokio::select! {
                done = &mut work => return Ok(Some(done)),
                ack = self.acks.message() => match ack {
                    Ok(Some(request)) => {
                        if self.take(request).as_deref() == Some(path) {
                            return Ok(None);
                        }
                    }
                    Ok(None) | Err(_) => return Err(self.ended()),
                },
            }
        }
    }

    /// Waits until Plakar has acknowledged every record announced so far:
    /// each is then stored, its content read (or carried unread).
    pub async fn settle(&mut self) -> Result<(), Ended> {
        while !self.pending.is_empty() {
            match self.acks.message().await {
                Ok(Some(request)) => {
                    self.take(request);
                }
                Ok(None) | Err(_) => return Err(self.ended()),
            }
        }
        Ok(())
    }

    /// Whether Plakar said it could not store the record at `path`.
    pub fn refused(&self, path: &str) -> bool {
        self.unstored.iter().any(|(p, _)| p == path)
    }

    /// Notes one acknowledgement; the path it acknowledges.
    fn take(&mut self, request: ImportRequest) -> Option<String> {
        let result = request.result?;
        let path = result.header.map(|h| h.pathname).unwrap_or_default();
        self.pending.remove(&path);
        if !result.error.is_empty() {
            self.unstored.push((path.clone(), result.error));
        }
        Some(path)
    }

    fn ended(&self) -> Ended {
        // The first few: a direct copy can have thousands pending.
        const SHOWN: usize = 5;
        let mut named = self
            .pending
            .iter()
            .take(SHOWN)
            .cloned()
            .collect::<Vec<_>>()
            .join(", ");
        if self.pending.len() > SHOWN {
            named.push_str(&format!(" and {} more", self.pending.len() - SHOWN));
        }
        Ended::BeforeStoring(named)
    }

    /// Waits for every acknowledgement, then ends the call: `finished`, or
    /// the error that keeps Plakar from committing.
    async fn finish<S: Source>(mut self, name: &str, source: &S, imported: Result<(), Incomplete>) {
        let mut result = imported;
        while result.is_ok() && !self.pending.is_empty() {
            match self.acks.message().await {
                Ok(Some(request)) => {
                    self.take(request);
                }
                Ok(None) | Err(_) => result = Err(Incomplete::Ended(self.ended())),
            }
        }
        if result.is_ok() && !self.unstored.is_empty() {
            result = Err(Incomplete::Unstored(std::mem::take(&mut self.unstored)));
        }
        if let (Ok(()), Some(failure)) = (&result, source.failure()) {
            result = Err(Incomplete::Served(failure));
        }
        match result {
            Ok(()) => {
                let done = ImportResponse {
                    record: None,
                    finished: true,
                };
                if self.tx.send(Ok(done)).await.is_ok() {
                    // Read what is left until Plakar closes its side, then end with OK.
                    while let Ok(Some(_)) = self.acks.message().await {}
                }
            }
            Err(why) => {
                let message =
                    format!("{name}: the backup is incomplete and was not committed: {why}");
                tracing::error!("{message}");
                let _ = self.tx.send(Err(Status::aborted(message))).await;
            }
        }
    }
}

/// Why an import ends without `finished`, so that Plakar commits nothing;
/// put into words for the user only where it becomes a status.
enum Incomplete {
    /// The source's own error.
    Source(Box<dyn Failure>),
    /// A panic in the source.
    Panicked(guard::Panicked),
    /// Plakar ended the call before it had stored every record.
    Ended(Ended),
    /// The records Plakar said it could not store: each path, and Plakar's
    /// words.
    Unstored(Vec<(String, String)>),
    /// What the source found had failed while content was served
    /// ([`Source::failure`]).
    Served(String),
}

impl std::fmt::Display for Incomplete {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Incomplete::Source(e) => e.fmt(f),
            Incomplete::Panicked(p) => p.fmt(f),
            Incomplete::Ended(e) => e.fmt(f),
            Incomplete::Unstored(records) => {
                for (i, (path, error)) in records.iter().enumerate() {
                    if i > 0 {
                        f.write_str("; ")?;
                    }
                    write!(f, "Plakar could not store {path}: {error}")?;
                }
                Ok(())
            }
            Incomplete::Served(why) => f.write_str(why),
        }
    }
}

/// Where the content of one opened record goes, in chunks of at most
/// [`super::CHUNK_SIZE`].
#[derive(Debug, Clone)]
pub struct Content(mpsc::Sender<Result<OpenResponse, Status>>);

impl Content {
    /// Sends a chunk; false once Plakar has stopped reading.
    pub async fn send(&self, chunk: Bytes) -> bool {
        self.0.send(Ok(OpenResponse { chunk })).await.is_ok()
    }

    /// [`Content::send`] from a thread outside the runtime.
    pub fn blocking_send(&self, chunk: Bytes) -> bool {
        self.0.blocking_send(Ok(OpenResponse { chunk })).is_ok()
    }

    /// Ends the content with an error instead: Plakar reads it as incomplete.
    pub async fn fail(&self, message: String) {
        let _ = self.0.send(Err(Status::failed_precondition(message))).await;
    }

    /// Sends all of `bytes`, chunk by chunk.
    pub async fn send_all(&self, bytes: &[u8]) -> bool {
        for chunk in bytes.chunks(super::CHUNK_SIZE) {
            if !self.send(Bytes::copy_from_slice(chunk)).await {
                return false;
            }
        }
        true
    }
}

/// The gRPC importer service of a [`Source`].
#[derive(Debug)]
pub struct SourceService<S> {
    /// What the user calls the connector, the first words of its every message.
    name: &'static str,
    current: Slot<S>,
}

impl<S: Source> SourceService<S> {
    /// The service of a source the user calls `name`.
    pub fn new(name: &'static str) -> Self {
        SourceService {
            name,
            current: Slot::default(),
        }
    }

    /// The status Plakar shows for one of its errors.
    fn status(&self, error: &S::Error, code: Code) -> Status {
        Status::new(code, format!("{}: {error}", self.name))
    }
}

#[tonic::async_trait]
impl<S: Source> importer_server::Importer for SourceService<S> {
    async fn init(&self, request: Request<InitRequest>) -> Result<Response<InitResponse>, Status> {
        let source = guard::guarded(S::init(&request.into_inner().config))
            .await
            .map_err(|internal| Status::internal(format!("{}: {internal}", self.name)))?
            .map_err(|e| self.status(&e, e.code()))?;
        let response = InitResponse {
            origin: source.origin(),
            r#type: "postgresql".into(),
            root: "/".into(),
            flags: source.flags(),
        };
        self.current.set(source);
        Ok(Response::new(response))
    }

    async fn ping(&self, _: Request<PingRequest>) -> Result<Response<PingResponse>, Status> {
        let source = self.current.get()?;
        source
            .ping()
            .await
            .map_err(|e| self.status(&e, Code::Unavailable))?;
        Ok(Response::new(PingResponse {}))
    }

    type ImportStream = ResponseStream<ImportResponse>;

    async fn import(
        &self,
        request: Request<Streaming<ImportRequest>>,
    ) -> Result<Response<Self::ImportStream>, Status> {
        let source = self.current.get()?;
        let (tx, rx) = mpsc::channel(16);
        let mut run = ImportRun {
            acks: request.into_inner(),
            tx,
            pending: BTreeSet::new(),
            unstored: Vec::new(),
        };
        let name = self.name;
        tokio::spawn(async move {
            let imported = match guard::guarded(source.clone().import(&mut run)).await {
                Ok(imported) => {
                    imported.map_err(|e| Incomplete::Source(Box::new(e) as Box<dyn Failure>))
                }
                Err(internal) => Err(Incomplete::Panicked(internal)),
            };
            run.finish(name, &*source, imported).await;
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    type OpenStream = ResponseStream<OpenResponse>;

    async fn open(
        &self,
        request: Request<OpenRequest>,
    ) -> Result<Response<Self::OpenStream>, Status> {
        let source = self.current.get()?;
        let path = request
            .into_inner()
            .record
            .map(|r| r.pathname)
            .unwrap_or_default();
        let (tx, rx) = mpsc::channel(4);
        let name = self.name;
        tokio::spawn(async move {
            let status = match guard::guarded(source.open(path, Content(tx.clone()))).await {
                Ok(Ok(())) => return,
                Ok(Err(e)) => Status::new(e.code(), format!("{name}: {e}")),
                Err(internal) => Status::internal(format!("{name}: {internal}")),
            };
            let _ = tx.send(Err(status)).await;
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn close(&self, _: Request<CloseRequest>) -> Result<Response<CloseResponse>, Status> {
        self.current.clear();
        Ok(Response::new(CloseResponse {}))
    }
}
