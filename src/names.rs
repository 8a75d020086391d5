//! Snapshot file names: what each record of a snapshot holds, and how a
//! database name becomes one path element and back.
//!
//! A database name may hold any character PostgreSQL allows. In its record
//! name `%`, `/`, `\` and control characters are percent-encoded (`%25`,
//! `%2F`, ...), and so is the first digit of a name that would otherwise look
//! like the numbered layout (`NNNNN-`). Everything else, spaces and non-ASCII
//! included, is kept as is, so `/my app.dump` is the database `my app`.

/// The manifest's record.
pub const MANIFEST: &str = "/manifest.json";
/// The roles and tablespaces (`pg_dumpall --globals-only`).
pub const GLOBALS: &str = "/globals.sql";
/// A whole cluster (`pg_dumpall`).
pub const ALL: &str = "/all.sql";
/// The numbered layout's globals, written by the other PostgreSQL integration.
pub const NUMBERED_GLOBALS: &str = "/00000-globals.sql";
/// A physical snapshot's list of tablespaces, sent before the data directory.
pub const TABLESPACES: &str = "/.tablespaces.json";
/// What a snapshot that carries its WAL holds and reaches, sent first.
pub const CHAIN: &str = "/.chain.json";
/// The base backups of a snapshot that carries its WAL, one directory each.
pub const BASES: &str = "/bases";
/// Its WAL: pieces and timeline history files.
pub const WAL: &str = "/wal";
/// Its runs' receipts.
pub const RECEIPTS: &str = "/receipt";
const DUMP_SUFFIX: &str = ".dump";

/// The top-level names of a PostgreSQL data directory: a record under one of
/// them comes from a physical backup, never from pg_dump.
const DATA_DIRECTORY_NAMES: &[&str] = &[
    "PG_VERSION",
    "backup_label",
    "backup_manifest",
    "base",
    "global",
    "pg_wal",
    "pg_xact",
    "pg_multixact",
    "pg_tblspc",
    "pg_commit_ts",
    "pg_logical",
    "pg_replslot",
    "pg_subtrans",
    "pg_twophase",
    "tablespace_map",
];

/// Whether a record belongs to a physical backup: a data directory, or a
/// snapshot that carries its WAL (`/.chain.json`, `/bases`, `/wal`, `/receipt`).
pub fn is_data_directory(path: &str) -> bool {
    let first = path.trim_start_matches('/').split('/').next().unwrap_or("");
    let under = |dir: &str| {
        path.strip_prefix(dir)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    };
    DATA_DIRECTORY_NAMES.contains(&first)
        || path == TABLESPACES
        || path == CHAIN
        || [BASES, WAL, RECEIPTS].iter().any(|d| under(d))
}

/// Whether a record is one only a logical backup (pg_dump, pg_dumpall) writes.
pub fn is_logical(path: &str) -> bool {
    matches!(
        classify(path),
        Ok(Entry::Database(_) | Entry::Globals | Entry::Cluster)
    )
}

/// What one record of a snapshot is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// The root directory.
    Root,
    /// `/manifest.json`.
    Manifest,
    /// `/globals.sql` or `/00000-globals.sql`.
    Globals,
    /// `/all.sql`.
    Cluster,
    /// A custom-format dump of the named database.
    Database(String),
}

/// A record name that names none of the above.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{path} is not a file this package restores (expected /manifest.json, /globals.sql, /all.sql or /<database>.dump)")]
pub struct UnknownFile {
    /// The record's path.
    pub path: String,
}

/// The record path of a database's dump.
pub fn dump_path(database: &str) -> String {
    let mut out = String::with_capacity(database.len() + 7);
    out.push('/');
    for (i, c) in database.chars().enumerate() {
        let numbered_look = i == 0 && looks_numbered(database);
        if numbered_look || matches!(c, '%' | '/' | '\\') || c.is_control() {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("%{b:02X}"));
            }
        } else {
            out.push(c);
        }
    }
    out.push_str(DUMP_SUFFIX);
    out
}

