//! Starts the gRPC server for one connector on stdin/stdout.

use std::time::Duration;

use tonic::transport::server::Router;
use tonic::transport::Server;

use crate::connectors::Connector;
use crate::protocol::destination::{Destination, DestinationService};
use crate::protocol::exporter::exporter_server::ExporterServer;
use crate::protocol::importer::importer_server::ImporterServer;
use crate::protocol::source::{Source, SourceService};
use crate::protocol::stdio;

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

/// Serves one connector until Plakar closes stdin.
pub async fn run(connector: &Connector) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let mut builder = Server::builder()
        // Large windows keep a 1 MiB chunk stream flowing without a round trip per chunk.
        .initial_stream_window_size(Some(8 * 1024 * 1024))
        .initial_connection_window_size(Some(16 * 1024 * 1024))
        .http2_keepalive_interval(None)
        .tcp_nodelay(false)
        .timeout(Duration::from_secs(7 * 24 * 3600));
    let router = (connector.service)(&mut builder, connector.name);
    stdio::serve(router).await
}
