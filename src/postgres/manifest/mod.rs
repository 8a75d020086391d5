//! `/manifest.json`: what the cluster looked like at backup time.
//!
//! The types here are the file's shape, shared by the backups that write it
//! and the restores that read it; `catalogue` fills them in from the server.
//! Every field a manifest of an earlier release may lack is optional, and
//! fields this release does not know are ignored, so that a field added later
//! keeps `format_version` at 1 and every earlier snapshot readable.

mod catalogue;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use catalogue::{collect, physical};

/// The manifest format this release writes and the newest it reads.
pub const FORMAT_VERSION: u32 = 1;

/// The whole of `/manifest.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Changes only when the shape changes incompatibly.
    pub format_version: u32,
    /// The plugin that wrote it.
    pub plugin: Plugin,
    /// The server's clock at backup time, UTC (`2026-11-25T09:00:00Z`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    /// The server backed up.
    pub server: Server,
    /// The client tools' version line, for a logical backup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pg_dump_version: Option<String>,
    /// What the backup is: its layout and how it was taken.
    pub backup: BackupSection,
    /// Settings of the cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_config: Option<ClusterConfig>,
    /// The roles, without passwords, for a logical backup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub roles: Option<Vec<Role>>,
    /// The tablespaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tablespaces: Option<Vec<Tablespace>>,
    /// The databases described: those dumped, or every one a physical copy holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub databases: Option<Vec<Database>>,
    /// The WAL a physical backup needs to be consistent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wal: Option<WalRange>,
}

/// The plugin that wrote a manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plugin {
    /// `postgresql`.
    pub name: String,
    /// The plugin's version.
    pub version: String,
}

impl Plugin {
    /// This plugin.
    pub fn this() -> Plugin {
        Plugin {
            name: "postgresql".into(),
            version: env!("CARGO_PKG_VERSION").into(),
        }
    }
}

/// The server backed up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Server {
    /// The host name, address or socket directory connected to.
    pub host: String,
    /// The port connected to.
    pub port: u16,
    /// `server_version`, such as `15.18 (Debian 15.18-0+deb12u1)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// `server_version_num`, such as 150018.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_num: Option<u32>,
    /// The cluster's system identifier (as text: it does not fit every JSON reader's numbers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_identifier: Option<String>,
    /// Whether the server was a standby.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_recovery: Option<bool>,
    /// The timeline the server was on (IDENTIFY_SYSTEM), for a physical
    /// backup: on a standby, the primary's timeline it replays.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeline: Option<u32>,
}

impl Server {
    /// The major version, such as 15.
    pub fn major(&self) -> Option<u32> {
        self.version_num.map(|n| n / 10000)
    }
}

/// The manifest's `backup` section, told apart by its `layout`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "layout", rename_all = "lowercase")]
pub enum BackupSection {
    /// One database: `/globals.sql` and its dump.
    Database(LogicalFacts),
    /// The whole cluster in one `pg_dumpall` script.
    Cluster(LogicalFacts),
    /// The whole cluster, one dump per database.
    Split(LogicalFacts),
    /// A copy of the data directory by pg_basebackup.
    Physical(PhysicalFacts),
}

impl BackupSection {
    /// The word the manifest uses for the layout.
    pub fn layout(&self) -> &'static str {
        match self {
            BackupSection::Database(_) => "database",
            BackupSection::Cluster(_) => "cluster",
            BackupSection::Split(_) => "split",
            BackupSection::Physical(_) => "physical",
        }
    }
}

/// How a logical backup was taken.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogicalFacts {
    /// The database backed up, for a single-database backup (`null` otherwise).
    #[serde(default)]
    pub database: Option<String>,
    /// The snapshot's files, in order.
    pub files: Vec<String>,
    /// The options that shaped the dump (no secrets).
    pub options: LogicalOptions,
    /// Whether role passwords were left out of the globals.
    pub no_role_passwords: bool,
}

/// The source options that shape a logical backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogicalOptions {
    /// Whether the dumps are compressed.
    pub compress: bool,
    /// Only the schema was dumped.
    pub schema_only: bool,
    /// Only the data was dumped.
    pub data_only: bool,
    /// One dump per database.
    pub split_databases: bool,
    /// The databases left out.
    pub exclude_databases: Vec<String>,
    /// The `sslmode` connected with.
    pub ssl_mode: String,
    /// Whether the dumps carry the planner statistics (pg_dump 18 and later);
    /// false in manifests written before the field existed.
    #[serde(default)]
    pub statistics: bool,
}

