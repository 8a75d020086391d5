//! Catching a tool in the act: a dump is made to wait on a table lock that
//! another session holds, so that a fault lands while it surely runs; waiting
//! for a condition with a deadline; and finding the plugin's processes from
//! outside.

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use super::{Cluster, PASSWORD, SUPERUSER};

/// A session holding an exclusive lock on `items` until dropped.
pub struct Lock {
    session: Child,
    /// Ends the server side of the session: killing psql alone would leave
    /// its backend holding the lock until pg_sleep ends.
    release: std::process::Command,
}

impl Lock {
    pub fn take(cluster: &Cluster, db: &str) -> Lock {
        let child = cluster
            .psql_command(
                SUPERUSER,
                PASSWORD,
                db,
                "BEGIN; LOCK TABLE items IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(120);",
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let held =
            "FROM pg_locks WHERE mode = 'AccessExclusiveLock' AND relation = 'items'::regclass";
        let mut release = cluster.psql_command(
            SUPERUSER,
            PASSWORD,
            db,
            &format!("SELECT pg_terminate_backend(pid) {held}"),
        );
        release.stdout(Stdio::null()).stderr(Stdio::null());
        let lock = Lock {
            session: child,
            release,
        };
        wait_for(cluster, db, &format!("SELECT count(*) {held}"));
        lock
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        let _ = self.release.status();
        let _ = self.session.kill();
        let _ = self.session.wait();
    }
}

/// Polls `done` every 50 ms until it holds; panics, naming `what`, after `within`.
pub fn wait_until(within: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Polls a count query until it is positive.
pub fn wait_for(cluster: &Cluster, db: &str, sql: &str) {
    wait_until(Duration::from_secs(30), sql, || cluster.sql(db, sql) != "0");
}

/// Waits until one of the plugin's tools waits on the lock in a statement
/// starting with `statement` (the manifest's own queries give up after their
/// lock_timeout).
pub fn wait_for_blocked_tool(cluster: &Cluster, statement: &str) {
    wait_for(
        cluster,
        "postgres",
        &format!(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'plakar-postgresql' AND wait_event_type = 'Lock' AND query ILIKE '{statement}%'"
        ),
    );
}

/// The parent of a process.
pub fn parent(pid: i32) -> i32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // The command name may hold spaces: fields start after its closing parenthesis.
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    after.split(' ').nth(1).unwrap().parse().unwrap()
}

/// Processes whose command line starts with `program` and holds `needle`.
pub fn processes(program: &str, needle: &str) -> Vec<i32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|&b| b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if args.first().is_some_and(|a| a.ends_with(program))
            && args.iter().any(|a| a.contains(needle))
        {
            found.push(pid);
        }
    }
    found
}

/// pg_dump processes of the plugin dumping `db`.
pub fn pg_dumps(db: &str) -> Vec<i32> {
    processes("pg_dump", &format!("--dbname=dbname='{db}'"))
}

pub fn kill(pid: i32) {
    // SAFETY: sending a signal to a pid we just found.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
    }
}
