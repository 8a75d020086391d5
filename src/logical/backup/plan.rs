//! Which records a backup holds, in which order, and the tool that writes each.

use std::ffi::OsString;

use super::options::{Content, SourceConfig};
use crate::names;
use crate::postgres::connection::dbname_conninfo;
use crate::postgres::manifest::{BackupSection, LogicalFacts};
use crate::postgres::tools::Tool;

/// What one record of the backup holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// `/manifest.json`.
    Manifest,
    /// `/globals.sql`: roles and tablespaces.
    Globals,
    /// `/all.sql`: the whole cluster.
    Cluster,
    /// `/<name>.dump`: one database.
    Database(String),
}

/// A record to be sent, with its path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    /// The record's path in the snapshot.
    pub path: String,
    /// What it holds.
    pub item: Item,
}

impl Planned {
    fn new(item: Item) -> Planned {
        let path = match &item {
            Item::Manifest => names::MANIFEST.to_string(),
            Item::Globals => names::GLOBALS.to_string(),
            Item::Cluster => names::ALL.to_string(),
            Item::Database(db) => names::dump_path(db),
        };
        Planned { path, item }
    }

    /// How the user would call this record in a message.
    pub fn describe(&self) -> String {
        match &self.item {
            Item::Manifest => "the manifest".into(),
            Item::Globals => "the roles and tablespaces (globals)".into(),
            Item::Cluster => "the whole cluster".into(),
            Item::Database(db) => format!("database {db:?}"),
        }
    }
}

/// The layout of a backup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// One database: globals and its dump.
    Database,
    /// The whole cluster in one `pg_dumpall` script.
    Cluster,
    /// The whole cluster, one dump per database.
    Split,
}

impl Layout {
    /// The layout a configuration asks for.
    pub fn of(config: &SourceConfig) -> Layout {
        match (&config.conn.database, config.split_databases) {
            (Some(_), _) => Layout::Database,
            (None, false) => Layout::Cluster,
            (None, true) => Layout::Split,
        }
    }

    /// The manifest's section for this layout.
    pub fn section(self, facts: LogicalFacts) -> BackupSection {
        match self {
            Layout::Database => BackupSection::Database(facts),
            Layout::Cluster => BackupSection::Cluster(facts),
            Layout::Split => BackupSection::Split(facts),
        }
    }

    /// The word the manifest uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Layout::Database => "database",
            Layout::Cluster => "cluster",
            Layout::Split => "split",
        }
    }
}

/// The records of a backup, manifest first. `databases` are the databases a
/// split backup dumps (ignored by the other layouts).
pub fn records(config: &SourceConfig, databases: &[String]) -> Vec<Planned> {
    let mut items = vec![Item::Manifest];
    match Layout::of(config) {
        Layout::Database => {
            items.push(Item::Globals);
            items.push(Item::Database(
                config
                    .conn
                    .database
                    .clone()
                    .expect("a database layout names one"),
            ));
        }
        Layout::Cluster => items.push(Item::Cluster),
        Layout::Split => {
            items.push(Item::Globals);
            items.extend(databases.iter().cloned().map(Item::Database));
        }
    }
    items.into_iter().map(Planned::new).collect()
}

/// The tool and arguments that write an item's content to stdout;
/// `statistics` adds the planner statistics (pg_dump 18 and later only).
pub fn command(
    config: &SourceConfig,
    item: &Item,
    no_role_passwords: bool,
    statistics: bool,
) -> (Tool, Vec<OsString>) {
    let mut args: Vec<OsString> = vec!["--no-password".into()];
    let content_flag = match config.content {
        Content::Everything => None,
        Content::SchemaOnly => Some("--schema-only"),
        Content::DataOnly => Some("--data-only"),
    };
    let tool = match item {
        Item::Manifest => unreachable!("the manifest is built by the plugin"),
        Item::Globals => {
            args.push("--globals-only".into());
            if no_role_passwords {
                args.push("--no-role-passwords".into());
            }
            Tool::PgDumpall
        }
        Item::Cluster => {
            args.extend(content_flag.map(OsString::from));
            if statistics {
                args.push("--statistics".into());
            }
            if no_role_passwords {
                args.push("--no-role-passwords".into());
            }
            for db in &config.exclude_databases {
                args.push(format!("--exclude-database={}", literal_pattern(db)).into());
            }
            Tool::PgDumpall
        }
        Item::Database(db) => {
            args.push("--format=custom".into());
            if !config.compress {
                args.push("--compress=0".into());
            }
            args.extend(content_flag.map(OsString::from));
            if statistics {
                args.push("--statistics".into());
            }
            // A quoted conninfo, so that no name is read as an option or a connection string.
            args.push(format!("--dbname={}", dbname_conninfo(db)).into());
            Tool::PgDump
        }
    };
    (tool, args)
}

/// A psql-style pattern that matches exactly one name, whatever it holds.
pub fn literal_pattern(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(pairs: &[(&str, &str)]) -> SourceConfig {
        let map = crate::options::config_map(pairs);
        SourceConfig::parse(&map).unwrap()
    }

    fn paths(records: &[Planned]) -> Vec<&str> {
        records.iter().map(|r| r.path.as_str()).collect()
    }

    #[test]
    fn layouts_put_the_manifest_first() {
        let one = config(&[("location", "postgres://h/app")]);
        assert_eq!(
            paths(&records(&one, &[])),
            ["/manifest.json", "/globals.sql", "/app.dump"]
        );
        let all = config(&[("location", "postgres://h/")]);
        assert_eq!(
            paths(&records(&all, &["x".into()])),
            ["/manifest.json", "/all.sql"]
        );
        let split = config(&[("location", "postgres://h/"), ("split_databases", "true")]);
        assert_eq!(
            paths(&records(&split, &["a b".into(), "c/d".into()])),
            ["/manifest.json", "/globals.sql", "/a b.dump", "/c%2Fd.dump"]
        );
    }

    #[test]
    fn pg_dump_gets_uncompressed_custom_format_and_a_quoted_name() {
        let c = config(&[("location", "postgres://h/-x"), ("schema_only", "true")]);
        let (tool, args) = command(&c, &Item::Database("-x".into()), false, false);
        assert_eq!(tool, Tool::PgDump);
        assert_eq!(
            args,
            [
                "--no-password",
                "--format=custom",
                "--compress=0",
                "--schema-only",
                "--dbname=dbname='-x'"
            ]
        );
        let c = config(&[("location", "postgres://h/x"), ("compress", "true")]);
        let (_, args) = command(&c, &Item::Database("x".into()), false, false);
        assert!(!args.iter().any(|a| a == "--compress=0"));
        let (_, args) = command(&c, &Item::Database("x".into()), false, true);
        assert!(args.iter().any(|a| a == "--statistics"), "{args:?}");
        let (_, args) = command(&c, &Item::Globals, false, true);
        assert!(!args.iter().any(|a| a == "--statistics"), "{args:?}");
    }

    #[test]
    fn pg_dumpall_excludes_literal_names() {
        let c = config(&[
            ("location", "postgres://h/"),
            ("exclude_databases", "a*,say \"hi\""),
        ]);
        let (tool, args) = command(&c, &Item::Cluster, true, false);
        assert_eq!(tool, Tool::PgDumpall);
        assert_eq!(
            args,
            [
                "--no-password",
                "--no-role-passwords",
                "--exclude-database=\"a*\"",
                "--exclude-database=\"say \"\"hi\"\"\""
            ]
        );
    }
}
