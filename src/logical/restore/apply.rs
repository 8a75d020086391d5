//! Running pg_restore and psql for one file, and judging what they said.

use std::ffi::OsString;
use std::path::Path;
use std::process::Stdio;

use prost::bytes::Bytes;

use super::options::DestinationConfig;
use crate::logical::error::Error;
use crate::pipe::{self, ChunkWriter, PipeSink};
use crate::postgres::connection::{dbname_conninfo, Connection};
use crate::postgres::tools::{Outcome, Running, Tool, ToolError, Toolbox};

/// The arguments of pg_restore for one dump; `create` creates the database
/// (`--create`, for `create_db`); `file` is None to read stdin.
pub fn pg_restore_args(
    config: &DestinationConfig,
    connect_to: &str,
    create: bool,
    file: Option<&Path>,
) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec!["--no-password".into()];
    let flags = [
        (config.exit_on_error, "--exit-on-error"),
        (config.no_owner, "--no-owner"),
        (config.schema_only, "--schema-only"),
        (config.data_only, "--data-only"),
        (config.clean, "--clean"),
        (config.clean, "--if-exists"),
        (create, "--create"),
        (config.single_transaction, "--single-transaction"),
    ];
    args.extend(
        flags
            .iter()
            .filter(|(on, _)| *on)
            .map(|(_, f)| OsString::from(f)),
    );
    let mut schemas: Vec<&str> = config.schemas.iter().map(String::as_str).collect();
    for (schema, _) in &config.tables {
        if let Some(s) = schema {
            if !schemas.contains(&s.as_str()) {
                schemas.push(s);
            }
        }
    }
    for s in schemas {
        args.push(format!("--schema={s}").into());
    }
    for (_, t) in &config.tables {
        args.push(format!("--table={t}").into());
    }
    if let (Some(n), Some(_)) = (config.jobs, file) {
        args.push(format!("--jobs={n}").into());
    }
    args.push(format!("--dbname={}", dbname_conninfo(connect_to)).into());
    if let Some(f) = file {
        args.push(f.as_os_str().to_os_string());
    }
    args
}

/// The arguments of psql running a script from stdin.
pub fn psql_args(config: &DestinationConfig, database: &str) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec![
        "--no-psqlrc".into(),
        "--quiet".into(),
        "--no-password".into(),
    ];
    if config.exit_on_error || config.single_transaction {
        args.push("--set=ON_ERROR_STOP=1".into());
    }
    if config.single_transaction {
        args.push("--single-transaction".into());
    }
    args.push(format!("--dbname={}", dbname_conninfo(database)).into());
    args.push("--file=-".into());
    args
}

/// A tool reading a file's content from its stdin, fed by a thread of its own
/// (see [`crate::pipe`]).
#[derive(Debug)]
pub struct Feed {
    running: Running,
    writer: Option<ChunkWriter<()>>,
    filter: Option<RoleFilter>,
}

impl Feed {
    /// Starts `tool` with its stdin open for the content.
    pub fn start(
        toolbox: &Toolbox,
        tool: Tool,
        conn: &Connection,
        args: &[OsString],
        filter: Option<RoleFilter>,
    ) -> Result<Feed, ToolError> {
        let (ours, tool_end) = pipe::input_pipe().map_err(|source| ToolError::Spawn {
            tool: tool.name(),
            path: toolbox.path(tool),
            source,
        })?;
        let running = toolbox.spawn(tool, conn, args, Stdio::from(tool_end), Stdio::null())?;
        Ok(Feed {
            running,
            writer: Some(ChunkWriter::start(PipeSink(ours))),
            filter,
        })
    }

    /// Passes one chunk on; once the tool stops reading (it failed), chunks are dropped.
    pub async fn write(&mut self, chunk: Bytes) {
        let chunk = match &mut self.filter {
            Some(f) => Bytes::from(f.feed(&chunk)),
            None => chunk,
        };
        if let Some(writer) = &mut self.writer {
            if !writer.write(chunk).await {
                if let Some(writer) = self.writer.take() {
                    if let Err(e) = writer.finish().await {
                        tracing::debug!(
                            "{} stopped reading its input: {e}",
                            self.running.tool.name()
                        );
                    }
                }
            }
        }
    }

    /// Closes the tool's input and waits for it.
    pub async fn finish(mut self) -> Outcome {
        if let (Some(f), Some(writer)) = (&mut self.filter, &mut self.writer) {
            let rest = f.finish();
            let _ = writer.write(rest.into()).await;
        }
        if let Some(writer) = self.writer.take() {
            if let Err(e) = writer.finish().await {
                tracing::debug!(
                    "{} stopped reading its input: {e}",
                    self.running.tool.name()
                );
            }
        }
        self.running.finish().await
    }
}

/// Drops the `CREATE ROLE` of the roles that exist on the target already
/// (the connecting user always does): the error would fail the file, and stop
/// a restore run with `exit_on_error`, while the `ALTER ROLE` that follows
/// still gives the role the snapshot's attributes and password. Only the
/// roles section (before the first `\connect`) is looked at, so table data is
/// never touched.
#[derive(Debug)]
pub struct RoleFilter {
    drop: Vec<String>,
    carry: Vec<u8>,
    active: bool,
}