/// Reads a record path back into what it holds.
pub fn classify(path: &str) -> Result<Entry, UnknownFile> {
    let unknown = || UnknownFile {
        path: path.to_string(),
    };
    match path {
        "/" | "" => return Ok(Entry::Root),
        MANIFEST => return Ok(Entry::Manifest),
        GLOBALS | NUMBERED_GLOBALS => return Ok(Entry::Globals),
        ALL => return Ok(Entry::Cluster),
        _ => {}
    }
    let name = path.strip_prefix('/').ok_or_else(unknown)?;
    let stem = name.strip_suffix(DUMP_SUFFIX).ok_or_else(unknown)?;
    if stem.is_empty() || stem.contains('/') {
        return Err(unknown());
    }
    let stem = if looks_numbered(stem) {
        &stem[6..]
    } else {
        stem
    };
    let database = decode(stem).ok_or_else(unknown)?;
    if database.is_empty() {
        return Err(unknown());
    }
    Ok(Entry::Database(database))
}

/// Whether a name starts with five digits and a dash, as the numbered layout's do.
fn looks_numbered(name: &str) -> bool {
    let b = name.as_bytes();
    b.len() > 6 && b[..5].iter().all(u8::is_ascii_digit) && b[5] == b'-'
}

fn decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_names_stay_readable() {
        assert_eq!(dump_path("app"), "/app.dump");
        assert_eq!(dump_path("my app"), "/my app.dump");
        assert_eq!(dump_path("café-ü"), "/café-ü.dump");
        assert_eq!(dump_path("-leading"), "/-leading.dump");
    }

    #[test]
    fn separators_and_escapes_are_encoded() {
        assert_eq!(dump_path("a/b"), "/a%2Fb.dump");
        assert_eq!(dump_path("50%"), "/50%25.dump");
        assert_eq!(dump_path("tab\there"), "/tab%09here.dump");
        assert_eq!(dump_path("12345-x"), "/%312345-x.dump");
    }

    #[test]
    fn every_name_maps_back() {
        let names = [
            "app",
            "a/b",
            "50%",
            "it's \"quoted\"",
            "x=y z",
            "-h",
            "..",
            ".",
            "12345-x",
            "globals",
            "all",
            "manifest",
            "日本語",
            "back\\slash",
            "new\nline",
        ];
        for name in names {
            let path = dump_path(name);
            assert_eq!(path.matches('/').count(), 1, "{path}");
            assert_eq!(classify(&path), Ok(Entry::Database(name.into())), "{path}");
        }
    }

    #[test]
    fn fixed_files_and_numbered_layout() {
        assert_eq!(classify("/manifest.json"), Ok(Entry::Manifest));
        assert_eq!(classify("/globals.sql"), Ok(Entry::Globals));
        assert_eq!(classify("/00000-globals.sql"), Ok(Entry::Globals));
        assert_eq!(classify("/all.sql"), Ok(Entry::Cluster));
        assert_eq!(classify("/"), Ok(Entry::Root));
        assert_eq!(
            classify("/00003-my app.dump"),
            Ok(Entry::Database("my app".into()))
        );
    }

    #[test]
    fn a_data_directory_is_known_by_its_first_records() {
        for path in [
            "/.tablespaces.json",
            "/PG_VERSION",
            "/base/5/1",
            "/pg_tblspc/16384",
            "/.chain.json",
            "/bases/20261204T100000Z/PG_VERSION",
            "/wal/00000001-0000000003000000-0000000005000060",
        ] {
            assert!(is_data_directory(path), "{path}");
        }
        for path in [
            "/manifest.json",
            "/app.dump",
            "/.tablespaces.json.bak",
            "/walrus.dump",
        ] {
            assert!(!is_data_directory(path), "{path}");
        }
    }

    #[test]
    fn other_files_are_refused() {
        for path in [
            "/notes.txt",
            "/.dump",
            "/a/b.dump",
            "/bad%zz.dump",
            "/x.sql",
        ] {
            let err = classify(path).unwrap_err();
            assert!(err.to_string().starts_with(path), "{err}");
        }
    }
}
