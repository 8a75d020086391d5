//! The check of a restored data directory against its `backup_manifest`.
//!
//! The CRC-32C of every file is computed as the file is written (see
//! [`super::out`]) and compared here with the manifest's, so that no file is
//! read back; `pg_verifybackup --skip-checksums` checks the rest: the
//! manifest's own checksum, every file there with its size and nothing
//! more, and the WAL from the backup's start to its stop (parsed by
//! pg_waldump). A manifest holding a checksum this cannot compare (another
//! algorithm, an encoded path, a file this restore did not write) is left
//! whole to `pg_verifybackup`, which then reads every file again.

use std::borrow::Cow;
use std::collections::HashMap;
use std::ffi::OsString;
use std::path::Path;

use serde::Deserialize;

use super::out::Written;
use crate::physical::error::{ChecksumMismatch, Error, VerifyError};
use crate::physical::options::PhysicalDestination;
use crate::postgres::tools::{Tool, Toolbox};

/// What each file of the data directory received, by its path there
/// (`base/5/1259`), as `backup_manifest` names it.
pub type Sums = HashMap<Box<str>, Written>;

/// The part of `backup_manifest` compared here.
#[derive(Deserialize)]
struct Manifest<'a> {
    #[serde(rename = "Files", borrow)]
    files: Vec<Entry<'a>>,
}

#[derive(Deserialize)]
struct Entry<'a> {
    #[serde(rename = "Path", borrow, default)]
    path: Option<Cow<'a, str>>,
    #[serde(rename = "Checksum-Algorithm", borrow, default)]
    algorithm: Option<Cow<'a, str>>,
    #[serde(rename = "Checksum", borrow, default)]
    checksum: Option<Cow<'a, str>>,
}

/// What comparing the written files with `backup_manifest` found.
#[derive(Debug, PartialEq, Eq)]
enum Compared {
    /// Every checksum of the manifest was compared: those that differ.
    Every(Vec<ChecksumMismatch>),
    /// Some could not be, for this reason: pg_verifybackup reads the files.
    Not(String),
}

/// Compares each checksum of `manifest` with what its file received.
fn compare(manifest: &[u8], sums: &Sums) -> Compared {
    let manifest: Manifest = match serde_json::from_slice(manifest) {
        Ok(m) => m,
        Err(e) => return Compared::Not(format!("backup_manifest cannot be read here: {e}")),
    };
    let mut differ = Vec::new();
    for entry in &manifest.files {
        let (algorithm, expected) = match (&entry.algorithm, &entry.checksum) {
            (None, _) | (_, None) => continue,
            (Some(a), _) if a.eq_ignore_ascii_case("NONE") => continue,
            (Some(a), Some(c)) => (a, c),
        };
        let Some(path) = &entry.path else {
            return Compared::Not("backup_manifest names a file by its encoded path".into());
        };
        if !algorithm.eq_ignore_ascii_case("CRC32C") {
            return Compared::Not(format!(
                "backup_manifest gives {path} a {algorithm} checksum"
            ));
        }
        let Some(written) = sums.get(path.as_ref()) else {
            return Compared::Not(format!("{path} was not written by this restore"));
        };
        // PostgreSQL writes the CRC's bytes as they lie in a little-endian memory.
        let found = format!("{:08x}", written.crc.swap_bytes());
        if !found.eq_ignore_ascii_case(expected) {
            differ.push(ChecksumMismatch {
                path: path.to_string(),
                expected: expected.to_string(),
                found,
            });
        }
    }
    Compared::Every(differ)
}

/// Checks the restored directory against its `backup_manifest`: the
/// checksums of `sums` here, the rest with pg_verifybackup.
pub async fn verify(config: &PhysicalDestination, sums: &Sums) -> Result<(), Error> {
    let dir = &config.directory;
    let compared = match std::fs::read(dir.join("backup_manifest")) {
        Ok(bytes) => compare(&bytes, sums),
        Err(e) => Compared::Not(format!("backup_manifest cannot be read here: {e}")),
    };
    let version =
        std::fs::read_to_string(dir.join("PG_VERSION")).map_err(VerifyError::NoVersion)?;
    let major: u32 = version
        .trim()
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .ok_or_else(|| VerifyError::BadVersion(version.trim().to_string()))?;
    let pg_bin_dir = config.pg_bin_dir.as_deref();
    let mut args: Vec<OsString> = vec!["--quiet".into()];
    match &compared {
        Compared::Every(_) => args.push("--skip-checksums".into()),
        Compared::Not(why) => {
            tracing::info!(
                "pg_verifybackup reads every restored file again for its checksum: {why}"
            )
        }
    }
    // pg_waldump must read the WAL of its own major version; without one, the
    // files are verified and the WAL is only checked to be present.
    let toolbox = match Toolbox::of_major(pg_bin_dir, major, Tool::PgVerifybackup).await {
        Some(tb)
            if tb
                .path(Tool::PgVerifybackup)
                .with_file_name("pg_waldump")
                .is_file() =>
        {
            tb
        }
        found => {
            let tb = match found {
                Some(tb) => tb,
                None => newest_verifier(pg_bin_dir)
                    .await
                    .ok_or(VerifyError::NoVerifier { major })?,
            };
            tracing::warn!(
                "no pg_waldump of PostgreSQL {major} here: the WAL in pg_wal is not parsed (pg_verifybackup --no-parse-wal), only the files are verified"
            );
            args.push("--no-parse-wal".into());
            tb
        }
    };
    args.push(dir.as_os_str().to_os_string());
    let outcome = toolbox
        .spawn_local(Tool::PgVerifybackup, &args)?
        .finish()
        .await;
    if let Some(failure) = outcome.failed() {
        return Err(VerifyError::Mismatch {
            dir: dir.clone(),
            failure: Box::new(failure),
        }
        .into());
    }
    match compared {
        Compared::Every(differ) if !differ.is_empty() => Err(VerifyError::Checksums {
            dir: dir.clone(),
            files: differ,
        }
        .into()),
        _ => {
            tracing::info!(
                "pg_verifybackup: {} matches its backup_manifest; start it with: pg_ctl -D {} start",
                dir.display(),
                dir.display()
            );
            if dir.join("standby.signal").exists() {
                tracing::info!(
                    "{} is the copy of a standby and holds its standby.signal: started as it is, it is a standby again, replaying from the primary that primary_conninfo names; remove standby.signal first to start it as a server of its own",
                    dir.display()
                );
            }
            Ok(())
        }
    }
}

