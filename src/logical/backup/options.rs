//! The source connector's options (`plakar source add NAME postgres://... key=value`).

use std::collections::HashMap;
use std::sync::LazyLock;

use crate::options::{exclusive, Kind, OptionError, Spec, Table};
use crate::postgres::connection::{
    Connection, CLIENT_OPTIONS, DATABASE_OPTIONS, SERVER_OPTIONS, TOOL_OPTIONS,
};

static BACKUP_OPTIONS: &[Spec] = &[
    Spec {
        name: "compress",
        kind: Kind::Bool,
        default: Some("false"),
        description: "Let pg_dump compress the dump. Off by default (`-Z0`) so that Plakar's own deduplication and compression see the raw data.",
    },
    Spec {
        name: "schema_only",
        kind: Kind::Bool,
        default: Some("false"),
        description: "Dump only the schema, no data. Exclusive with `data_only`.",
    },
    Spec {
        name: "data_only",
        kind: Kind::Bool,
        default: Some("false"),
        description: "Dump only the data, no schema. Exclusive with `schema_only`.",
    },
    Spec {
        name: "split_databases",
        kind: Kind::Bool,
        default: Some("false"),
        description: "For a whole-cluster backup: `/globals.sql` plus one `/<database>.dump` per connectable database instead of one `/all.sql`, so that each database can be restored on its own.",
    },
    Spec {
        name: "exclude_databases",
        kind: Kind::List,
        default: None,
        description: "For a whole-cluster backup: databases to leave out, comma-separated, matched by exact name.",
    },
    Spec {
        name: "jobs",
        kind: Kind::Integer { min: 1, max: 64 },
        default: Some("2"),
        description: "How many dumps may run at once (with `split_databases`).",
    },
    Spec {
        name: "statistics",
        kind: Kind::Bool,
        default: Some("true"),
        description: "With pg_dump 18 or later, dump the planner statistics too (`--statistics`), so that a restore into PostgreSQL 18 or later has them at once and needs no ANALYZE. Not with `schema_only` or `data_only`, which pg_dump dumps without statistics; older tools cannot dump them.",
    },
];

/// Every option of the source connector.
pub static SOURCE_OPTIONS: LazyLock<Table> = LazyLock::new(|| {
    Table::new(
        "source",
        &[
            SERVER_OPTIONS,
            DATABASE_OPTIONS,
            TOOL_OPTIONS,
            CLIENT_OPTIONS,
            BACKUP_OPTIONS,
        ],
    )
});

/// What the dump includes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Content {
    Everything,
    SchemaOnly,
    DataOnly,
}

/// The source configuration, checked.
#[derive(Debug)]
pub struct SourceConfig {
    /// How to reach the server.
    pub conn: Connection,
    /// Let pg_dump compress.
    pub compress: bool,
    /// Schema, data, or both.
    pub content: Content,
    /// One dump per database for a whole-cluster backup.
    pub split_databases: bool,
    /// Databases left out of a whole-cluster backup.
    pub exclude_databases: Vec<String>,
    /// How many dumps run at once.
    pub jobs: usize,
    /// Dump the planner statistics, where pg_dump can.
    pub statistics: bool,
}

impl SourceConfig {
    /// Checks the configuration Plakar hands to `Init`.
    pub fn parse(config: &HashMap<String, String>) -> Result<SourceConfig, OptionError> {
        let values = SOURCE_OPTIONS.parse(config)?;
        exclusive(&values, "schema_only", "data_only")?;
        if values.is_set("statistics") {
            // pg_dump leaves statistics out of partial dumps; the default gives way, a setting does not.
            exclusive(&values, "statistics", "schema_only")?;
            exclusive(&values, "statistics", "data_only")?;
        }
        let conn = Connection::from_values(&values)?;
        let split_databases = values.flag("split_databases");
        let exclude_databases = values.list("exclude_databases");
        if let Some(db) = &conn.database {
            for key in ["split_databases", "exclude_databases"] {
                if values.is_set(key) && (key != "split_databases" || split_databases) {
                    return Err(OptionError::Conflict(format!(
                        "option `{key}` applies to whole-cluster backups, but database {db:?} is named; remove `{key}`, or name no database in `location` and `database`"
                    )));
                }
            }
        }
        let content = if values.flag("schema_only") {
            Content::SchemaOnly
        } else if values.flag("data_only") {
            Content::DataOnly
        } else {
            Content::Everything
        };
        Ok(SourceConfig {
            conn,
            compress: values.flag("compress"),
            content,
            split_databases,
            exclude_databases,
            jobs: values.integer("jobs").unwrap_or(2) as usize,
            statistics: values.flag("statistics"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(pairs: &[(&str, &str)]) -> Result<SourceConfig, OptionError> {
        let config = crate::options::config_map(pairs);
        SourceConfig::parse(&config)
    }

    #[test]
    fn defaults() {
        let c = parse(&[("location", "postgres://u@h/app")]).unwrap();
        assert!(!c.compress);
        assert_eq!(c.content, Content::Everything);
        assert_eq!(c.jobs, 2);
        assert!(c.statistics);
        assert_eq!(c.conn.database.as_deref(), Some("app"));
    }

    #[test]
    fn schema_only_and_data_only_exclude_each_other() {
        let err = parse(&[
            ("location", "postgres://h/"),
            ("schema_only", "true"),
            ("data_only", "true"),
        ])
        .unwrap_err()
        .to_string();
        assert!(err.contains("`schema_only` and `data_only`"), "{err}");
    }

    #[test]
    fn statistics_are_for_full_dumps() {
        let c = parse(&[("location", "postgres://h/app"), ("schema_only", "true")]).unwrap();
        assert!(c.statistics && c.content == Content::SchemaOnly);
        let err = parse(&[
            ("location", "postgres://h/app"),
            ("data_only", "true"),
            ("statistics", "true"),
        ])
        .unwrap_err()
        .to_string();
        assert!(err.contains("`statistics` and `data_only`"), "{err}");
        let off = parse(&[("location", "postgres://h/app"), ("statistics", "false")]).unwrap();
        assert!(!off.statistics);
    }

    #[test]
    fn cluster_options_need_a_cluster_backup() {
        let err = parse(&[
            ("location", "postgres://h/app"),
            ("split_databases", "true"),
        ])
        .unwrap_err()
        .to_string();
        assert!(err.contains("`split_databases`"), "{err}");
        let err = parse(&[
            ("location", "postgres://h/"),
            ("database", "x"),
            ("exclude_databases", "a"),
        ])
        .unwrap_err()
        .to_string();
        assert!(err.contains("`exclude_databases`"), "{err}");
        assert!(parse(&[
            ("location", "postgres://h/app"),
            ("split_databases", "false")
        ])
        .is_ok());
    }
}
