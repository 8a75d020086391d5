//! `/.tablespaces.json`: the tablespaces of a physical snapshot, by OID, with
//! their names and original directories.
//!
//! Plakar restores a snapshot in path order, and this name sorts before every
//! name a data directory holds, so the destination knows where each
//! tablespace goes, and refuses a directory that is not empty, before it has
//! written anything. `/manifest.json` names them too, but it sorts after
//! `/base`. A snapshot of a cluster without tablespaces has no such record.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The record's path.
pub use crate::names::TABLESPACES as RECORD;

/// A tablespace outside the data directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tablespace {
    /// Its OID: its files are the records under `/pg_tblspc/<oid>`.
    pub oid: u32,
    /// Its name, which `tablespace_mapping` may use instead of the OID.
    pub name: String,
    /// The directory it had on the server that was backed up.
    pub location: PathBuf,
}

/// The record's contents.
#[derive(Debug, Serialize, Deserialize)]
struct List {
    tablespaces: Vec<Tablespace>,
}

/// The record's bytes for these tablespaces.
pub fn to_json(tablespaces: &[Tablespace]) -> Vec<u8> {
    let list = List {
        tablespaces: tablespaces.to_vec(),
    };
    let mut bytes = serde_json::to_vec_pretty(&list).expect("plain data serializes");
    bytes.push(b'\n');
    bytes
}

/// Reads the record back.
pub fn parse(bytes: &[u8]) -> Result<Vec<Tablespace>, serde_json::Error> {
    serde_json::from_slice::<List>(bytes).map(|l| l.tablespaces)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_record_reads_back_what_was_written() {
        let list = vec![Tablespace {
            oid: 16384,
            name: "tables".into(),
            location: "/srv/pg/tables".into(),
        }];
        assert_eq!(parse(&to_json(&list)).unwrap(), list);
    }

    #[test]
    fn the_record_sorts_before_every_name_of_a_data_directory() {
        // Plakar compares paths of the same depth as byte strings.
        for name in [
            "/PG_VERSION",
            "/backup_label",
            "/base",
            "/global",
            "/manifest.json",
        ] {
            assert!(RECORD < name, "{RECORD} sorts after {name}");
        }
    }
}
