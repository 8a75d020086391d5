//! The exporter side of the protocol, once for every destination connector:
//! `Init`, `Ping` and `Close`; `Export`'s packet loop (a record, its chunks,
//! an empty chunk at its end), one result per record, and the call's end,
//! which fails when any file failed so that `plakar restore` exits non-zero.
//! A connector implements [`Destination`] and [`Export`].

use std::collections::HashMap;
use std::sync::Arc;

use prost::bytes::Bytes;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Request, Response, Status, Streaming};

use super::connectors::{Record, Result as RecordResult};
use super::exporter::export_request::Packet;
use super::exporter::{
    exporter_server, CloseRequest, CloseResponse, ExportRequest, ExportResponse, InitRequest,
    InitResponse, PingRequest, PingResponse,
};
use super::{guard, Failure, ResponseStream, Slot};

/// A restore destination: what `Init` prepares.
#[tonic::async_trait]
pub trait Destination: Send + Sync + Sized + 'static {
    /// The connector's errors; they become a gRPC status only at this edge.
    type Error: Failure;
    /// One `Export` call.
    type Export: Export<Error = Self::Error>;

    /// Checks the configuration and the target; nothing is written yet.
    async fn init(config: &HashMap<String, String>) -> Result<Self, Self::Error>;

    /// Where the snapshot goes, as Plakar shows it.
    fn origin(&self) -> String;

    /// Checks that the target can still be reached.
    async fn ping(&self) -> Result<(), Self::Error>;

    /// Starts an `Export` call.
    fn export(self: Arc<Self>) -> Self::Export;
}

/// One `Export` call: what happens to each file of the snapshot.
#[tonic::async_trait]
pub trait Export: Send + 'static {
    /// The connector's errors.
    type Error: Failure;
    /// A file whose content is arriving.
    type File: Send;

    /// A new record. `Some` for a file whose content follows (or, without
    /// content, that [`Export::end`] finishes at once); `None` when its
    /// result is already sent. An error refuses the whole snapshot.
    async fn begin(
        &mut self,
        record: Record,
        results: &mut Results,
    ) -> Result<Option<Self::File>, Self::Error>;

    /// One chunk of the file's content.
    async fn write(&mut self, file: &mut Self::File, chunk: Bytes);

    /// The file's content is complete: finish it and send its result.
    async fn end(&mut self, file: Self::File, results: &mut Results);

    /// The file's content stopped before its end marker: send its failure.
    async fn cut(&mut self, file: Self::File, why: &str, results: &mut Results);

    /// After the last file; an error fails the restore.
    async fn finish(&mut self, results: &mut Results) -> Result<(), Self::Error>;
}

/// The results sent to Plakar, one per record, and the files that failed.
pub struct Results {
    name: &'static str,
    tx: mpsc::Sender<Result<ExportResponse, Status>>,
    failed: Vec<(String, String)>,
}

impl Results {
    /// Sends one file's result; Plakar needs the record, file info included, echoed back.
    pub async fn send<E: std::fmt::Display>(&mut self, record: &Record, result: Result<(), E>) {
        let error = match result {
            Ok(()) => String::new(),
            Err(e) => {
                let message = format!("{}: {}: {e}", self.name, record.pathname);
                tracing::error!("{message}");
                self.failed.push((record.pathname.clone(), e.to_string()));
                message
            }
        };
        let response = ExportResponse {
            result: Some(RecordResult {
                header: Some(record.clone()),
                error,
            }),
        };
        let _ = self.tx.send(Ok(response)).await;
    }

    /// Whether any file failed so far.
    pub fn any_failed(&self) -> bool {
        !self.failed.is_empty()
    }

    /// The message that ends a restore in which files failed: each file with
    /// the first of its errors; the whole detail is in its own result and the log.
    fn summary(&self) -> String {
        const SHORT: usize = 300;
        let files: Vec<String> = self
            .failed
            .iter()
            .map(|(path, error)| {
                let first = error.split("; ").next().unwrap_or(error);
                let mut short: String = first.chars().take(SHORT).collect();
                if short.len() < first.len() {
                    short.push('…');
                }
                format!("{path}: {short}")
            })
            .collect();
        format!(
            "{}: the restore failed for {} file{}: {}",
            self.name,
            self.failed.len(),
            if self.failed.len() == 1 { "" } else { "s" },
            files.join(" | ")
        )
    }
}

/// Reads what Plakar still sends, writing nothing, until it closes its side.
/// Plakar reports whichever fails first, sending or receiving: ending the call
/// while it still sends would show the user a bare EOF instead of the reason.
async fn drain(inbound: &mut Streaming<ExportRequest>) {
    while let Ok(Some(_)) = inbound.message().await {}
}

