//! The catalogue queries that fill a [`Manifest`] in.
//!
//! Collection is best effort: a query that fails leaves its field out, with a
//! warning, and the backup goes on. No password or password hash is ever read.

use std::collections::BTreeMap;

use futures::stream::{self, StreamExt};
use tokio_postgres::Client;

use super::{
    BackupSection, ClusterConfig, Column, Constraint, ConstraintKind, Database, Extension, Index,
    Manifest, PhysicalFacts, Relation, RelationKind, Role, Schema, Server, Tablespace,
};
use crate::postgres::connection::{Connection, PgError};

/// Settings copied into `cluster_config`.
const SETTINGS: &[&str] = &[
    "data_directory",
    "timezone",
    "max_connections",
    "wal_level",
    "server_encoding",
    "data_checksums",
    "block_size",
    "wal_block_size",
    "shared_preload_libraries",
    "lc_collate",
    "lc_ctype",
    "archive_mode",
];

/// How many databases the manifest describes at once.
const DATABASES_AT_ONCE: usize = 4;

/// How long a manifest query may wait for a lock before its field is left out.
const LOCK_TIMEOUT_SECS: u32 = 3;

/// The manifest of a logical backup. `admin` is connected to the maintenance
/// database; `databases` are the databases whose details are collected.
pub async fn collect(
    conn: &Connection,
    admin: &Client,
    databases: &[String],
    pg_dump_version: String,
    backup: BackupSection,
) -> Manifest {
    let mut m = header(conn, admin, backup).await;
    m.pg_dump_version = Some(pg_dump_version);
    m.cluster_config = best_effort("cluster_config", cluster_config(admin)).await;
    m.roles = best_effort("roles", roles(admin)).await;
    m.tablespaces = best_effort("tablespaces", tablespaces(admin)).await;
    // A connection per database: a few at once, so a cluster of many small
    // databases does not wait for each authentication in turn.
    let mut pending = Vec::with_capacity(databases.len());
    for name in databases {
        pending.push(database(conn, admin, name));
    }
    let dbs: Vec<Database> = stream::iter(pending)
        .buffered(DATABASES_AT_ONCE)
        .collect()
        .await;
    m.databases = Some(dbs);
    m
}

/// The manifest of a physical backup as far as `Init` knows it: the server,
/// its settings and tablespaces, the databases and their sizes. The WAL range
/// is set once the copy has ended.
pub async fn physical(conn: &Connection, admin: &Client, backup: PhysicalFacts) -> Manifest {
    let mut m = header(conn, admin, BackupSection::Physical(backup)).await;
    m.cluster_config = best_effort("cluster_config", cluster_config(admin)).await;
    m.tablespaces = best_effort("tablespaces", tablespaces(admin)).await;
    let sizes = admin
        .query(
            "SELECT datname::text, pg_database_size(oid) FROM pg_database WHERE datallowconn ORDER BY 1",
            &[],
        )
        .await;
    match sizes {
        Ok(rows) => {
            m.databases = Some(
                rows.iter()
                    .map(|r| Database {
                        size_bytes: Some(r.get(1)),
                        ..Database::named(r.get(0))
                    })
                    .collect(),
            );
        }
        Err(e) => tracing::warn!("manifest: databases left out: {}", PgError::from(e)),
    }
    m
}

/// What every manifest starts with: its format, the plugin, the time, the server.
async fn header(conn: &Connection, admin: &Client, backup: BackupSection) -> Manifest {
    let created_at = best_effort(
        "created_at",
        scalar(
            admin,
            "SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')",
        ),
    )
    .await;
    Manifest::new(server(conn, admin).await, created_at, backup)
}

async fn best_effort<T>(
    what: &str,
    fut: impl std::future::Future<Output = Result<T, tokio_postgres::Error>>,
) -> Option<T> {
    match fut.await {
        Ok(v) => Some(v),
        Err(e) => {
            tracing::warn!("manifest: {what} left out: {}", PgError::from(e));
            None
        }
    }
}

async fn scalar(client: &Client, sql: &str) -> Result<String, tokio_postgres::Error> {
    let row = client.query_one(sql, &[]).await?;
    row.try_get::<_, String>(0)
}

async fn server(conn: &Connection, admin: &Client) -> Server {
    Server {
        host: conn.host.clone(),
        port: conn.port,
        version: best_effort(
            "server.version",
            scalar(admin, "SELECT current_setting('server_version')"),
        )
        .await,
        version_num: best_effort(
            "server.version_num",
            scalar(admin, "SELECT current_setting('server_version_num')"),
        )
        .await
        .and_then(|v| v.parse().ok()),
        system_identifier: best_effort(
            "server.system_identifier",
            scalar(
                admin,
                "SELECT system_identifier::text FROM pg_control_system()",
            ),
        )
        .await,
        in_recovery: best_effort(
            "server.in_recovery",
            scalar(admin, "SELECT pg_is_in_recovery()::text"),
        )
        .await
        .map(|v| v == "true"),
        // Known from the replication connection only, which a physical backup opens.
        timeline: None,
    }
}

