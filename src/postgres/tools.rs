//! The PostgreSQL client tools: finding a version that suits the server, and
//! running them with a clean environment, no inherited stdout, and their
//! stderr collected for the user.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStderr, Command};
use tokio::task::JoinHandle;

use crate::postgres::connection::Connection;

/// One of the client programs the plugin runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    PgDump,
    PgDumpall,
    PgRestore,
    Psql,
    PgBasebackup,
    PgVerifybackup,
}

impl Tool {
    /// The program's file name.
    pub fn name(self) -> &'static str {
        match self {
            Tool::PgDump => "pg_dump",
            Tool::PgDumpall => "pg_dumpall",
            Tool::PgRestore => "pg_restore",
            Tool::Psql => "psql",
            Tool::PgBasebackup => "pg_basebackup",
            Tool::PgVerifybackup => "pg_verifybackup",
        }
    }
}

/// The tools one connector runs: the first is probed for the version that
/// decides, the others must be found beside it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kit {
    /// The tools, the deciding one first.
    pub tools: &'static [Tool],
    /// Whether tools older than the server are refused: a dump or a base
    /// backup of a newer server fails, a restore into one may work.
    pub strict: bool,
    /// What the tools do to a server, for the refusal of old ones.
    verb: &'static str,
}

impl Kit {
    /// The logical source: pg_dump, and pg_dumpall for the globals and whole clusters.
    pub const LOGICAL_BACKUP: Kit = Kit {
        tools: &[Tool::PgDump, Tool::PgDumpall],
        strict: true,
        verb: "dump",
    };
    /// The logical destination: pg_restore for dumps, psql for SQL scripts.
    pub const LOGICAL_RESTORE: Kit = Kit {
        tools: &[Tool::PgRestore, Tool::Psql],
        strict: false,
        verb: "restore into",
    };
    /// The physical source: pg_basebackup alone.
    pub const PHYSICAL_BACKUP: Kit = Kit {
        tools: &[Tool::PgBasebackup],
        strict: true,
        verb: "back up",
    };

    fn lead(self) -> Tool {
        self.tools[0]
    }
}