/// Runs one `Export` call to its end.
async fn run<R: Export>(
    name: &'static str,
    mut restore: R,
    mut inbound: Streaming<ExportRequest>,
    tx: mpsc::Sender<Result<ExportResponse, Status>>,
) {
    let mut results = Results {
        name,
        tx: tx.clone(),
        failed: Vec::new(),
    };
    let mut current: Option<R::File> = None;
    loop {
        let packet = match inbound.message().await {
            Ok(Some(ExportRequest { packet: Some(p) })) => p,
            Ok(Some(ExportRequest { packet: None })) => continue,
            Ok(None) => break,
            Err(status) => {
                // Plakar went away: whatever was running is killed when dropped.
                tracing::error!("{name}: the restore was interrupted: {}", status.message());
                return;
            }
        };
        match packet {
            Packet::Record(record) => {
                if let Some(unfinished) = current.take() {
                    restore
                        .cut(unfinished, "its content ended early", &mut results)
                        .await;
                }
                let has_content = record.has_reader;
                match restore.begin(record, &mut results).await {
                    Ok(Some(file)) if has_content => current = Some(file),
                    Ok(Some(file)) => restore.end(file, &mut results).await,
                    Ok(None) => {}
                    Err(refusal) => {
                        let message = format!("{name}: {refusal}");
                        tracing::error!("{message}");
                        drain(&mut inbound).await;
                        let _ = tx.send(Err(Status::new(refusal.code(), message))).await;
                        return;
                    }
                }
            }
            Packet::Chunk(chunk) if chunk.is_empty() => match current.take() {
                Some(file) => restore.end(file, &mut results).await,
                None => tracing::warn!("an end-of-file marker came without a file"),
            },
            Packet::Chunk(chunk) => match &mut current {
                Some(file) => restore.write(file, chunk).await,
                None => tracing::warn!("content came without a file; ignored"),
            },
        }
    }
    if let Some(unfinished) = current.take() {
        restore
            .cut(
                unfinished,
                "Plakar ended the restore before the end of this file",
                &mut results,
            )
            .await;
    }
    let finished = restore.finish(&mut results).await;
    // The files that failed first, then what the destination made of it.
    let status = match (results.any_failed(), finished) {
        (true, Ok(())) => Some(Status::aborted(results.summary())),
        (true, Err(e)) => Some(Status::aborted(format!("{}; {e}", results.summary()))),
        (false, Err(e)) => Some(Status::new(Code::Aborted, format!("{name}: {e}"))),
        (false, Ok(())) => None,
    };
    if let Some(status) = status {
        tracing::error!("{}", status.message());
        let _ = tx.send(Err(status)).await;
    }
}

/// The gRPC exporter service of a [`Destination`].
#[derive(Debug)]
pub struct DestinationService<D> {
    /// What the user calls the connector, the first words of its every message.
    name: &'static str,
    current: Slot<D>,
}

impl<D> DestinationService<D> {
    /// The service of a destination the user calls `name`.
    pub fn new(name: &'static str) -> Self {
        DestinationService {
            name,
            current: Slot::default(),
        }
    }
}

#[tonic::async_trait]
impl<D: Destination> exporter_server::Exporter for DestinationService<D> {
    async fn init(&self, request: Request<InitRequest>) -> Result<Response<InitResponse>, Status> {
        let destination = guard::guarded(D::init(&request.into_inner().config))
            .await
            .map_err(|internal| Status::internal(format!("{}: {internal}", self.name)))?
            .map_err(|e| Status::new(e.code(), format!("{}: {e}", self.name)))?;
        let response = InitResponse {
            origin: destination.origin(),
            r#type: "postgresql".into(),
            root: "/".into(),
            flags: 0,
        };
        self.current.set(destination);
        Ok(Response::new(response))
    }

    async fn ping(&self, _: Request<PingRequest>) -> Result<Response<PingResponse>, Status> {
        let destination = self.current.get()?;
        destination
            .ping()
            .await
            .map_err(|e| Status::unavailable(format!("{}: {e}", self.name)))?;
        Ok(Response::new(PingResponse {}))
    }

    type ExportStream = ResponseStream<ExportResponse>;

    async fn export(
        &self,
        request: Request<Streaming<ExportRequest>>,
    ) -> Result<Response<Self::ExportStream>, Status> {
        let destination = self.current.get()?;
        let (tx, rx) = mpsc::channel(16);
        let restore = destination.export();
        let name = self.name;
        tokio::spawn(async move {
            if let Err(internal) =
                guard::guarded(run(name, restore, request.into_inner(), tx.clone())).await
            {
                tracing::error!("{name}: {internal}");
                let _ = tx
                    .send(Err(Status::internal(format!("{name}: {internal}"))))
                    .await;
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn close(&self, _: Request<CloseRequest>) -> Result<Response<CloseResponse>, Status> {
        self.current.clear();
        Ok(Response::new(CloseResponse {}))
    }
}