/// Any pg_verifybackup (PostgreSQL 13 and later), newest first.
async fn newest_verifier(pg_bin_dir: Option<&Path>) -> Option<Toolbox> {
    for major in (13..=30).rev() {
        if let Some(tb) = Toolbox::of_major(pg_bin_dir, major, Tool::PgVerifybackup).await {
            return Some(tb);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sums(files: &[(&str, &[u8])]) -> Sums {
        files
            .iter()
            .map(|(path, bytes)| {
                let written = Written {
                    size: bytes.len() as u64,
                    crc: crc32c::crc32c(bytes),
                };
                (Box::from(*path), written)
            })
            .collect()
    }

    fn manifest(entries: &[&str]) -> Vec<u8> {
        format!(
            "{{ \"PostgreSQL-Backup-Manifest-Version\": 1,\n\"Files\": [\n{}\n],\n\"WAL-Ranges\": [],\n\"Manifest-Checksum\": \"00\"}}\n",
            entries.join(",\n")
        )
        .into_bytes()
    }

    fn entry(path: &str, bytes: &[u8]) -> String {
        format!(
            "{{ \"Path\": \"{path}\", \"Size\": {}, \"Last-Modified\": \"2026-12-06 00:00:00 GMT\", \"Checksum-Algorithm\": \"CRC32C\", \"Checksum\": \"{:08x}\" }}",
            bytes.len(),
            crc32c::crc32c(bytes).swap_bytes()
        )
    }

    #[test]
    fn every_checksum_is_compared_and_a_file_that_differs_is_named() {
        let written = sums(&[("PG_VERSION", b"15\n"), ("base/5/1259", b"pages")]);
        let unsummed = "{ \"Path\": \"global/1\", \"Size\": 0, \"Last-Modified\": \"2026-12-06 00:00:00 GMT\" }";
        let good = manifest(&[
            &entry("PG_VERSION", b"15\n"),
            &entry("base/5/1259", b"pages"),
            unsummed,
        ]);
        assert_eq!(compare(&good, &written), Compared::Every(vec![]));

        let bad = manifest(&[
            &entry("PG_VERSION", b"15\n"),
            &entry("base/5/1259", b"pagez"),
        ]);
        let Compared::Every(differ) = compare(&bad, &written) else {
            panic!("not compared");
        };
        assert_eq!(differ.len(), 1);
        assert_eq!(differ[0].path, "base/5/1259");
        assert_eq!(
            differ[0].expected,
            format!("{:08x}", crc32c::crc32c(b"pagez").swap_bytes())
        );
    }

    #[test]
    fn a_checksum_that_cannot_be_compared_here_is_left_to_pg_verifybackup() {
        let written = sums(&[("PG_VERSION", b"15\n")]);
        let sha = "{ \"Path\": \"PG_VERSION\", \"Size\": 3, \"Last-Modified\": \"2026-12-06 00:00:00 GMT\", \"Checksum-Algorithm\": \"SHA256\", \"Checksum\": \"ab\" }";
        let encoded = "{ \"Encoded-Path\": \"50475f56\", \"Size\": 3, \"Last-Modified\": \"2026-12-06 00:00:00 GMT\", \"Checksum-Algorithm\": \"CRC32C\", \"Checksum\": \"ab\" }";
        let not_written = entry("base/1/1", b"x");
        for (manifest, why) in [
            (manifest(&[sha]), "SHA256 checksum"),
            (manifest(&[encoded]), "encoded path"),
            (manifest(&[&not_written]), "base/1/1 was not written"),
            (b"{ not json".to_vec(), "cannot be read"),
        ] {
            match compare(&manifest, &written) {
                Compared::Not(reason) => assert!(reason.contains(why), "{reason}"),
                other => panic!("{other:?} for {why}"),
            }
        }
    }
}