/// Errors finding or running a client tool.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error("{tool} was not found in pg_bin_dir {dir}")]
    NotInBinDir { tool: &'static str, dir: PathBuf },
    #[error("{tool} was not found on $PATH nor in the usual PostgreSQL install locations; install the PostgreSQL {major} client tools or set pg_bin_dir")]
    NotFound { tool: &'static str, major: u32 },
    #[error("{tool} was not found beside {beside} in {dir}; install the whole PostgreSQL client tools package there or set pg_bin_dir to a directory that has both")]
    NotBeside {
        tool: &'static str,
        beside: &'static str,
        dir: PathBuf,
    },
    #[error("the server runs PostgreSQL {server}, but the newest {tool} found is version {found} ({path}) and it cannot {verb} a newer server; install the PostgreSQL {server} client tools (or newer) or set pg_bin_dir to their directory")]
    TooOld {
        tool: &'static str,
        verb: &'static str,
        server: u32,
        found: u32,
        path: PathBuf,
    },
    #[error("cannot run {tool} ({path}): {source}")]
    Spawn {
        tool: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Where the client tools live, and their major version.
#[derive(Debug, Clone)]
pub struct Toolbox {
    /// The directory of the tools, or None for `$PATH`.
    dir: Option<PathBuf>,
    /// The major version of the kit's deciding tool.
    pub major: u32,
    /// The version line of the kit's deciding tool (pg_dump, pg_restore, pg_basebackup).
    pub version: String,
    /// Each tool's own version line, as `--version` prints it.
    versions: Vec<(Tool, String)>,
}

/// A tool found and asked for its version.
struct Probed {
    tool: Tool,
    path: PathBuf,
    major: u32,
    version: String,
}

/// The first major version whose dumps can carry planner statistics, and
/// whose server takes them (`pg_restore_relation_stats`).
pub const STATISTICS_MAJOR: u32 = 18;

/// Directories where PostgreSQL packages put their binaries, `{}` standing for the major version.
const INSTALL_PATTERNS: &[&str] = &[
    "/usr/lib/postgresql/{}/bin",
    "/usr/pgsql-{}/bin",
    "/usr/local/pgsql-{}/bin",
    "/opt/homebrew/opt/postgresql@{}/bin",
    "/usr/local/opt/postgresql@{}/bin",
    "/Library/PostgreSQL/{}/bin",
];

impl Toolbox {
    /// Finds the tools of `kit`, able to talk to a server of `server_major`:
    /// in `pg_bin_dir` when set, else on `$PATH`, else the newest suitable
    /// version in the usual locations. A strict kit refuses tools older than
    /// the server.
    pub async fn locate(
        conn: &Connection,
        server_major: u32,
        kit: Kit,
    ) -> Result<Toolbox, ToolError> {
        if let Some(dir) = &conn.pg_bin_dir {
            let found = probe_kit(kit, |tool| Some(dir.join(tool.name()))).await;
            let probed = found.map_err(|tool| match tool == kit.lead() {
                true => ToolError::NotInBinDir {
                    tool: tool.name(),
                    dir: dir.clone(),
                },
                false => ToolError::NotBeside {
                    tool: tool.name(),
                    beside: kit.lead().name(),
                    dir: dir.clone(),
                },
            })?;
            return Toolbox::checked(Some(dir.clone()), probed, server_major, kit);
        }
        let found_on_path = find_on_path(kit.lead().name());
        if found_on_path.as_deref().is_some_and(is_pg_wrapper) {
            // Debian's pg_wrapper, a Perl script that costs about 30 ms at every
            // run, runs the newest installed version when the host is explicit
            // (the tools always get PGHOST): run that version's own binaries.
            if let Some(found) = newest_installed(server_major, kit).await {
                return Ok(found);
            }
        }
        let on_path = match found_on_path {
            Some(_) => probe_kit(kit, find_on_path_of).await,
            None => Err(kit.lead()),
        };
        let on_path = match on_path {
            Ok(probed) if probed[0].major >= server_major => {
                return Ok(Toolbox::from_probes(None, probed));
            }
            other => other,
        };
        if let Some(found) = newest_installed(server_major, kit).await {
            tracing::info!(
                "using the PostgreSQL {} client tools in {} for a PostgreSQL {server_major} server",
                found.major,
                found.dir.as_deref().unwrap_or(Path::new("")).display()
            );
            return Ok(found);
        }
        match on_path {
            Ok(probed) => Toolbox::checked(None, probed, server_major, kit),
            Err(tool) => Err(ToolError::NotFound {
                tool: tool.name(),
                major: server_major,
            }),
        }
    }

    /// The toolbox of probed tools, the deciding one first.
    fn from_probes(dir: Option<PathBuf>, probed: Vec<Probed>) -> Toolbox {
        Toolbox {
            dir,
            major: probed[0].major,
            version: probed[0].version.clone(),
            versions: probed.into_iter().map(|p| (p.tool, p.version)).collect(),
        }
    }

    /// Probed tools as a toolbox, unless the kit is strict and they are
    /// older than the server.
    fn checked(
        dir: Option<PathBuf>,
        probed: Vec<Probed>,
        server_major: u32,
        kit: Kit,
    ) -> Result<Toolbox, ToolError> {
        let (found, path) = (probed[0].major, probed[0].path.clone());
        if found < server_major {
            if kit.strict {
                return Err(ToolError::TooOld {
                    tool: kit.lead().name(),
                    verb: kit.verb,
                    server: server_major,
                    found,
                    path,
                });
            }
            tracing::warn!(
                "the client tools are version {found} but the server runs PostgreSQL {server_major}; restoring may fail"
            );
        }
        Ok(Toolbox::from_probes(dir, probed))
    }

    /// The version line `tool --version` printed, for the tools this toolbox was made for.
    pub fn version_of(&self, tool: Tool) -> Option<&str> {
        self.versions
            .iter()
            .find(|(t, _)| *t == tool)
            .map(|(_, v)| v.as_str())
    }

    /// Client tools of exactly `major` (a restored data directory's version):
    /// `pg_bin_dir` when set, else the usual install locations, else `$PATH`.
    /// The probe is `probe_tool`, which must be part of that install.
    pub async fn of_major(
        pg_bin_dir: Option<&Path>,
        major: u32,
        probe_tool: Tool,
    ) -> Option<Toolbox> {
        let mut dirs: Vec<Option<PathBuf>> = Vec::new();
        match pg_bin_dir {
            Some(dir) => dirs.push(Some(dir.to_path_buf())),
            None => {
                dirs.extend(
                    INSTALL_PATTERNS
                        .iter()
                        .map(|p| Some(PathBuf::from(p.replace("{}", &major.to_string())))),
                );
                dirs.push(None);
            }
        }
        for dir in dirs {
            let path = match &dir {
                Some(d) => d.join(probe_tool.name()),
                None => find_on_path(probe_tool.name())?,
            };
            if let Some((found, version)) = probe(&path).await {
                if found == major {
                    return Some(Toolbox {
                        dir: dir.or_else(|| path.parent().map(Path::to_path_buf)),
                        major,
                        versions: vec![(probe_tool, version.clone())],
                        version,
                    });
                }
            }
        }
        None
    }

    /// Whether these tools carry planner statistics: pg_dump `--statistics`,
    /// pg_restore `--no-statistics` (PostgreSQL 18 and later).
    pub fn has_statistics(&self) -> bool {
        self.major >= STATISTICS_MAJOR
    }

    /// The path (or bare name, for `$PATH`) of a tool.
    pub fn path(&self, tool: Tool) -> PathBuf {
        match &self.dir {
            Some(dir) => dir.join(tool.name()),
            None => PathBuf::from(tool.name()),
        }
    }

    /// Starts a tool with the connection's environment, stderr collected, stdout and stdin as asked.
    pub fn spawn(
        &self,
        tool: Tool,
        conn: &Connection,
        args: &[OsString],
        stdin: Stdio,
        stdout: Stdio,
    ) -> Result<Running, ToolError> {
        self.spawn_with_env(tool, conn.tool_env(), args, stdin, stdout)
    }

    /// Starts a tool that reaches no server (pg_verifybackup): a clean environment but PATH.
    pub fn spawn_local(&self, tool: Tool, args: &[OsString]) -> Result<Running, ToolError> {
        let mut env = vec![(OsString::from("LC_ALL"), OsString::from("C.UTF-8"))];
        if let Some(path) = std::env::var_os("PATH") {
            env.push(("PATH".into(), path));
        }
        self.spawn_with_env(tool, env, args, Stdio::null(), Stdio::null())
    }

    fn spawn_with_env(
        &self,
        tool: Tool,
        env: Vec<(OsString, OsString)>,
        args: &[OsString],
        stdin: Stdio,
        stdout: Stdio,
    ) -> Result<Running, ToolError> {
        let path = self.path(tool);
        let mut cmd = Command::new(&path);
        cmd.args(args)
            .env_clear()
            .envs(env)
            .stdin(stdin)
            .stdout(stdout)
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        // SAFETY: prctl is async-signal-safe; it makes the kernel kill the tool if
        // the plugin dies, so a killed plugin never leaves a pg_dump behind.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut child = cmd.spawn().map_err(|source| ToolError::Spawn {
            tool: tool.name(),
            path: path.clone(),
            source,
        })?;
        tracing::debug!(
            "started {} (pid {:?}) with {:?}",
            tool.name(),
            child.id(),
            args
        );
        let stderr = child.stderr.take().expect("stderr is piped");
        Ok(Running {
            tool,
            child,
            stderr: tokio::spawn(collect_stderr(tool, stderr)),
        })
    }
}

/// A running client tool.
#[derive(Debug)]
pub struct Running {
    /// Which tool it is.
    pub tool: Tool,
    /// The process; dropping it kills the tool.
    pub child: Child,
    stderr: JoinHandle<Stderr>,
}

impl Running {
    /// Waits for the tool to end and says how it went.
    pub async fn finish(mut self) -> Outcome {
        let status = self.child.wait().await;
        let stderr = self.stderr.await.unwrap_or_default();
        Outcome {
            tool: self.tool,
            status,
            stderr,
        }
    }
}

/// What a tool wrote to stderr, kept within bounds.
#[derive(Debug, Default, Clone)]
pub struct Stderr {
    /// Lines that report an error (`ERROR:`, `FATAL:`, `error:`).
    pub errors: Vec<String>,
    /// How many such lines there were in all.
    pub error_count: usize,
    /// The last lines, whatever they say.
    pub tail: Vec<String>,
}

const KEEP_ERRORS: usize = 5;
const KEEP_TAIL: usize = 10;
const MAX_LINE: usize = 400;

impl Stderr {
    fn push(&mut self, line: String) {
        let line = if line.len() > MAX_LINE {
            let mut cut = MAX_LINE;
            while !line.is_char_boundary(cut) {
                cut -= 1;
            }
            format!("{}…", &line[..cut])
        } else {
            line
        };
        if is_error_line(&line) {
            self.error_count += 1;
            if self.errors.len() < KEEP_ERRORS {
                self.errors.push(line.clone());
            }
        }
        if self.tail.len() == KEEP_TAIL {
            self.tail.remove(0);
        }
        self.tail.push(line);
    }

    /// The most telling lines: the first errors, else the last lines.
    pub fn summary(&self) -> String {
        let lines = if self.errors.is_empty() {
            &self.tail
        } else {
            &self.errors
        };
        lines.join("; ")
    }
}

fn is_error_line(line: &str) -> bool {
    line.contains("ERROR:")
        || line.contains("FATAL:")
        || line.contains("error:")
        // pg_basebackup names the damaged file only in a warning.
        || line.contains("checksum verification failed")
}

async fn collect_stderr(tool: Tool, stderr: ChildStderr) -> Stderr {
    let mut lines = BufReader::new(stderr).lines();
    let mut out = Stderr::default();
    loop {
        match lines.next_line().await {
            Ok(Some(line)) => {
                if line.trim().is_empty() {
                    continue;
                }
                if is_error_line(&line) {
                    tracing::warn!("{}: {}", tool.name(), line);
                } else {
                    tracing::debug!("{}: {}", tool.name(), line);
                }
                out.push(line);
            }
            Ok(None) => break,
            Err(e) => {
                tracing::debug!("{}: stderr unreadable: {e}", tool.name());
                break;
            }
        }
    }
    out
}

/// How a tool ended.
#[derive(Debug)]
pub struct Outcome {
    /// Which tool it was.
    pub tool: Tool,
    /// Its exit status, or why it could not be waited for.
    pub status: std::io::Result<ExitStatus>,
    /// What it said on stderr.
    pub stderr: Stderr,
}

impl Outcome {
    /// True when the tool exited 0.
    pub fn success(&self) -> bool {
        matches!(&self.status, Ok(s) if s.success())
    }

    /// How the tool failed, typed, with its own words; None on success.
    pub fn failed(&self) -> Option<ToolFailure> {
        (!self.success()).then(|| self.report())
    }

    /// What the tool's run came to, typed, whether it succeeded or not (a
    /// tool can exit 0 and still report errors, as pg_restore does).
    pub fn report(&self) -> ToolFailure {
        let status = self.status.as_ref().ok().copied();
        let mut failure = ToolFailure {
            tool: self.tool.name(),
            status,
            errors: self.stderr.errors.clone(),
            error_count: self.stderr.error_count,
            sentence: String::new(),
        };
        failure.sentence = self.failure().unwrap_or_else(|| failure.ending());
        failure
    }

    /// A sentence saying how the tool failed, with its own words; None on success.
    pub fn failure(&self) -> Option<String> {
        use std::os::unix::process::ExitStatusExt;
        let how = match &self.status {
            Ok(s) if s.success() => return None,
            Ok(s) => match (s.code(), s.signal()) {
                (Some(code), _) => format!("exited with status {code}"),
                (None, Some(sig)) => format!("was killed by signal {sig}"),
                _ => "failed".to_string(),
            },
            Err(e) => format!("could not be waited for: {e}"),
        };
        let mut said = self.stderr.summary();
        // pg_dump gives the server's reason on a `detail:` line, which reads as an
        // error only when the server sent one (`FATAL: ...`); a connection that
        // just dropped would otherwise leave the user with "PQgetCopyData() failed".
        for line in &self.stderr.tail {
            if line.contains("detail: Error message from server:") && !said.contains(line.as_str())
            {
                said.push_str("; ");
                said.push_str(line);
            }
        }
        Some(if said.is_empty() {
            format!("{} {how}", self.tool.name())
        } else {
            format!("{} {how}: {said}", self.tool.name())
        })
    }
}

/// A client tool that ran and did not succeed: which, how it ended, and the
/// lines of its stderr that report an error. Displays as one sentence in the
/// tool's own words (`pg_dump exited with status 1: ...`).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{sentence}")]
pub struct ToolFailure {
    /// The tool's name.
    pub tool: &'static str,
    /// Its exit status; None when it could not be waited for.
    pub status: Option<ExitStatus>,
    /// The first lines of stderr that report an error.
    pub errors: Vec<String>,
    /// How many such lines there were in all.
    pub error_count: usize,
    sentence: String,
}

impl ToolFailure {
    /// True when the tool exited 0 (and failed only by what it reported).
    pub fn exited_zero(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }

    /// How it ended, as `pg_restore exited with status 1`.
    pub fn ending(&self) -> String {
        use std::os::unix::process::ExitStatusExt;
        let how = match self.status {
            Some(s) => match (s.code(), s.signal()) {
                (Some(code), _) => format!("exited with status {code}"),
                (None, Some(sig)) => format!("was killed by signal {sig}"),
                _ => "failed".to_string(),
            },
            None => "could not be waited for".to_string(),
        };
        format!("{} {how}", self.tool)
    }
}

/// Runs `<tool> --version` and reads the major version.
async fn probe(path: &Path) -> Option<(u32, String)> {
    let out = Command::new(path)
        .arg("--version")
        .env_clear()
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .await
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let line = String::from_utf8_lossy(&out.stdout).trim().to_string();
    Some((parse_major(&line)?, line))
}

/// The major version in a line such as `pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)`.
pub fn parse_major(line: &str) -> Option<u32> {
    let after = line.split(')').nth(1).unwrap_or(line);
    let word = after.split_whitespace().next()?;
    let digits: String = word.chars().take_while(|c| c.is_ascii_digit()).collect();
    digits.parse().ok()
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// Whether `path` is Debian's pg_wrapper (`/usr/bin/pg_dump` and the other
/// client tools are links to `/usr/share/postgresql-common/pg_wrapper`).
fn is_pg_wrapper(path: &Path) -> bool {
    std::fs::canonicalize(path).is_ok_and(|p| p.file_name().is_some_and(|n| n == "pg_wrapper"))
}

/// The newest install of at least `at_least` that has every tool of `kit`.
async fn newest_installed(at_least: u32, kit: Kit) -> Option<Toolbox> {
    for major in (at_least..=at_least + 10).rev() {
        for pattern in INSTALL_PATTERNS {
            let dir = PathBuf::from(pattern.replace("{}", &major.to_string()));
            if !kit.tools.iter().all(|t| dir.join(t.name()).is_file()) {
                continue;
            }
            if let Ok(probed) = probe_kit(kit, |tool| Some(dir.join(tool.name()))).await {
                if probed[0].major >= at_least {
                    return Some(Toolbox::from_probes(Some(dir), probed));
                }
            }
        }
    }
    None
}

/// Asks every tool of `kit` for its version, at the path `locate` gives it;
/// the first tool missing or mute is the error.
async fn probe_kit(
    kit: Kit,
    locate: impl Fn(Tool) -> Option<PathBuf>,
) -> Result<Vec<Probed>, Tool> {
    let asked = kit.tools.iter().map(|&tool| {
        let path = locate(tool);
        async move {
            let path = path.ok_or(tool)?;
            let (major, version) = probe(&path).await.ok_or(tool)?;
            Ok(Probed {
                tool,
                path,
                major,
                version,
            })
        }
    });
    futures::future::join_all(asked).await.into_iter().collect()
}

fn find_on_path_of(tool: Tool) -> Option<PathBuf> {
    find_on_path(tool.name())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn majors_are_read_from_version_lines() {
        assert_eq!(
            parse_major("pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)"),
            Some(15)
        );
        assert_eq!(parse_major("pg_dump (PostgreSQL) 18.1"), Some(18));
        assert_eq!(parse_major("pg_dump (PostgreSQL) 9.6.24"), Some(9));
        assert_eq!(parse_major("nonsense"), None);
    }

    #[test]
    fn failures_keep_the_servers_reason_once() {
        use std::os::unix::process::ExitStatusExt;
        let mut stderr = Stderr::default();
        for line in [
            "pg_dump: error: Dumping the contents of table \"t\" failed: PQgetCopyData() failed.",
            "pg_dump: detail: Error message from server: server closed the connection unexpectedly",
            "pg_dump: detail: Command was: COPY public.t (id) TO stdout;",
        ] {
            stderr.push(line.into());
        }
        let outcome = Outcome {
            tool: Tool::PgDump,
            status: Ok(ExitStatus::from_raw(1 << 8)),
            stderr,
        };
        assert_eq!(
            outcome.failure().unwrap(),
            "pg_dump exited with status 1: pg_dump: error: Dumping the contents of table \"t\" failed: PQgetCopyData() failed.; pg_dump: detail: Error message from server: server closed the connection unexpectedly"
        );
    }

    #[test]
    fn stderr_keeps_first_errors_and_counts_all() {
        let mut s = Stderr::default();
        for i in 0..20 {
            s.push(format!(
                "psql:<stdin>:{i}: ERROR:  relation \"t{i}\" already exists"
            ));
            s.push("SET".into());
        }
        assert_eq!(s.error_count, 20);
        assert_eq!(s.errors.len(), KEEP_ERRORS);
        assert!(s.summary().contains("\"t0\""));
        assert_eq!(s.tail.len(), KEEP_TAIL);
    }
}