async fn cluster_config(admin: &Client) -> Result<ClusterConfig, tokio_postgres::Error> {
    let names: Vec<String> = SETTINGS.iter().map(|s| s.to_string()).collect();
    let rows = admin
        .query(
            // pg_settings spells some names in mixed case (TimeZone), SHOW and the list do not.
            "SELECT lower(name)::text, setting::text FROM pg_settings WHERE lower(name) = ANY($1::text[])",
            &[&names],
        )
        .await?;
    let mut settings: BTreeMap<String, String> =
        rows.iter().map(|row| (row.get(0), row.get(1))).collect();
    // Since PostgreSQL 16 the locale is a database property only.
    if !settings.contains_key("lc_collate") {
        if let Ok(row) = admin
            .query_one(
                "SELECT datcollate::text, datctype::text FROM pg_database WHERE datname = current_database()",
                &[],
            )
            .await
        {
            settings.insert("lc_collate".into(), row.get(0));
            settings.insert("lc_ctype".into(), row.get(1));
        }
    }
    // Only whether an archive command is set: the command may hold credentials.
    let set = admin
        .query_one(
            "SELECT coalesce(current_setting('archive_command', true), '') NOT IN ('', '(disabled)')",
            &[],
        )
        .await?;
    Ok(ClusterConfig {
        settings,
        archive_command_set: set.get(0),
    })
}

async fn roles(admin: &Client) -> Result<Vec<Role>, tokio_postgres::Error> {
    let rows = admin
        .query(
            "SELECT r.rolname::text, r.rolsuper, r.rolinherit, r.rolcreaterole, r.rolcreatedb,
                    r.rolcanlogin, r.rolreplication, r.rolbypassrls, r.rolconnlimit,
                    r.rolvaliduntil::text,
                    coalesce(array(SELECT g.rolname::text FROM pg_auth_members m
                                   JOIN pg_roles g ON g.oid = m.roleid
                                   WHERE m.member = r.oid ORDER BY 1), '{}')
             FROM pg_roles r ORDER BY 1",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| Role {
            name: r.get(0),
            superuser: r.get(1),
            inherit: r.get(2),
            create_role: r.get(3),
            create_db: r.get(4),
            can_login: r.get(5),
            replication: r.get(6),
            bypass_rls: r.get(7),
            connection_limit: r.get(8),
            valid_until: r.get(9),
            member_of: r.get(10),
        })
        .collect())
}

async fn tablespaces(admin: &Client) -> Result<Vec<Tablespace>, tokio_postgres::Error> {
    let rows = admin
        .query(
            "SELECT t.spcname::text, pg_get_userbyid(t.spcowner)::text,
                    pg_tablespace_location(t.oid)::text, coalesce(t.spcoptions, '{}')::text[],
                    t.oid
             FROM pg_tablespace t ORDER BY 1",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| Tablespace {
            oid: Some(r.get(4)),
            name: r.get(0),
            owner: r.get(1),
            location: r.get(2),
            options: r.get(3),
        })
        .collect())
}

/// One database: catalogue facts from the admin connection, contents from its own.
async fn database(conn: &Connection, admin: &Client, name: &str) -> Database {
    let mut d = Database::named(name);
    let facts = admin
        .query_opt(
            "SELECT pg_get_userbyid(datdba)::text, pg_encoding_to_char(encoding)::text,
                    datcollate::text, datctype::text, datallowconn,
                    pg_database_size(oid)
             FROM pg_database WHERE datname = $1",
            &[&name],
        )
        .await;
    match facts {
        Ok(Some(r)) => {
            d.owner = Some(r.get(0));
            d.encoding = Some(r.get(1));
            d.collation = Some(r.get(2));
            d.ctype = Some(r.get(3));
            d.size_bytes = Some(r.get(5));
            if !r.get::<_, bool>(4) {
                return d;
            }
        }
        Ok(None) => return d,
        Err(e) => tracing::warn!(
            "manifest: database {name:?} details left out: {}",
            PgError::from(e)
        ),
    }
    let client = match conn.connect(name).await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!("manifest: database {name:?} contents left out: {e}");
            return d;
        }
    };
    // Sizing a relation takes a lock: a table locked by someone else must cost
    // the manifest its details, not hold the backup up.
    if let Err(e) = client
        .simple_query(&format!("SET lock_timeout = '{}s'", LOCK_TIMEOUT_SECS))
        .await
    {
        tracing::debug!("manifest: lock_timeout not set: {}", PgError::from(e));
    }
    d.extensions = best_effort("extensions", extensions(&client)).await;
    d.schemas = best_effort("schemas", schemas(&client)).await;
    d.relations = best_effort("relations", relations(&client)).await;
    d
}

