//! `/manifest.json`: what the cluster looked like at backup time.
//!
//! Collection is best effort: a query that fails leaves its field out, with a
//! warning, and the backup goes on. No password or password hash is ever read.

use std::collections::BTreeMap;

use futures::stream::{self, StreamExt};
use serde_json::{json, Map, Value};
use tokio_postgres::Client;

use crate::connection::{Connection, PgError};

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

/// What the backup is, for the manifest's `backup` field.
#[derive(Debug, Clone)]
pub struct BackupFacts {
    /// `database`, `cluster` or `split`.
    pub layout: &'static str,
    /// The database backed up, for a single-database backup.
    pub database: Option<String>,
    /// The snapshot's files, in order.
    pub files: Vec<String>,
    /// The options that shape the dump (no secrets).
    pub options: Value,
    /// The client tools' version line.
    pub pg_dump_version: String,
    /// Whether role passwords were left out of the globals.
    pub no_role_passwords: bool,
}

/// Builds the manifest. `admin` is connected to the maintenance database;
/// `databases` are the databases whose details are collected.
pub async fn collect(
    conn: &Connection,
    admin: &Client,
    databases: &[String],
    facts: &BackupFacts,
) -> Value {
    let mut m = header(conn, admin).await;
    m.insert("pg_dump_version".into(), json!(facts.pg_dump_version));
    m.insert(
        "backup".into(),
        json!({
            "layout": facts.layout,
            "database": facts.database,
            "files": facts.files,
            "options": facts.options,
            "no_role_passwords": facts.no_role_passwords,
        }),
    );
    if let Some(v) = best_effort("cluster_config", cluster_config(admin)).await {
        m.insert("cluster_config".into(), v);
    }
    if let Some(v) = best_effort("roles", roles(admin)).await {
        m.insert("roles".into(), v);
    }
    if let Some(v) = best_effort("tablespaces", tablespaces(admin)).await {
        m.insert("tablespaces".into(), v);
    }
    // A connection per database: a few at once, so a cluster of many small
    // databases does not wait for each authentication in turn.
    let mut pending = Vec::with_capacity(databases.len());
    for name in databases {
        pending.push(database(conn, admin, name));
    }
    let dbs: Vec<Value> = stream::iter(pending)
        .buffered(DATABASES_AT_ONCE)
        .collect()
        .await;
    m.insert("databases".into(), Value::Array(dbs));
    Value::Object(m)
}

/// The manifest of a physical backup as far as `Init` knows it: the server,
/// its settings and tablespaces, the databases and their sizes. The WAL range
/// is added once the copy has ended.
pub async fn physical(conn: &Connection, admin: &Client, backup: Value) -> Map<String, Value> {
    let mut m = header(conn, admin).await;
    m.insert("backup".into(), backup);
    if let Some(v) = best_effort("cluster_config", cluster_config(admin)).await {
        m.insert("cluster_config".into(), v);
    }
    if let Some(v) = best_effort("tablespaces", tablespaces(admin)).await {
        m.insert("tablespaces".into(), v);
    }
    let sizes = admin
        .query(
            "SELECT datname::text, pg_database_size(oid) FROM pg_database WHERE datallowconn ORDER BY 1",
            &[],
        )
        .await;
    match sizes {
        Ok(rows) => {
            let dbs: Vec<Value> = rows
                .iter()
                .map(|r| json!({"name": r.get::<_, String>(0), "size_bytes": r.get::<_, i64>(1)}))
                .collect();
            m.insert("databases".into(), Value::Array(dbs));
        }
        Err(e) => tracing::warn!("manifest: databases left out: {}", PgError::from(e)),
    }
    m
}

/// What every manifest starts with: its format, the plugin, the time, the server.
async fn header(conn: &Connection, admin: &Client) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("format_version".into(), json!(1));
    m.insert(
        "plugin".into(),
        json!({"name": "postgresql", "version": env!("CARGO_PKG_VERSION")}),
    );
    if let Some(v) = best_effort(
        "created_at",
        scalar(
            admin,
            "SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')",
        ),
    )
    .await
    {
        m.insert("created_at".into(), json!(v));
    }
    m.insert("server".into(), server(conn, admin).await);
    m
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

