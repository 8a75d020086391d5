//! Plakar's side of the wire: the generated gRPC code, the stdin/stdout
//! transport, and the conversions between records and file metadata.
//! Nothing here knows about PostgreSQL.

pub mod record;
pub mod stdio;

/// The `plakar.*` proto packages; module paths mirror package names so the
/// generated code's cross-references resolve.
pub mod plakar {
    /// Messages shared by both services (`plakar.connectors`).
    pub mod connectors {
        tonic::include_proto!("plakar.connectors");
    }

    /// The exporter service (`plakar.exporter`).
    #[allow(clippy::large_enum_variant)]
    pub mod exporter {
        tonic::include_proto!("plakar.exporter");
    }
}

/// The importer service (`importer`).
pub mod importer {
    tonic::include_proto!("importer");
}

pub use plakar::{connectors, exporter};

/// Location flags returned by `Init` (bits of Plakar's `location.Flags`).
pub mod flags {
    /// The source can be read only once (it runs a dump).
    pub const STREAM: u32 = 4;
}

/// The stream a server-streaming call answers with.
pub type ResponseStream<T> =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<T, tonic::Status>> + Send>>;

/// The largest chunk of file content sent in one message (Plakar's own size).
pub const CHUNK_SIZE: usize = 1024 * 1024;
