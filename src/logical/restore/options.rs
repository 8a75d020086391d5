//! The destination connector's options (`plakar destination add NAME postgres://... key=value`).

use std::collections::HashMap;
use std::sync::LazyLock;

use crate::options::{exclusive, Kind, OptionError, Spec, Table};
use crate::postgres::connection::{
    Connection, CLIENT_OPTIONS, DATABASE_OPTIONS, SERVER_OPTIONS, TOOL_OPTIONS,
};

static RESTORE_OPTIONS: &[Spec] = &[
    Spec {
        name: "create_db",
        kind: Kind::Bool,
        default: Some("false"),
        description: "Create the database before restoring into it; the plugin then connects only to `postgres` until it exists. With no database in the URI, or the dump's own name, the dump's metadata creates it (`pg_restore --create`). Another name (`database`) creates that database, with the dump database's encoding and locale, and restores the one dump of the snapshot into it. A database that exists already is refused before anything changes, unless `clean=true`, which restores into it. `postgres` and `template1` are restored into as they are.",
    },
    Spec {
        name: "restore_globals",
        kind: Kind::Bool,
        default: Some("false"),
        description: "Apply `/globals.sql` (roles and tablespaces) with psql before any database dump of the snapshot.",
    },
    Spec {
        name: "no_owner",
        kind: Kind::Bool,
        default: Some("false"),
        description: "Skip ownership (`pg_restore --no-owner`): objects belong to the connecting user.",
    },
    Spec {
        name: "schema_only",
        kind: Kind::Bool,
        default: Some("false"),
        description: "Restore only the schema. Exclusive with `data_only`; not for `/all.sql`.",
    },
    Spec {
        name: "data_only",
        kind: Kind::Bool,
        default: Some("false"),
        description: "Restore only the data. Exclusive with `schema_only`; not for `/all.sql`.",
    },
    Spec {
        name: "exit_on_error",
        kind: Kind::Bool,
        default: Some("false"),
        description: "Stop a file at its first error (`pg_restore --exit-on-error`, `psql -v ON_ERROR_STOP=1`). Errors are reported either way.",
    },
    Spec {
        name: "databases",
        kind: Kind::List,
        default: None,
        description: "Restore only these databases' dumps, comma-separated.",
    },
    Spec {
        name: "schemas",
        kind: Kind::List,
        default: None,
        description: "Restore only these schemas (`pg_restore -n`), comma-separated.",
    },
    Spec {
        name: "tables",
        kind: Kind::List,
        default: None,
        description: "Restore only these tables (`pg_restore -t`), comma-separated; `schema.table` names must all share one schema.",
    },
    Spec {
        name: "clean",
        kind: Kind::Bool,
        default: Some("false"),
        description: "Drop the objects being restored before recreating them (`--clean --if-exists`).",
    },
    Spec {
        name: "jobs",
        kind: Kind::Integer { min: 1, max: 64 },
        default: None,
        description: "Restore each dump with `pg_restore --jobs=N` from a private temporary copy (a pipe cannot be restored in parallel), in which the plugin records where each table's data starts so that every worker seeks straight to it. The copy is made only where a parallel restore can win: not with `jobs=1`, nor when the server runs on this machine (Unix socket, `localhost`, loopback address) and the machine has no more CPUs than `jobs`; there, and without `jobs`, dumps stream straight into pg_restore.",
    },
    Spec {
        name: "analyze",
        kind: Kind::Bool,
        default: Some("true"),
        description: "Run ANALYZE on each restored database, so the planner has statistics at once. Skipped for a dump that carries its planner statistics (made by pg_dump 18 or later, see the source's `statistics`), which pg_restore restores into PostgreSQL 18 or later; run all the same with `data_only`, which restores no statistics, or `tables`, which leaves the indexes' out.",
    },
    Spec {
        name: "single_transaction",
        kind: Kind::Bool,
        default: Some("false"),
        description: "Restore each file in one transaction: all of it or nothing. Not with `jobs` or `create_db`.",
    },
];

/// Every option of the destination connector.
pub static DESTINATION_OPTIONS: LazyLock<Table> = LazyLock::new(|| {
    Table::new(
        "destination",
        &[
            SERVER_OPTIONS,
            DATABASE_OPTIONS,
            TOOL_OPTIONS,
            CLIENT_OPTIONS,
            RESTORE_OPTIONS,
        ],
    )
});