async fn server(conn: &Connection, admin: &Client) -> Value {
    let mut s = Map::new();
    s.insert("host".into(), json!(conn.host));
    s.insert("port".into(), json!(conn.port));
    if let Some(v) = best_effort(
        "server.version",
        scalar(admin, "SELECT current_setting('server_version')"),
    )
    .await
    {
        s.insert("version".into(), json!(v));
    }
    if let Some(v) = best_effort(
        "server.version_num",
        scalar(admin, "SELECT current_setting('server_version_num')"),
    )
    .await
    {
        s.insert("version_num".into(), json!(v.parse::<i64>().unwrap_or(0)));
    }
    if let Some(v) = best_effort(
        "server.system_identifier",
        scalar(
            admin,
            "SELECT system_identifier::text FROM pg_control_system()",
        ),
    )
    .await
    {
        s.insert("system_identifier".into(), json!(v));
    }
    if let Some(v) = best_effort(
        "server.in_recovery",
        scalar(admin, "SELECT pg_is_in_recovery()::text"),
    )
    .await
    {
        s.insert("in_recovery".into(), json!(v == "true"));
    }
    Value::Object(s)
}

async fn cluster_config(admin: &Client) -> Result<Value, tokio_postgres::Error> {
    let names: Vec<String> = SETTINGS.iter().map(|s| s.to_string()).collect();
    let rows = admin
        .query(
            // pg_settings spells some names in mixed case (TimeZone), SHOW and the list do not.
            "SELECT lower(name)::text, setting::text FROM pg_settings WHERE lower(name) = ANY($1::text[])",
            &[&names],
        )
        .await?;
    let mut c = Map::new();
    for row in rows {
        c.insert(row.get(0), json!(row.get::<_, String>(1)));
    }
    // Since PostgreSQL 16 the locale is a database property only.
    if !c.contains_key("lc_collate") {
        if let Ok(row) = admin
            .query_one(
                "SELECT datcollate::text, datctype::text FROM pg_database WHERE datname = current_database()",
                &[],
            )
            .await
        {
            c.insert("lc_collate".into(), json!(row.get::<_, String>(0)));
            c.insert("lc_ctype".into(), json!(row.get::<_, String>(1)));
        }
    }
    // Only whether an archive command is set: the command may hold credentials.
    let set = admin
        .query_one(
            "SELECT coalesce(current_setting('archive_command', true), '') NOT IN ('', '(disabled)')",
            &[],
        )
        .await?;
    c.insert("archive_command_set".into(), json!(set.get::<_, bool>(0)));
    Ok(Value::Object(c))
}

async fn roles(admin: &Client) -> Result<Value, tokio_postgres::Error> {
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
    Ok(Value::Array(
        rows.iter()
            .map(|r| {
                json!({
                    "name": r.get::<_, String>(0),
                    "superuser": r.get::<_, bool>(1),
                    "inherit": r.get::<_, bool>(2),
                    "create_role": r.get::<_, bool>(3),
                    "create_db": r.get::<_, bool>(4),
                    "can_login": r.get::<_, bool>(5),
                    "replication": r.get::<_, bool>(6),
                    "bypass_rls": r.get::<_, bool>(7),
                    "connection_limit": r.get::<_, i32>(8),
                    "valid_until": r.get::<_, Option<String>>(9),
                    "member_of": r.get::<_, Vec<String>>(10),
                })
            })
            .collect(),
    ))
}

async fn tablespaces(admin: &Client) -> Result<Value, tokio_postgres::Error> {
    let rows = admin
        .query(
            "SELECT t.spcname::text, pg_get_userbyid(t.spcowner)::text,
                    pg_tablespace_location(t.oid)::text, coalesce(t.spcoptions, '{}')::text[]
             FROM pg_tablespace t ORDER BY 1",
            &[],
        )
        .await?;
    Ok(Value::Array(
        rows.iter()
            .map(|r| {
                json!({
                    "name": r.get::<_, String>(0),
                    "owner": r.get::<_, String>(1),
                    "location": r.get::<_, String>(2),
                    "options": r.get::<_, Vec<String>>(3),
                })
            })
            .collect(),
    ))
}

/// One database: catalogue facts from the admin connection, contents from its own.
async fn database(conn: &Connection, admin: &Client, name: &str) -> Value {
    let mut d = Map::new();
    d.insert("name".into(), json!(name));
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
            d.insert("owner".into(), json!(r.get::<_, String>(0)));
            d.insert("encoding".into(), json!(r.get::<_, String>(1)));
            d.insert("collation".into(), json!(r.get::<_, String>(2)));
            d.insert("ctype".into(), json!(r.get::<_, String>(3)));
            d.insert("size_bytes".into(), json!(r.get::<_, i64>(5)));
            if !r.get::<_, bool>(4) {
                return Value::Object(d);
            }
        }
        Ok(None) => return Value::Object(d),
        Err(e) => tracing::warn!(
            "manifest: database {name:?} details left out: {}",
            PgError::from(e)
        ),
    }
    let client = match conn.connect(name).await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!("manifest: database {name:?} contents left out: {e}");
            return Value::Object(d);
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
    if let Some(v) = best_effort("extensions", extensions(&client)).await {
        d.insert("extensions".into(), v);
    }
    if let Some(v) = best_effort("schemas", schemas(&client)).await {
        d.insert("schemas".into(), v);
    }
    if let Some(v) = best_effort("relations", relations(&client)).await {
        d.insert("relations".into(), v);
    }
    Value::Object(d)
}

