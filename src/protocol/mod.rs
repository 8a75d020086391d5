//! Plakar's side of the wire: the generated gRPC code, the stdin/stdout
//! transport, the conversions between records and file metadata, and the
//! two sides every connector shares ([`source`], [`destination`]).
//! Nothing here knows about PostgreSQL.

pub mod destination;
pub mod guard;
pub mod in_order;
pub mod record;
pub mod server;
mod slot;
pub mod source;
pub mod stdio;

pub use slot::Slot;

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

/// An error a connector reports to Plakar: its message is what the user
/// reads; its code is the gRPC status code it travels with.
pub trait Failure: std::fmt::Display + Send + Sync + 'static {
    /// The status code, when the call itself does not decide it.
    fn code(&self) -> tonic::Code {
        tonic::Code::FailedPrecondition
    }
}