/// The destination configuration, checked.
#[derive(Debug)]
pub struct DestinationConfig {
    /// How to reach the server.
    pub conn: Connection,
    /// `pg_restore --create`.
    pub create_db: bool,
    /// Apply `/globals.sql` first.
    pub restore_globals: bool,
    /// `--no-owner`.
    pub no_owner: bool,
    /// `--schema-only`.
    pub schema_only: bool,
    /// `--data-only`.
    pub data_only: bool,
    /// Stop at the first error.
    pub exit_on_error: bool,
    /// Only these databases.
    pub databases: Vec<String>,
    /// Only these schemas.
    pub schemas: Vec<String>,
    /// Only these tables: (schema, table).
    pub tables: Vec<(Option<String>, String)>,
    /// `--clean --if-exists`.
    pub clean: bool,
    /// `pg_restore --jobs`.
    pub jobs: Option<usize>,
    /// ANALYZE afterwards.
    pub analyze: bool,
    /// One transaction per file.
    pub single_transaction: bool,
}

impl DestinationConfig {
    /// Checks the configuration Plakar hands to `Init`.
    pub fn parse(config: &HashMap<String, String>) -> Result<DestinationConfig, OptionError> {
        let values = DESTINATION_OPTIONS.parse(config)?;
        exclusive(&values, "schema_only", "data_only")?;
        exclusive(&values, "clean", "data_only")?;
        exclusive(&values, "single_transaction", "create_db")?;
        if values.flag("single_transaction") && values.is_set("jobs") {
            return Err(OptionError::Conflict(
                "options `single_transaction` and `jobs` cannot be used together: a parallel restore uses several transactions".into(),
            ));
        }
        let conn = Connection::from_values(&values)?;
        let tables: Vec<(Option<String>, String)> = values
            .list("tables")
            .into_iter()
            .map(|t| match t.split_once('.') {
                Some((schema, table)) => (Some(schema.to_string()), table.to_string()),
                None => (None, t),
            })
            .collect();
        let qualifiers: std::collections::BTreeSet<_> =
            tables.iter().filter_map(|(s, _)| s.clone()).collect();
        if qualifiers.len() > 1
            || (!qualifiers.is_empty() && tables.iter().any(|(s, _)| s.is_none()))
        {
            return Err(OptionError::Conflict(
                "option `tables`: schema-qualified names must all share one schema (pg_restore restricts -t to the schemas given with -n); restore the schemas one at a time".into(),
            ));
        }
        Ok(DestinationConfig {
            conn,
            create_db: values.flag("create_db"),
            restore_globals: values.flag("restore_globals"),
            no_owner: values.flag("no_owner"),
            schema_only: values.flag("schema_only"),
            data_only: values.flag("data_only"),
            exit_on_error: values.flag("exit_on_error"),
            databases: values.list("databases"),
            schemas: values.list("schemas"),
            tables,
            clean: values.flag("clean"),
            jobs: values.integer("jobs").map(|n| n as usize),
            analyze: values.flag("analyze"),
            single_transaction: values.flag("single_transaction"),
        })
    }

    /// The options set that a whole-cluster script cannot honour, by name.
    pub fn unfit_for_cluster_script(&self) -> Vec<&'static str> {
        let mut unfit = Vec::new();
        for (set, name) in [
            (self.schema_only, "schema_only"),
            (self.data_only, "data_only"),
            (self.no_owner, "no_owner"),
            (!self.schemas.is_empty(), "schemas"),
            (!self.tables.is_empty(), "tables"),
            (!self.databases.is_empty(), "databases"),
            (self.clean, "clean"),
            (self.single_transaction, "single_transaction"),
        ] {
            if set {
                unfit.push(name);
            }
        }
        unfit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(pairs: &[(&str, &str)]) -> Result<DestinationConfig, OptionError> {
        let config = crate::options::config_map(pairs);
        DestinationConfig::parse(&config)
    }

    #[test]
    fn defaults() {
        let c = parse(&[("location", "postgres://h/")]).unwrap();
        assert!(c.analyze && !c.create_db && !c.restore_globals && c.jobs.is_none());
        assert!(c.unfit_for_cluster_script().is_empty());
    }

    #[test]
    fn conflicts_are_named() {
        for (pairs, words) in [
            (
                vec![("schema_only", "1"), ("data_only", "1")],
                "`schema_only` and `data_only`",
            ),
            (
                vec![("single_transaction", "1"), ("jobs", "2")],
                "`single_transaction` and `jobs`",
            ),
            (
                vec![("single_transaction", "1"), ("create_db", "1")],
                "`single_transaction` and `create_db`",
            ),
            (vec![("tables", "a.t,b.u")], "option `tables`"),
            (vec![("jobs", "0")], "option `jobs`"),
        ] {
            let mut all = vec![("location", "postgres://h/")];
            all.extend(pairs);
            let err = parse(&all).unwrap_err().to_string();
            assert!(err.contains(words), "{err}");
        }
    }

    #[test]
    fn tables_split_their_schema() {
        let c = parse(&[("location", "postgres://h/"), ("tables", "s.a, s.b")]).unwrap();
        assert_eq!(
            c.tables,
            [
                (Some("s".into()), "a".into()),
                (Some("s".into()), "b".into())
            ]
        );
    }
}
