//! PostgreSQL's `backup_manifest`, as a direct copy writes it: each file's
//! path, size, modification time and CRC-32C, then the WAL range, then the
//! SHA-256 of all that. It is written a file at a time into a temporary file,
//! its digest computed as it goes, so that the manifest of a cluster of many
//! files is never held in memory.

use std::fs::File;
use std::io::{self, BufWriter, Seek, Write};
use std::time::{SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

use crate::postgres::manifest::WalRange;

/// A `backup_manifest` being written.
pub struct BackupManifest {
    out: BufWriter<File>,
    digest: Sha256,
    files: usize,
}

impl BackupManifest {
    /// Starts a manifest in a new temporary file: version 1, or from
    /// PostgreSQL 17 on version 2, which names the cluster's system
    /// identifier (`pg_verifybackup` checks it against the restored
    /// `pg_control`).
    pub fn create(system: Option<&str>) -> io::Result<BackupManifest> {
        let mut manifest = BackupManifest {
            out: BufWriter::with_capacity(64 * 1024, tempfile::tempfile()?),
            digest: Sha256::new(),
            files: 0,
        };
        match system {
            Some(id) => manifest.write(&format!(
                "{{ \"PostgreSQL-Backup-Manifest-Version\": 2,\n\"System-Identifier\": {id},\n\"Files\": [\n"
            ))?,
            None => {
                manifest.write("{ \"PostgreSQL-Backup-Manifest-Version\": 1,\n\"Files\": [\n")?
            }
        }
        Ok(manifest)
    }

    /// Lists one file, with its checksum when this copy or the previous one
    /// read it (a file without is checked for its size alone).
    pub fn file(
        &mut self,
        relative: &str,
        size: u64,
        modified: SystemTime,
        crc: Option<u32>,
    ) -> io::Result<()> {
        let mut line = String::with_capacity(relative.len() + 176);
        if self.files > 0 {
            line.push_str(",\n");
        }
        line.push_str(&format!(
            "{{ \"Path\": {}, \"Size\": {size}, \"Last-Modified\": \"{}\"",
            serde_json::to_string(relative).unwrap_or_default(),
            manifest_time(modified)
        ));
        if let Some(crc) = crc {
            // PostgreSQL prints the CRC's bytes as they lie in memory.
            let hex: String = crc
                .to_le_bytes()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            line.push_str(&format!(
                ", \"Checksum-Algorithm\": \"CRC32C\", \"Checksum\": \"{hex}\""
            ));
        }
        line.push_str(" }");
        self.files += 1;
        self.write(&line)
    }

    /// Ends the manifest with the WAL range and its digest; the file,
    /// positioned at its end, and its size.
    pub fn finish(mut self, wal: &WalRange) -> io::Result<(File, u64)> {
        let tail = format!(
            "{}],\n\"WAL-Ranges\": [\n{{ \"Timeline\": {}, \"Start-LSN\": \"{}\", \"End-LSN\": \"{}\" }}\n],\n",
            if self.files > 0 { "\n" } else { "" },
            wal.timeline,
            wal.start_lsn,
            wal.stop_lsn
        );
        self.write(&tail)?;
        let digest: String = self
            .digest
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        self.out
            .write_all(format!("\"Manifest-Checksum\": \"{digest}\"}}\n").as_bytes())?;
        let mut file = self.out.into_inner().map_err(|e| e.into_error())?;
        let size = file.stream_position()?;
        Ok((file, size))
    }

    fn write(&mut self, text: &str) -> io::Result<()> {
        self.digest.update(text.as_bytes());
        self.out.write_all(text.as_bytes())
    }
}

/// `2026-12-05 06:00:00 GMT`.
fn manifest_time(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs() as i64;
    let (days, rest) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} GMT",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, SeekFrom};
    use std::time::Duration;

    fn written(files: &[(&str, u64, Option<u32>)], system: Option<&str>) -> String {
        let range = WalRange {
            timeline: 1,
            start_lsn: "0/2000028".into(),
            stop_lsn: "0/2000100".into(),
        };
        let when = UNIX_EPOCH + Duration::from_secs(1_764_914_400);
        let mut manifest = BackupManifest::create(system).unwrap();
        for (path, size, crc) in files {
            manifest.file(path, *size, when, *crc).unwrap();
        }
        let (mut file, size) = manifest.finish(&range).unwrap();
        let mut text = String::new();
        file.seek(SeekFrom::Start(0)).unwrap();
        file.read_to_string(&mut text).unwrap();
        assert_eq!(text.len() as u64, size);
        text
    }

    fn digest_checks(text: &str) {
        let cut = text[..text.len() - 1].rfind('\n').unwrap() + 1;
        let digest: String = Sha256::digest(&text.as_bytes()[..cut])
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert!(
            text.ends_with(&format!("\"Manifest-Checksum\": \"{digest}\"}}\n")),
            "{text}"
        );
        serde_json::from_str::<serde_json::Value>(text).unwrap();
    }

    #[test]
    fn the_manifest_is_checksummed_as_postgresql_checks_it() {
        let crc = crc32c::crc32c(b"15\n");
        let files = [("PG_VERSION", 3, Some(crc)), ("base/1/1", 8192, None)];
        let text = written(&files, None);
        digest_checks(&text);
        assert!(
            text.contains("\"Last-Modified\": \"2025-12-05 06:00:00 GMT\""),
            "{text}"
        );
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["PostgreSQL-Backup-Manifest-Version"], 1);
        assert_eq!(
            v["Files"][0]["Checksum"],
            format!("{:08x}", crc.swap_bytes())
        );
        assert!(v["Files"][1].get("Checksum").is_none());
        let v2 = written(&files, Some("7441"));
        digest_checks(&v2);
        let v2: serde_json::Value = serde_json::from_str(&v2).unwrap();
        assert_eq!(v2["PostgreSQL-Backup-Manifest-Version"], 2);
        assert_eq!(v2["System-Identifier"], 7441);
        digest_checks(&written(&[], None));
    }
}