impl RoleFilter {
    /// A filter for the roles `existing`.
    pub fn new<'a>(existing: impl IntoIterator<Item = &'a str>) -> RoleFilter {
        let drop = existing
            .into_iter()
            .flat_map(|role| {
                [
                    format!("CREATE ROLE {role};"),
                    format!("CREATE ROLE \"{}\";", role.replace('"', "\"\"")),
                ]
            })
            .collect();
        RoleFilter {
            drop,
            carry: Vec::new(),
            active: true,
        }
    }

    /// Filters one chunk; a partial last line is kept until the next.
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<u8> {
        if !self.active {
            return chunk.to_vec();
        }
        self.carry.extend_from_slice(chunk);
        let mut out = Vec::with_capacity(self.carry.len());
        let mut start = 0;
        while let Some(nl) = self.carry[start..].iter().position(|&b| b == b'\n') {
            let line = &self.carry[start..start + nl];
            if line.starts_with(b"\\connect") {
                self.active = false;
                out.extend_from_slice(&self.carry[start..]);
                self.carry.clear();
                return out;
            }
            if !self.drop.iter().any(|d| d.as_bytes() == line) {
                out.extend_from_slice(&self.carry[start..=start + nl]);
            }
            start += nl + 1;
        }
        self.carry.drain(..start);
        out
    }

    /// What is left at the end of the script.
    pub fn finish(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.carry)
    }
}

/// Turns a tool's outcome into the file's result: Ok, or a message with the
/// error count, the first errors, and what to do about the usual ones.
pub fn judge(outcome: &Outcome, what: &str) -> Result<(), Error> {
    let reported = outcome
        .stderr
        .tail
        .iter()
        .chain(outcome.stderr.errors.iter())
        .find_map(|l| l.split("errors ignored on restore: ").nth(1))
        .and_then(|n| n.trim().parse::<usize>().ok())
        .unwrap_or(0);
    let count = reported.max(outcome.stderr.error_count);
    if outcome.success() && count == 0 {
        return Ok(());
    }
    let failure = Box::new(outcome.report());
    let hint = hint(&failure.errors);
    Err(Error::RestoreFailed {
        what: what.to_string(),
        count,
        failure,
        hint,
    })
}

/// What to do about the usual failures, from pg_restore's and psql's own
/// words: a child process gives no SQLSTATE to decide on.
fn hint(errors: &[String]) -> Option<&'static str> {
    let all = errors.join("\n");
    if all.contains("role \"") && all.contains("does not exist") {
        Some("The roles the dump refers to are missing on the target: set restore_globals=true to create them from /globals.sql, or no_owner=true to restore without ownership")
    } else if all.contains("database \"") && all.contains("does not exist") {
        Some("Set create_db=true to create the database")
    } else if all.contains("schema \"") && all.contains("does not exist") {
        // pg_restore -n/-t restore the objects in a schema but never its CREATE SCHEMA.
        Some("A schema is missing on the target: when only some schemas or tables are restored (`schemas`, `tables`), pg_restore does not create the schemas themselves, so create them on the target first")
    } else if all.contains("does not appear to be a valid archive")
        || all.contains("input file is too short")
    {
        Some("The file is not a dump in pg_dump's custom format: it is empty or damaged")
    } else if all.contains("could not read from input file: end of file") {
        Some("The dump is truncated: the file ends before the end of the archive")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(pairs: &[(&str, &str)]) -> DestinationConfig {
        let map = crate::options::config_map(pairs);
        DestinationConfig::parse(&map).unwrap()
    }

    #[test]
    fn pg_restore_gets_every_asked_flag() {
        let c = config(&[
            ("location", "postgres://h/"),
            ("exit_on_error", "1"),
            ("clean", "1"),
            ("schemas", "s1"),
            ("tables", "s2.t"),
            ("jobs", "2"),
        ]);
        let args = pg_restore_args(&c, "it's", false, Some(Path::new("/tmp/x")));
        assert_eq!(
            args,
            [
                "--no-password",
                "--exit-on-error",
                "--clean",
                "--if-exists",
                "--schema=s1",
                "--schema=s2",
                "--table=t",
                "--jobs=2",
                "--dbname=dbname='it\\'s'",
                "/tmp/x"
            ]
        );
        let streamed = pg_restore_args(&c, "db", false, None);
        assert!(!streamed
            .iter()
            .any(|a| a.to_string_lossy().starts_with("--jobs")));
    }

    #[test]
    fn psql_stops_on_error_when_asked() {
        let c = config(&[("location", "postgres://h/"), ("exit_on_error", "true")]);
        let args = psql_args(&c, "postgres");
        assert!(args.iter().any(|a| a == "--set=ON_ERROR_STOP=1"));
        assert_eq!(args.last().unwrap(), "--file=-");
    }

    #[test]
    fn role_filter_drops_only_existing_roles_before_connect() {
        let mut f = RoleFilter::new(["postgres"]);
        let script = "SET x;\nCREATE ROLE alice;\nCREATE ROLE postgres;\nALTER ROLE postgres WITH SUPERUSER;\n\\connect app\nCREATE ROLE postgres;\n";
        let mut out = Vec::new();
        // Odd chunk sizes cut lines anywhere.
        for chunk in script.as_bytes().chunks(7) {
            out.extend(f.feed(chunk));
        }
        out.extend(f.finish());
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "SET x;\nCREATE ROLE alice;\nALTER ROLE postgres WITH SUPERUSER;\n\\connect app\nCREATE ROLE postgres;\n"
        );
        let mut quoted = RoleFilter::new(["Admin", "app_owner"]);
        assert_eq!(
            quoted.feed(b"CREATE ROLE \"Admin\";\nCREATE ROLE app_owner;\nCREATE ROLE other;\nX\n"),
            b"CREATE ROLE other;\nX\n"
        );
    }
}
