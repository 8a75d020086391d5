//! Starts the gRPC server for one connector on stdin/stdout.

use std::time::Duration;

use tonic::transport::Server;

use crate::backup::Importer;
use crate::physical::{PhysicalExporter, PhysicalImporter};
use crate::protocol::exporter::exporter_server::ExporterServer;
use crate::protocol::importer::importer_server::ImporterServer;
use crate::protocol::stdio;
use crate::restore::Exporter;

/// Which connector this process serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `postgresql importer`: the backup source.
    Importer,
    /// `postgresql exporter`: the restore destination.
    Exporter,
    /// `postgresql physical-importer`: the `postgres+bin://` source.
    PhysicalImporter,
    /// `postgresql physical-exporter`: the `postgres+bin://` destination.
    PhysicalExporter,
}

/// Plakar's own limit is 4 MiB per message; accept up to that, send 1 MiB chunks.
const MAX_MESSAGE: usize = 4 * 1024 * 1024;

/// Serves one connector until Plakar closes stdin.
pub async fn run(role: Role) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let mut builder = Server::builder()
        // Large windows keep a 1 MiB chunk stream flowing without a round trip per chunk.
        .initial_stream_window_size(Some(8 * 1024 * 1024))
        .initial_connection_window_size(Some(16 * 1024 * 1024))
        .http2_keepalive_interval(None)
        .tcp_nodelay(false)
        .timeout(Duration::from_secs(7 * 24 * 3600));
    let router = match role {
        Role::Importer => builder.add_service(
            ImporterServer::new(Importer::default())
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE),
        ),
        Role::Exporter => builder.add_service(
            ExporterServer::new(Exporter::default())
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE),
        ),
        Role::PhysicalImporter => builder.add_service(
            ImporterServer::new(PhysicalImporter::default())
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE),
        ),
        Role::PhysicalExporter => builder.add_service(
            ExporterServer::new(PhysicalExporter::default())
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE),
        ),
    };
    stdio::serve(router).await
}