async fn extensions(client: &Client) -> Result<Value, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT e.extname::text, e.extversion::text, n.nspname::text
             FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace ORDER BY 1",
            &[],
        )
        .await?;
    Ok(Value::Array(
        rows.iter()
            .map(|r| json!({"name": r.get::<_, String>(0), "version": r.get::<_, String>(1), "schema": r.get::<_, String>(2)}))
            .collect(),
    ))
}

const USER_NAMESPACES: &str = "n.nspname NOT IN ('pg_catalog', 'information_schema')
    AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp\\_%'";

async fn schemas(client: &Client) -> Result<Value, tokio_postgres::Error> {
    let rows = client
        .query(
            &format!(
                "SELECT n.nspname::text, pg_get_userbyid(n.nspowner)::text
                 FROM pg_namespace n WHERE {USER_NAMESPACES} ORDER BY 1"
            ),
            &[],
        )
        .await?;
    Ok(Value::Array(
        rows.iter()
            .map(|r| json!({"name": r.get::<_, String>(0), "owner": r.get::<_, String>(1)}))
            .collect(),
    ))
}

fn relation_kind(code: &str) -> &'static str {
    match code {
        "r" => "table",
        "p" => "partitioned_table",
        "v" => "view",
        "m" => "materialized_view",
        "S" => "sequence",
        _ => "other",
    }
}

async fn relations(client: &Client) -> Result<Value, tokio_postgres::Error> {
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
    let mut columns: BTreeMap<i64, Vec<Value>> = BTreeMap::new();
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
        columns.entry(r.get(0)).or_default().push(json!({
            "name": r.get::<_, String>(1),
            "type": r.get::<_, String>(2),
            "not_null": r.get::<_, bool>(3),
            "default": r.get::<_, Option<String>>(4),
        }));
    }
    let mut constraints: BTreeMap<i64, Vec<Value>> = BTreeMap::new();
    for r in client
        .query(
            "SELECT conrelid::int8, conname::text, contype::text, pg_get_constraintdef(oid)
             FROM pg_constraint WHERE conrelid <> 0 ORDER BY conrelid, conname",
            &[],
        )
        .await?
    {
        let kind = match r.get::<_, String>(2).as_str() {
            "p" => "primary_key",
            "f" => "foreign_key",
            "u" => "unique",
            "c" => "check",
            "x" => "exclusion",
            "t" => "trigger",
            _ => "other",
        };
        constraints.entry(r.get(0)).or_default().push(json!({
            "name": r.get::<_, String>(1),
            "type": kind,
            "definition": r.get::<_, String>(3),
        }));
    }
    let mut indexes: BTreeMap<i64, Vec<Value>> = BTreeMap::new();
    for r in client
        .query(
            "SELECT i.indrelid::int8, c.relname::text, pg_get_indexdef(i.indexrelid)
             FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid ORDER BY 1, 2",
            &[],
        )
        .await?
    {
        indexes.entry(r.get(0)).or_default().push(json!({
            "name": r.get::<_, String>(1),
            "definition": r.get::<_, String>(2),
        }));
    }
    Ok(Value::Array(
        rels.iter()
            .map(|r| {
                let oid: i64 = r.get(0);
                let mut rel = json!({
                    "schema": r.get::<_, String>(1),
                    "name": r.get::<_, String>(2),
                    "kind": relation_kind(&r.get::<_, String>(3)),
                    "owner": r.get::<_, String>(4),
                    "estimated_rows": r.get::<_, Option<i64>>(5),
                    "size_bytes": r.get::<_, i64>(6),
                });
                if let Some(c) = columns.remove(&oid) {
                    rel["columns"] = Value::Array(c);
                }
                if let Some(c) = constraints.remove(&oid) {
                    rel["constraints"] = Value::Array(c);
                }
                if let Some(i) = indexes.remove(&oid) {
                    rel["indexes"] = Value::Array(i);
                }
                rel
            })
            .collect(),
    ))
}
