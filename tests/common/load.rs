//! Client programs against a test cluster, pgbench's write load, and the
//! invariants that load keeps.

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};

use super::{Cluster, PASSWORD, SUPERUSER};

/// The PostgreSQL 15 client programs (pgbench, pg_dump).
pub fn tool(name: &str) -> PathBuf {
    super::cluster::default_bin_dir().join(name)
}

/// A client program connected to `cluster` as the superuser, over the Unix socket.
pub fn client(cluster: &Cluster, program: &str) -> Command {
    let mut cmd = Command::new(tool(program));
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("PGPASSWORD", PASSWORD)
        .env("LC_ALL", "C.UTF-8")
        .arg("-h")
        .arg(cluster.socket_dir())
        .arg("-p")
        .arg(cluster.port.to_string())
        .arg("-U")
        .arg(SUPERUSER)
        .stdin(Stdio::null());
    cmd
}

/// Runs a command to completion and panics with its output unless it succeeded.
pub fn succeed(cmd: &mut Command, what: &str) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// pg_receivewal streaming `cluster`'s WAL into `dir` (through `slot` if
/// given), holding a WAL sender until dropped.
pub fn receiving_wal(cluster: &Cluster, dir: &std::path::Path, slot: Option<&str>) -> Background {
    let mut cmd = client(cluster, "pg_receivewal");
    cmd.arg("--no-loop");
    if let Some(slot) = slot {
        cmd.arg(format!("--slot={slot}"));
    }
    Background(
        cmd.arg("-D")
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("pg_receivewal starts"),
    )
}

/// A background process killed (and reaped) when dropped, even on a panic.
pub struct Background(pub Child);

impl Background {
    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.0.try_wait(), Ok(None))
    }

    /// Kills it and returns what it wrote on stderr.
    pub fn stop(mut self) -> String {
        let _ = self.0.kill();
        let _ = self.0.wait();
        let mut err = String::new();
        if let Some(mut pipe) = self.0.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut pipe, &mut err);
        }
        err
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// pgbench's four sums and the history's size, as one line of text.
pub fn pgbench_sums(cluster: &Cluster, db: &str) -> (i64, i64, i64, i64, i64) {
    let line = cluster.sql(
        db,
        "SELECT (SELECT coalesce(sum(abalance), 0) FROM pgbench_accounts),
                (SELECT coalesce(sum(delta), 0) FROM pgbench_history),
                (SELECT coalesce(sum(bbalance), 0) FROM pgbench_branches),
                (SELECT coalesce(sum(tbalance), 0) FROM pgbench_tellers),
                (SELECT count(*) FROM pgbench_history)",
    );
    let v: Vec<i64> = line
        .split('|')
        .map(|s| {
            s.parse()
                .unwrap_or_else(|e| panic!("{s:?} in {line:?}: {e}"))
        })
        .collect();
    (v[0], v[1], v[2], v[3], v[4])
}

/// pgbench's tables in `db` (scale 5), and two clients writing to them for
/// up to five minutes, until the returned process is stopped or dropped;
/// returns once the first transactions are in.
pub fn pgbench_writing(cluster: &Cluster, db: &str) -> Background {
    succeed(
        client(cluster, "pgbench").args(["-i", "-s", "5", "-q", db]),
        "pgbench -i",
    );
    let mut load = Background(
        client(cluster, "pgbench")
            .args(["-c", "2", "-T", "300", db])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("pgbench starts"),
    );
    super::caught::wait_until(
        std::time::Duration::from_secs(30),
        "pgbench to write",
        || {
            let wrote = cluster.sql(db, "SELECT count(*) FROM pgbench_history") != "0";
            assert!(wrote || load.running(), "pgbench ended before writing");
            wrote
        },
    );
    load
}

/// Panics unless `db` holds pgbench history and keeps pgbench's invariant:
/// the sums of accounts, history, branches and tellers agree.
pub fn assert_pgbench_consistent(cluster: &Cluster, db: &str) {
    let (a, h, b, t, n) = pgbench_sums(cluster, db);
    assert!(n > 0, "no pgbench history in {db}");
    assert!(
        a == h && h == b && b == t,
        "accounts {a}, history {h}, branches {b}, tellers {t}"
    );
}