/// How a physical backup was taken.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PhysicalFacts {
    /// The source options that shaped the copy.
    pub options: PhysicalOptions,
    /// pg_basebackup's version line.
    pub pg_basebackup_version: String,
    /// The temporary replication slot that held the WAL for the copy.
    pub replication_slot: String,
    /// The data directory read directly on the database host, when the copy
    /// was taken so rather than through pg_basebackup's stream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_directory: Option<String>,
}

/// Where a timeline ended and the next began.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimelineEnd {
    /// The timeline that ended.
    pub timeline: u32,
    /// The first position of the next one.
    pub end_lsn: String,
}

/// The source options that shape a physical backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PhysicalOptions {
    /// The checkpoint the copy started with.
    pub checkpoint: Checkpoint,
    /// pg_basebackup's `--max-rate`, if any (`null` otherwise).
    #[serde(default)]
    pub max_rate: Option<String>,
    /// Whether the server checked page checksums as it read.
    pub verify_checksums: bool,
    /// The `sslmode` connected with.
    pub ssl_mode: String,
}

/// The checkpoint a base backup starts with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Checkpoint {
    /// At once, at the cost of an I/O burst.
    Fast,
    /// Spread over `checkpoint_completion_target`.
    Spread,
}

/// Settings of the cluster, by their lower-case name (`timezone`), as text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterConfig {
    /// The settings read, such as `wal_level` and `data_checksums`.
    #[serde(flatten)]
    pub settings: BTreeMap<String, String>,
    /// Whether an `archive_command` is set (not the command: it may hold credentials).
    pub archive_command_set: bool,
}

/// A role, without its password.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Role {
    /// Its name.
    pub name: String,
    /// `rolsuper`.
    pub superuser: bool,
    /// `rolinherit`.
    pub inherit: bool,
    /// `rolcreaterole`.
    pub create_role: bool,
    /// `rolcreatedb`.
    pub create_db: bool,
    /// `rolcanlogin`.
    pub can_login: bool,
    /// `rolreplication`.
    pub replication: bool,
    /// `rolbypassrls`.
    pub bypass_rls: bool,
    /// `rolconnlimit` (-1: no limit).
    pub connection_limit: i32,
    /// `rolvaliduntil`, as text (`null`: forever).
    #[serde(default)]
    pub valid_until: Option<String>,
    /// The roles it is a member of.
    pub member_of: Vec<String>,
}

/// A tablespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tablespace {
    /// Its OID: a physical snapshot keeps its files under `/pg_tblspc/<oid>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oid: Option<u32>,
    /// Its name.
    pub name: String,
    /// Its owner.
    pub owner: String,
    /// Its directory (empty for the built-in ones).
    pub location: String,
    /// Its options, as `name=value`.
    pub options: Vec<String>,
}

/// A database: catalogue facts, and its contents for a logical backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Database {
    /// Its name.
    pub name: String,
    /// Its owner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Its encoding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding: Option<String>,
    /// `datcollate`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collation: Option<String>,
    /// `datctype`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ctype: Option<String>,
    /// `pg_database_size`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<i64>,
    /// Its extensions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extensions: Option<Vec<Extension>>,
    /// Its schemas, but the system ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schemas: Option<Vec<Schema>>,
    /// Its tables, views, materialized views and sequences, but the system ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relations: Option<Vec<Relation>>,
}

impl Database {
    /// A database of which only the name is known yet.
    pub fn named(name: &str) -> Database {
        Database {
            name: name.into(),
            owner: None,
            encoding: None,
            collation: None,
            ctype: None,
            size_bytes: None,
            extensions: None,
            schemas: None,
            relations: None,
        }
    }
}

/// An extension installed in a database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Extension {
    /// Its name.
    pub name: String,
    /// Its version.
    pub version: String,
    /// The schema it lives in.
    pub schema: String,
}

/// A schema.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Schema {
    /// Its name.
    pub name: String,
    /// Its owner.
    pub owner: String,
}

