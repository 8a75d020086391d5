//! The harness every integration test shares: real PostgreSQL clusters and
//! the real plugin binary, driven over its pipes.
#![allow(dead_code)]

pub mod caught;
pub mod cluster;
pub mod host;
pub mod load;
pub mod pipes;
pub mod pitr;
pub mod plakar;

// Not every test file uses every name.
#[allow(unused_imports)]
pub use cluster::{Cluster, ClusterOptions, PASSWORD, SUPERUSER};
#[allow(unused_imports)]
pub use host::{backup, restore, Snapshot};

/// Creates a database with a table of `n` rows covering a few types.
pub fn seed(cluster: &Cluster, db: &str, n: u32) {
    cluster.sql("postgres", &format!("CREATE DATABASE {}", ident(db)));
    cluster.sql(
        db,
        &format!(
            "CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL, price numeric(10,2), tags text[], doc jsonb, raw bytea, at timestamptz);
             INSERT INTO items SELECT i, 'item ' || i || E' \\u00e9\\t''q''', i * 1.25, ARRAY['a' || i, 'b'],
                    jsonb_build_object('n', i, 's', repeat('x', i % 7)), decode(md5(i::text), 'hex'),
                    '2026-01-01 00:00:00+00'::timestamptz + i * interval '1 minute'
             FROM generate_series(1, {n}) i;"
        ),
    );
}

/// Damages the first page of `table` on disk, past its header (the server,
/// after a checkpoint, reads it from there); its file, from the data directory.
pub fn damaged_page(cluster: &Cluster, db: &str, table: &str) -> String {
    use std::io::{Seek, SeekFrom, Write};
    let file = cluster.sql(db, &format!("SELECT pg_relation_filepath('{table}')"));
    cluster.sql(db, "CHECKPOINT");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(cluster.data_dir().join(&file))
        .unwrap();
    f.seek(SeekFrom::Start(4000)).unwrap();
    f.write_all(&[0xAB; 64]).unwrap();
    file
}

/// Every row of `items`, in key order, as text.
pub fn items(cluster: &Cluster, db: &str) -> Vec<String> {
    cluster.rows(db, "SELECT t::text FROM items t ORDER BY id")
}

/// The databases users made (not the templates nor `postgres`), sorted.
pub fn databases(cluster: &Cluster) -> Vec<String> {
    cluster.rows(
        "postgres",
        "SELECT datname FROM pg_database WHERE NOT datistemplate AND datname <> 'postgres' ORDER BY 1",
    )
}

/// The owner of a table.
pub fn table_owner(cluster: &Cluster, db: &str, table: &str) -> String {
    cluster.sql(
        db,
        &format!("SELECT tableowner FROM pg_tables WHERE tablename = '{table}'"),
    )
}

/// A source with the role `app_owner` owning the tables of database `app`.
pub fn owned_source() -> Cluster {
    let src = Cluster::start();
    src.sql(
        "postgres",
        "CREATE ROLE app_owner LOGIN PASSWORD 'owner-secret'",
    );
    seed(&src, "app", 300);
    src.sql(
        "app",
        "CREATE TABLE notes (id int PRIMARY KEY, body text);
         INSERT INTO notes SELECT i, 'note ' || i FROM generate_series(1, 50) i;
         ALTER TABLE items OWNER TO app_owner;
         ALTER TABLE notes OWNER TO app_owner;",
    );
    src
}

/// How many notes `app_owner` of [`owned_source`] reads in `app`, logged in with its own password.
pub fn notes_read_by_owner(cluster: &Cluster) -> String {
    cluster.sql_as(
        "app_owner",
        "owner-secret",
        "app",
        "SELECT count(*) FROM notes",
    )
}

/// A quoted SQL identifier.
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The source options for a cluster and database.
pub fn source(cluster: &Cluster, db: &str) -> Vec<(&'static str, String)> {
    vec![("location", cluster.uri(db))]
}

/// Borrows owned option pairs as the host functions take them.
pub fn pairs<'a>(v: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    v.iter().map(|(k, v)| (*k, v.as_str())).collect()
}
