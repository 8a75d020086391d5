//! Every connector this program serves, in one table: `main` takes its
//! argument words and its service from it, and the tests check
//! `manifest.yaml`, the validators, the README and the man page against it.

use std::sync::LazyLock;

use crate::logical::backup::options::SOURCE_OPTIONS;
use crate::logical::backup::Backup;
use crate::logical::restore::options::DESTINATION_OPTIONS;
use crate::logical::restore::Restore;
use crate::options::Table;
use crate::physical::options::{PHYSICAL_DESTINATION_OPTIONS, PHYSICAL_SOURCE_OPTIONS};
use crate::physical::{PhysicalBackup, PhysicalDestination};
use crate::protocol::server::{self, Service};

/// Which side of Plakar a connector serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// An importer: `plakar source add`, `plakar backup`.
    Source,
    /// An exporter: `plakar destination add`, `plakar restore -to`.
    Destination,
}

/// One connector: how Plakar starts it and what it accepts.
#[derive(Debug)]
pub struct Connector {
    /// The argument Plakar passes (`args` in manifest.yaml).
    pub role: &'static str,
    /// What the user calls it: the first words of its every message.
    pub name: &'static str,
    /// Importer or exporter.
    pub side: Side,
    /// The URI scheme it serves (`protocols` in manifest.yaml).
    pub scheme: &'static str,
    /// One line for `--help`.
    pub summary: &'static str,
    /// Its options.
    pub options: &'static LazyLock<Table>,
    /// Starts its gRPC service.
    pub service: Service,
}

impl Connector {
    /// The validator file manifest.yaml names for it.
    pub fn validator(&self) -> String {
        format!("postgresql-{}.json", self.role)
    }
}

/// Every connector, in the order manifest.yaml lists them.
pub static CONNECTORS: [Connector; 4] = [
    Connector {
        role: "importer",
        name: "postgresql source",
        side: Side::Source,
        scheme: "postgres",
        summary: "serve the backup source (postgres:// in `plakar source add`)",
        options: &SOURCE_OPTIONS,
        service: server::source::<Backup>,
    },
    Connector {
        role: "exporter",
        name: "postgresql destination",
        side: Side::Destination,
        scheme: "postgres",
        summary: "serve the restore destination (`plakar destination add`)",
        options: &DESTINATION_OPTIONS,
        service: server::destination::<Restore>,
    },
    Connector {
        role: "physical-importer",
        name: "postgresql physical source",
        side: Side::Source,
        scheme: "postgres+bin",
        summary: "serve the physical backup source (postgres+bin://)",
        options: &PHYSICAL_SOURCE_OPTIONS,
        service: server::source::<PhysicalBackup>,
    },
    Connector {
        role: "physical-exporter",
        name: "postgresql physical destination",
        side: Side::Destination,
        scheme: "postgres+bin",
        summary: "serve the physical restore destination (postgres+bin:///dir)",
        options: &PHYSICAL_DESTINATION_OPTIONS,
        service: server::destination::<PhysicalDestination>,
    },
];

/// The connector Plakar starts with this argument.
pub fn by_role(role: &str) -> Option<&'static Connector> {
    CONNECTORS.iter().find(|c| c.role == role)
}