/// A table, view, materialized view or sequence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Relation {
    /// Its schema.
    pub schema: String,
    /// Its name.
    pub name: String,
    /// What it is.
    pub kind: RelationKind,
    /// Its owner.
    pub owner: String,
    /// `pg_class.reltuples` (or `pg_stat_user_tables` before the first ANALYZE), not a count.
    #[serde(default)]
    pub estimated_rows: Option<i64>,
    /// `pg_total_relation_size`.
    pub size_bytes: i64,
    /// Its columns, in order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub columns: Option<Vec<Column>>,
    /// Its constraints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub constraints: Option<Vec<Constraint>>,
    /// Its indexes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub indexes: Option<Vec<Index>>,
}

/// What a relation is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RelationKind {
    /// `r`.
    Table,
    /// `p`.
    PartitionedTable,
    /// `v`.
    View,
    /// `m`.
    MaterializedView,
    /// `S`.
    Sequence,
    /// Anything else, including kinds a later release names.
    #[serde(other)]
    Other,
}

/// A column of a relation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Column {
    /// Its name.
    pub name: String,
    /// Its type, as `format_type` writes it (`numeric(10,2)`).
    #[serde(rename = "type")]
    pub type_name: String,
    /// Whether it is `NOT NULL`.
    pub not_null: bool,
    /// Its default expression, if any (`null` otherwise).
    #[serde(default)]
    pub default: Option<String>,
}

/// A constraint of a relation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Constraint {
    /// Its name.
    pub name: String,
    /// What it is.
    #[serde(rename = "type")]
    pub kind: ConstraintKind,
    /// `pg_get_constraintdef`.
    pub definition: String,
}

/// What a constraint is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConstraintKind {
    /// `p`.
    PrimaryKey,
    /// `f`.
    ForeignKey,
    /// `u`.
    Unique,
    /// `c`.
    Check,
    /// `x`.
    Exclusion,
    /// `t`.
    Trigger,
    /// Anything else, including kinds a later release names.
    #[serde(other)]
    Other,
}

/// An index of a relation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Index {
    /// Its name.
    pub name: String,
    /// `pg_get_indexdef`.
    pub definition: String,
}

/// The WAL a physical backup needs, from its first record to its last.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalRange {
    /// The timeline.
    pub timeline: u32,
    /// The position the copy started at (`0/2000028`).
    pub start_lsn: String,
    /// The position the copy ended at.
    pub stop_lsn: String,
}

impl WalRange {
    /// The first WAL range of PostgreSQL's own `backup_manifest`, if it has one.
    pub fn from_backup_manifest(backup_manifest: &[u8]) -> Option<WalRange> {
        #[derive(Deserialize)]
        struct PgManifest {
            #[serde(rename = "WAL-Ranges")]
            wal_ranges: Vec<PgRange>,
        }
        #[derive(Deserialize)]
        struct PgRange {
            #[serde(rename = "Timeline")]
            timeline: u32,
            #[serde(rename = "Start-LSN")]
            start: String,
            #[serde(rename = "End-LSN")]
            end: String,
        }
        let parsed: PgManifest = serde_json::from_slice(backup_manifest).ok()?;
        let first = parsed.wal_ranges.into_iter().next()?;
        Some(WalRange {
            timeline: first.timeline,
            start_lsn: first.start,
            stop_lsn: first.end,
        })
    }
}

/// Why a `/manifest.json` cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// Not JSON, or not the shape of a manifest.
    #[error("it is not a manifest this plugin reads: {0}")]
    Shape(#[from] serde_json::Error),
    /// Written by a later release in a format this one does not know.
    #[error("its format_version {0} is newer than this plugin reads ({FORMAT_VERSION})")]
    Newer(u32),
}

impl Manifest {
    /// A manifest of `backup` with only what every manifest has.
    pub fn new(server: Server, created_at: Option<String>, backup: BackupSection) -> Manifest {
        Manifest {
            format_version: FORMAT_VERSION,
            plugin: Plugin::this(),
            created_at,
            server,
            pg_dump_version: None,
            backup,
            cluster_config: None,
            roles: None,
            tablespaces: None,
            databases: None,
            wal: None,
        }
    }