async fn extensions(client: &Client) -> Result<Vec<Extension>, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT e.extname::text, e.extversion::text, n.nspname::text
             FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace ORDER BY 1",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| Extension {
            name: r.get(0),
            version: r.get(1),
            schema: r.get(2),
        })
        .collect())
}

const USER_NAMESPACES: &str = "n.nspname NOT IN ('pg_catalog', 'information_schema')
    AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp\\_%'";

async fn schemas(client: &Client) -> Result<Vec<Schema>, tokio_postgres::Error> {
    let rows = client
        .query(
            &format!(
                "SELECT n.nspname::text, pg_get_userbyid(n.nspowner)::text
                 FROM pg_namespace n WHERE {USER_NAMESPACES} ORDER BY 1"
            ),
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| Schema {
            name: r.get(0),
            owner: r.get(1),
        })
        .collect())
}

fn relation_kind(code: &str) -> RelationKind {
    match code {
        "r" => RelationKind::Table,
        "p" => RelationKind::PartitionedTable,
        "v" => RelationKind::View,
        "m" => RelationKind::MaterializedView,
        "S" => RelationKind::Sequence,
        _ => RelationKind::Other,
    }
}

fn constraint_kind(code: &str) -> ConstraintKind {
    match code {
        "p" => ConstraintKind::PrimaryKey,
        "f" => ConstraintKind::ForeignKey,
        "u" => ConstraintKind::Unique,
        "c" => ConstraintKind::Check,
        "x" => ConstraintKind::Exclusion,
        "t" => ConstraintKind::Trigger,
        _ => ConstraintKind::Other,
    }
}

async fn relations(client: &Client) -> Result<Vec<Relation>, tokio_postgres::Error> {
    let rels = client
        .query(
            &format!(
                "SELECT c.oid::int8, n.nspname::text, c.relname::text, c.relkind::text,
                        pg_get_userbyid(c.relowner)::text,
                        CASE WHEN c.reltuples >= 0 THEN c.reltuples::int8 ELSE s.n_live_tup END,
                        pg_total_relation_size(c.oid)
                 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                 LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid
                 WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S') AND {USER_NAMESPACES}
                 ORDER BY 2, 3"
            ),
            &[],
        )
        .await?;
    let mut columns: BTreeMap<i64, Vec<Column>> = BTreeMap::new();
    for r in client
        .query(
            &format!(
                "SELECT a.attrelid::int8, a.attname::text, format_type(a.atttypid, a.atttypmod),
                        a.attnotnull, pg_get_expr(d.adbin, d.adrelid)
                 FROM pg_attribute a
                 JOIN pg_class c ON c.oid = a.attrelid
                 JOIN pg_namespace n ON n.oid = c.relnamespace
                 LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
                 WHERE a.attnum > 0 AND NOT a.attisdropped
                   AND c.relkind IN ('r', 'p', 'v', 'm') AND {USER_NAMESPACES}
                 ORDER BY a.attrelid, a.attnum"
            ),
            &[],
        )
        .await?
    {
        columns.entry(r.get(0)).or_default().push(Column {
            name: r.get(1),
            type_name: r.get(2),
            not_null: r.get(3),
            default: r.get(4),
        });
    }
    let mut constraints: BTreeMap<i64, Vec<Constraint>> = BTreeMap::new();
    for r in client
        .query(
            "SELECT conrelid::int8, conname::text, contype::text, pg_get_constraintdef(oid)
             FROM pg_constraint WHERE conrelid <> 0 ORDER BY conrelid, conname",
            &[],
        )
        .await?
    {
        constraints.entry(r.get(0)).or_default().push(Constraint {
            name: r.get(1),
            kind: constraint_kind(r.get(2)),
            definition: r.get(3),
        });
    }
    let mut indexes: BTreeMap<i64, Vec<Index>> = BTreeMap::new();
    for r in client
        .query(
            "SELECT i.indrelid::int8, c.relname::text, pg_get_indexdef(i.indexrelid)
             FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid ORDER BY 1, 2",
            &[],
        )
        .await?
    {
        indexes.entry(r.get(0)).or_default().push(Index {
            name: r.get(1),
            definition: r.get(2),
        });
    }
    Ok(rels
        .iter()
        .map(|r| {
            let oid: i64 = r.get(0);
            Relation {
                schema: r.get(1),
                name: r.get(2),
                kind: relation_kind(r.get(3)),
                owner: r.get(4),
                estimated_rows: r.get(5),
                size_bytes: r.get(6),
                columns: columns.remove(&oid),
                constraints: constraints.remove(&oid),
                indexes: indexes.remove(&oid),
            }
        })
        .collect())
}
