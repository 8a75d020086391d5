//! Progress lines on stderr: one when a file starts, one when it ends.

use std::time::{Duration, Instant};

/// Measures one file's transfer.
#[derive(Debug)]
pub struct Progress {
    what: &'static str,
    path: String,
    started: Instant,
    /// Bytes moved so far.
    pub bytes: u64,
}

impl Progress {
    /// Logs the start of a file; `what` is `backup` or `restore`.
    pub fn start(what: &'static str, path: &str) -> Progress {
        tracing::info!("{what} {path}: started");
        Progress {
            what,
            path: path.to_string(),
            started: Instant::now(),
            bytes: 0,
        }
    }

    /// Logs the end of a file, with size, duration and throughput.
    pub fn done(&self) {
        let elapsed = self.started.elapsed();
        tracing::info!(
            "{} {}: done, {} in {} ({}/s)",
            self.what,
            self.path,
            size(self.bytes),
            duration(elapsed),
            size((self.bytes as f64 / elapsed.as_secs_f64().max(1e-3)) as u64)
        );
    }

    /// Logs a failed file.
    pub fn failed(&self, why: impl std::fmt::Display) {
        tracing::error!(
            "{} {}: failed after {} and {}: {why}",
            self.what,
            self.path,
            size(self.bytes),
            duration(self.started.elapsed())
        );
    }
}

/// A byte count for humans.
pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

fn duration(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes_read_well() {
        assert_eq!(super::size(12), "12 B");
        assert_eq!(super::size(1536), "1.5 KiB");
        assert_eq!(super::size(5 * 1024 * 1024 * 1024), "5.0 GiB");
    }
}