    /// The bytes of `/manifest.json`.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("a manifest serialises")
    }

    /// Reads `/manifest.json`, of this release or an earlier one.
    pub fn from_json(bytes: &[u8]) -> Result<Manifest, ReadError> {
        // The version first: a later format may not have the shape read below.
        #[derive(Deserialize)]
        struct Version {
            format_version: u32,
        }
        let Version { format_version } = serde_json::from_slice(bytes)?;
        if format_version > FORMAT_VERSION {
            return Err(ReadError::Newer(format_version));
        }
        Ok(serde_json::from_slice(bytes)?)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;

    fn logical(layout: fn(LogicalFacts) -> BackupSection, database: Option<&str>) -> Manifest {
        let facts = LogicalFacts {
            database: database.map(Into::into),
            files: vec!["/manifest.json".into(), "/all.sql".into()],
            options: LogicalOptions {
                compress: true,
                schema_only: false,
                data_only: false,
                split_databases: false,
                exclude_databases: vec!["scratch".into()],
                ssl_mode: "prefer".into(),
                statistics: false,
            },
            no_role_passwords: false,
        };
        let server = Server {
            host: "db.example.com".into(),
            port: 5432,
            version: Some("15.18".into()),
            version_num: Some(150018),
            system_identifier: Some("7441000000000000001".into()),
            in_recovery: Some(false),
            timeline: None,
        };
        let mut m = Manifest::new(server, Some("2026-11-25T09:00:00Z".into()), layout(facts));
        m.pg_dump_version = Some("pg_dump (PostgreSQL) 15.18".into());
        m.cluster_config = Some(ClusterConfig {
            settings: [("wal_level", "replica"), ("timezone", "UTC")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            archive_command_set: false,
        });
        m.roles = Some(vec![Role {
            name: "app_owner".into(),
            superuser: false,
            inherit: true,
            create_role: false,
            create_db: false,
            can_login: true,
            replication: false,
            bypass_rls: false,
            connection_limit: -1,
            valid_until: None,
            member_of: vec!["readers".into()],
        }]);
        m.tablespaces = Some(vec![Tablespace {
            oid: None,
            name: "pg_default".into(),
            owner: "postgres".into(),
            location: String::new(),
            options: vec![],
        }]);
        m.databases = Some(vec![Database {
            owner: Some("app_owner".into()),
            size_bytes: Some(7918111),
            extensions: Some(vec![Extension {
                name: "plpgsql".into(),
                version: "1.0".into(),
                schema: "pg_catalog".into(),
            }]),
            schemas: Some(vec![Schema {
                name: "public".into(),
                owner: "pg_database_owner".into(),
            }]),
            relations: Some(vec![Relation {
                schema: "public".into(),
                name: "items".into(),
                kind: RelationKind::Table,
                owner: "app_owner".into(),
                estimated_rows: None,
                size_bytes: 106496,
                columns: Some(vec![Column {
                    name: "id".into(),
                    type_name: "integer".into(),
                    not_null: true,
                    default: None,
                }]),
                constraints: Some(vec![Constraint {
                    name: "items_pkey".into(),
                    kind: ConstraintKind::PrimaryKey,
                    definition: "PRIMARY KEY (id)".into(),
                }]),
                indexes: None,
            }]),
            ..Database::named("app")
        }]);
        m
    }

    #[test]
    fn a_manifest_written_is_read_back_the_same() {
        for m in [
            logical(BackupSection::Database, Some("app")),
            logical(BackupSection::Cluster, None),
            logical(BackupSection::Split, None),
        ] {
            assert_eq!(Manifest::from_json(&m.to_json()).unwrap(), m);
        }
        let standby = Server {
            in_recovery: Some(true),
            timeline: Some(2),
            ..logical(BackupSection::Cluster, None).server
        };
        let mut p = Manifest::new(
            standby,
            None,
            BackupSection::Physical(PhysicalFacts {
                options: PhysicalOptions {
                    checkpoint: Checkpoint::Fast,
                    max_rate: None,
                    verify_checksums: true,
                    ssl_mode: "disable".into(),
                },
                pg_basebackup_version: "pg_basebackup (PostgreSQL) 15.18".into(),
                replication_slot: "plakar_42".into(),
                data_directory: None,
            }),
        );
        p.wal = Some(WalRange {
            timeline: 1,
            start_lsn: "0/2000028".into(),
            stop_lsn: "0/2000100".into(),
        });
        assert_eq!(Manifest::from_json(&p.to_json()).unwrap(), p);
        let json: Value = serde_json::from_slice(&p.to_json()).unwrap();
        assert_eq!(json["server"]["in_recovery"], true);
        assert_eq!(json["server"]["timeline"], 2);
    }

    #[test]
    fn the_json_keeps_the_keys_and_shapes_of_earlier_releases() {
        let m: Value =
            serde_json::from_slice(&logical(BackupSection::Cluster, None).to_json()).unwrap();
        assert_eq!(m["format_version"], 1);
        assert_eq!(m["plugin"]["name"], "postgresql");
        assert_eq!(m["server"]["version_num"], 150018);
        assert_eq!(m["backup"]["layout"], "cluster");
        // A cluster backup names no database, as `null`.
        assert_eq!(m["backup"]["database"], Value::Null);
        assert!(m["backup"].as_object().unwrap().contains_key("database"));
        assert_eq!(
            m["backup"]["options"]["exclude_databases"],
            json!(["scratch"])
        );
        assert_eq!(
            m["cluster_config"],
            json!({"timezone": "UTC", "wal_level": "replica", "archive_command_set": false})
        );
        assert_eq!(m["roles"][0]["valid_until"], Value::Null);
        let rel = &m["databases"][0]["relations"][0];
        assert_eq!(rel["kind"], "table");
        assert_eq!(rel["estimated_rows"], Value::Null);
        assert_eq!(rel["columns"][0]["type"], "integer");
        assert_eq!(rel["constraints"][0]["type"], "primary_key");
        // What is not known is left out, not written as null.
        assert!(rel.get("indexes").is_none());
        assert!(m.get("wal").is_none());
        let db = &m["databases"][0];
        assert!(db.get("encoding").is_none());
    }

    /// What a single-database backup of an earlier release wrote (keys in the
    /// order it wrote them), with the best-effort parts that failed left out.
    const EARLIER_LOGICAL: &str = r#"{
      "backup": { "database": "app", "files": ["/manifest.json", "/globals.sql", "/app.dump"],
                  "layout": "database", "no_role_passwords": true,
                  "options": { "compress": false, "data_only": false, "exclude_databases": [],
                               "schema_only": false, "split_databases": false, "ssl_mode": "prefer" } },
      "databases": [ { "name": "app", "owner": "postgres", "encoding": "UTF8", "collation": "C",
                       "ctype": "C", "size_bytes": 7918111,
                       "relations": [ { "schema": "public", "name": "items", "kind": "table",
                                        "owner": "postgres", "estimated_rows": null, "size_bytes": 8192,
                                        "columns": [ { "name": "id", "type": "integer",
                                                       "not_null": true, "default": null } ] } ] },
                     { "name": "gone" } ],
      "format_version": 1,
      "pg_dump_version": "pg_dump (PostgreSQL) 15.18",
      "plugin": { "name": "postgresql", "version": "0.1.0" },
      "server": { "host": "/var/run/postgresql", "port": 5432, "version": "15.18",
                  "version_num": 150018 }
    }"#;

    #[test]
    fn a_logical_manifest_of_an_earlier_release_is_read() {
        let m = Manifest::from_json(EARLIER_LOGICAL.as_bytes()).unwrap();
        assert_eq!(m.plugin.version, "0.1.0");
        assert_eq!(m.created_at, None);
        assert_eq!(m.server.major(), Some(15));
        assert_eq!(m.server.system_identifier, None);
        assert_eq!(m.backup.layout(), "database");
        let BackupSection::Database(facts) = &m.backup else {
            panic!("not a database backup: {:?}", m.backup);
        };
        assert_eq!(facts.database.as_deref(), Some("app"));
        assert!(facts.no_role_passwords);
        // Written before dumps could carry statistics.
        assert!(!facts.options.statistics);
        assert_eq!(facts.files.len(), 3);
        assert_eq!(m.roles, None);
        assert_eq!(m.cluster_config, None);
        assert_eq!(m.wal, None);
        let dbs = m.databases.unwrap();
        let items = &dbs[0].relations.as_ref().unwrap()[0];
        assert_eq!(items.kind, RelationKind::Table);
        assert_eq!(items.columns.as_ref().unwrap()[0].type_name, "integer");
        assert_eq!(items.constraints, None);
        assert_eq!(dbs[1], Database::named("gone"));
    }

    #[test]
    fn a_physical_manifest_of_an_earlier_release_is_read() {
        let m = Manifest::from_json(
            br#"{
              "backup": { "layout": "physical",
                          "options": { "checkpoint": "spread", "max_rate": "10M",
                                       "ssl_mode": "prefer", "verify_checksums": true },
                          "pg_basebackup_version": "pg_basebackup (PostgreSQL) 15.18",
                          "replication_slot": "plakar_42" },
              "cluster_config": { "data_checksums": "on", "archive_command_set": false },
              "created_at": "2026-11-25T09:00:00Z",
              "databases": [ { "name": "postgres", "size_bytes": 7500000 } ],
              "format_version": 1,
              "plugin": { "name": "postgresql", "version": "0.1.0" },
              "server": { "host": "127.0.0.1", "in_recovery": false, "port": 5432,
                          "system_identifier": "7441000000000000001", "version": "15.18",
                          "version_num": 150018 },
              "tablespaces": [],
              "wal": { "start_lsn": "0/2000028", "stop_lsn": "0/2000100", "timeline": 1 }
            }"#,
        )
        .unwrap();
        let BackupSection::Physical(facts) = &m.backup else {
            panic!("not a physical backup: {:?}", m.backup);
        };
        assert_eq!(facts.options.checkpoint, Checkpoint::Spread);
        assert_eq!(facts.options.max_rate.as_deref(), Some("10M"));
        assert_eq!(m.wal.unwrap().stop_lsn, "0/2000100");
        assert_eq!(m.server.in_recovery, Some(false));
        assert_eq!(m.server.timeline, None);
        assert_eq!(
            m.cluster_config.unwrap().settings["data_checksums"],
            "on".to_string()
        );
        assert_eq!(m.databases.unwrap()[0].size_bytes, Some(7500000));
    }

    #[test]
    fn fields_and_kinds_of_later_releases_are_ignored() {
        let mut v: Value = serde_json::from_str(EARLIER_LOGICAL).unwrap();
        v["archive"] = json!({"timeline": 3});
        v["server"]["primary"] = json!({"host": "db1"});
        v["databases"][0]["relations"][0]["kind"] = json!("foreign_table");
        let m = Manifest::from_json(&serde_json::to_vec(&v).unwrap()).unwrap();
        let relations = m.databases.unwrap().remove(0).relations.unwrap();
        assert_eq!(relations[0].kind, RelationKind::Other);
    }

    #[test]
    fn a_manifest_of_a_later_format_or_not_a_manifest_is_refused() {
        let mut v: Value = serde_json::from_str(EARLIER_LOGICAL).unwrap();
        v["format_version"] = json!(2);
        let err = Manifest::from_json(&serde_json::to_vec(&v).unwrap()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "its format_version 2 is newer than this plugin reads (1)"
        );
        assert!(matches!(
            Manifest::from_json(b"not json"),
            Err(ReadError::Shape(_))
        ));
        assert!(matches!(
            Manifest::from_json(br#"{"format_version": 1}"#),
            Err(ReadError::Shape(_))
        ));
    }

    #[test]
    fn the_wal_range_comes_from_postgresqls_manifest() {
        let m = br#"{"PostgreSQL-Backup-Manifest-Version": 1, "Files": [],
            "WAL-Ranges": [ { "Timeline": 1, "Start-LSN": "0/2000028", "End-LSN": "0/2000100" } ]}"#;
        assert_eq!(
            WalRange::from_backup_manifest(m),
            Some(WalRange {
                timeline: 1,
                start_lsn: "0/2000028".into(),
                stop_lsn: "0/2000100".into(),
            })
        );
        assert_eq!(WalRange::from_backup_manifest(b"not json"), None);
        assert_eq!(
            WalRange::from_backup_manifest(br#"{"Files": [], "WAL-Ranges": []}"#),
            None
        );
    }
}
