//! Starts the gRPC server of one connector on stdin/stdout: the service of
//! a source or of a destination, named as the user calls it.

use std::time::Duration;

use tonic::transport::server::Router;
use tonic::transport::Server;

use super::destination::{Destination, DestinationService};
use super::exporter::exporter_server::ExporterServer;
use super::importer::importer_server::ImporterServer;
use super::source::{Source, SourceService};
use super::stdio;

/// Adds the service of a connector, named as the user calls it, to the server.
pub type Service = fn(&mut Server, &'static str) -> Router;

/// Plakar's own limit is 4 MiB per message; accept up to that, send 1 MiB chunks.
const MAX_MESSAGE: usize = 4 * 1024 * 1024;

/// The importer service of a source.
pub fn source<S: Source>(builder: &mut Server, name: &'static str) -> Router {
    builder.add_service(
        ImporterServer::new(SourceService::<S>::new(name))
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE),
    )
}

/// The exporter service of a destination.
pub fn destination<D: Destination>(builder: &mut Server, name: &'static str) -> Router {
    builder.add_service(
        ExporterServer::new(DestinationService::<D>::new(name))
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE),
    )
}

/// Serves one service, `name` in its messages, until Plakar closes stdin.
pub async fn run(
    service: Service,
    name: &'static str,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let mut builder = Server::builder()
        // Large windows keep a 1 MiB chunk stream flowing without a round trip per chunk.
        .initial_stream_window_size(Some(8 * 1024 * 1024))
        .initial_connection_window_size(Some(16 * 1024 * 1024))
        .http2_keepalive_interval(None)
        .tcp_nodelay(false)
        .timeout(Duration::from_secs(7 * 24 * 3600));
    let router = service(&mut builder, name);
    stdio::serve(router).await
}
