//! Consistency end to end: a backup taken while pgbench writes restores to a
//! state that satisfies pgbench's invariants, and a database holding every
//! common type and kind of object comes back identical, row for row and in
//! `pg_dump --schema-only` output.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::host::{self, Snapshot};
use common::{Cluster, PASSWORD, SUPERUSER};

/// The PostgreSQL 15 client programs (pgbench, pg_dump).
fn tool(name: &str) -> PathBuf {
    common::cluster::default_bin_dir().join(name)
}

/// The cluster's Unix socket directory (the parent of its data directory).
fn socket_dir(cluster: &Cluster) -> &Path {
    cluster
        .data_dir()
        .parent()
        .expect("the data directory has a parent")
}

/// A client program connected to `cluster` as the superuser, over the Unix socket.
fn client(cluster: &Cluster, program: &str) -> Command {
    let mut cmd = Command::new(tool(program));
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("PGPASSWORD", PASSWORD)
        .env("LC_ALL", "C.UTF-8")
        .arg("-h")
        .arg(socket_dir(cluster))
        .arg("-p")
        .arg(cluster.port.to_string())
        .arg("-U")
        .arg(SUPERUSER)
        .stdin(Stdio::null());
    cmd
}

/// Runs a command to completion and panics with its output unless it succeeded.
fn succeed(cmd: &mut Command, what: &str) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Backs up with these options and returns the snapshot, or panics with the plugin's words.
async fn snapshot_of(config: &[(&str, &str)]) -> Snapshot {
    let run = host::backup(config).await;
    run.snapshot
        .unwrap_or_else(|e| panic!("backup failed: {e}\n{}", run.stderr))
}

/// A background process killed (and reaped) when dropped, even on a panic.
struct Background(Child);

impl Background {
    /// Whether the process is still running.
    fn running(&mut self) -> bool {
        matches!(self.0.try_wait(), Ok(None))
    }

    /// Kills it and returns what it wrote on stderr.
    fn stop(mut self) -> String {
        let _ = self.0.kill();
        let _ = self.0.wait();
        let mut err = String::new();
        if let Some(mut pipe) = self.0.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut pipe, &mut err);
        }
        err
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// pgbench's four sums and the history's size, as one line of text.
fn pgbench_sums(cluster: &Cluster, db: &str) -> (i64, i64, i64, i64, i64) {
    let line = cluster.sql(
        db,
        "SELECT (SELECT coalesce(sum(abalance), 0) FROM pgbench_accounts),
                (SELECT coalesce(sum(delta), 0) FROM pgbench_history),
                (SELECT coalesce(sum(bbalance), 0) FROM pgbench_branches),
                (SELECT coalesce(sum(tbalance), 0) FROM pgbench_tellers),
                (SELECT count(*) FROM pgbench_history)",
    );
    let v: Vec<i64> = line
        .split('|')
        .map(|s| {
            s.parse()
                .unwrap_or_else(|e| panic!("{s:?} in {line:?}: {e}"))
        })
        .collect();
    (v[0], v[1], v[2], v[3], v[4])
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backup_under_pgbench_load_restores_to_a_consistent_state() {
    let started = Instant::now();
    let src = Cluster::start();
    src.sql("postgres", "CREATE DATABASE bench");
    succeed(
        client(&src, "pgbench").args(["-i", "-s", "5", "-q", "bench"]),
        "pgbench -i",
    );

    // Writers in the background; -T bounds them even if the kill below never came.
    let mut load = Background(
        client(&src, "pgbench")
            .args(["-c", "4", "-j", "2", "-T", "40", "-n", "bench"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("pgbench starts"),
    );
    // The backup starts only once transactions are being committed.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let n: i64 = src
            .sql("bench", "SELECT count(*) FROM pgbench_history")
            .parse()
            .unwrap();
        if n >= 50 {
            break;
        }
        assert!(load.running(), "pgbench ended before writing");
        assert!(
            Instant::now() < deadline,
            "pgbench wrote {n} transactions in 15 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let before: i64 = src
        .sql("bench", "SELECT count(*) FROM pgbench_history")
        .parse()
        .unwrap();

    let snapshot = tokio::time::timeout(
        Duration::from_secs(30),
        snapshot_of(&[("location", &src.uri("bench"))]),
    )
    .await
    .expect("the backup ends within 30 s");

    // pgbench was writing for the whole backup, and wrote on after it.
    assert!(load.running(), "pgbench ended during the backup");
    std::thread::sleep(Duration::from_millis(300));
    let pgbench_err = load.stop();
    // Killed clients' transactions are rolled back: the source is consistent too.
    let (a, h, b, t, after) = pgbench_sums(&src, "bench");
    assert!(
        a == h && h == b && b == t,
        "source: accounts {a}, history {h}, branches {b}, tellers {t}\n{pgbench_err}"
    );

    let dst = Cluster::start();
    host::restore(
        &[("location", &dst.uri("")), ("create_db", "true")],
        &snapshot,
    )
    .await
    .assert_ok();
    let (a, h, b, t, n) = pgbench_sums(&dst, "bench");
    eprintln!(
        "history: {before} rows when the backup started, {n} in the snapshot, {after} when pgbench stopped"
    );
    assert!(n > 0, "the restored history is empty");
    assert!(
        n >= before && n < after,
        "the restored history holds {n} rows; {before} before the backup, {after} after pgbench stopped"
    );
    assert_eq!(
        (a, b, t),
        (h, h, h),
        "restored sums: accounts {a}, history {h}, branches {b}, tellers {t}"
    );
    // The accounts are all there, each exactly once.
    assert_eq!(
        dst.sql(
            "bench",
            "SELECT count(*), count(DISTINCT aid) FROM pgbench_accounts"
        ),
        "500000|500000"
    );
    eprintln!("took {:?}", started.elapsed());
}

/// Everything the second test puts in its database.
const EVERYTHING: &str = r#"
CREATE EXTENSION pgcrypto;
CREATE EXTENSION hstore;
CREATE EXTENSION citext;

CREATE SCHEMA extra AUTHORIZATION app_owner;
COMMENT ON SCHEMA extra IS 'objects outside public';

CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy', 'ecstatic');
COMMENT ON TYPE mood IS 'how it feels';
CREATE DOMAIN posint AS integer CONSTRAINT posint_positive CHECK (VALUE > 0);
COMMENT ON DOMAIN posint IS 'strictly positive';

CREATE TABLE kinds (
    id int GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    n numeric,
    fixed numeric(1000, 500),
    doc jsonb,
    ints int[],
    grid int[],
    texts text[],
    raw bytea,
    at timestamptz,
    span interval,
    r4 int4range,
    rt tstzrange,
    m mood,
    p posint,
    h hstore,
    email citext,
    secret text,
    doubled bigint GENERATED ALWAYS AS (p::bigint * 2) STORED,
    fingerprint bytea GENERATED ALWAYS AS (public.digest(raw, 'sha256')) STORED
);
COMMENT ON TABLE kinds IS 'one column per common type';
COMMENT ON COLUMN kinds.n IS 'unconstrained numeric, NaN and infinities included';
CREATE INDEX kinds_doc ON kinds USING gin (doc);
CREATE INDEX kinds_email ON kinds (email);

INSERT INTO kinds (n, fixed, doc, ints, grid, texts, raw, at, span, r4, rt, m, p, h, email, secret) VALUES
  ('NaN',
   ('1' || repeat('0', 499) || '.' || repeat('3', 500))::numeric,
   '{"a": [1, 2.50, {"b": null}], "s": "é ☃ \"q\" \\ \t", "big": 1e400, "t": true}',
   '{1,NULL,3}', '{{1,2},{3,NULL}}', '{"a b",NULL,"c,d","\"q\"","","NULL"}',
   (SELECT decode(string_agg(lpad(to_hex(i), 2, '0'), '' ORDER BY i), 'hex') FROM generate_series(0, 255) i),
   '2026-03-01 12:34:56.789012+05:45', '1 year 2 mons 3 days 04:05:06.789',
   '[1,10)', '[2026-01-01 00:00:00+00,infinity)', 'happy', 1,
   '"a"=>"1", "b"=>NULL, "key with space"=>"v=>w"', 'Alice@Example.COM',
   public.crypt('secret', '$1$saltsalt')),
  ('Infinity', ('-0.' || repeat('0', 499) || '1')::numeric, '[]', '[0:2]={7,8,9}', '{{{1},{2}},{{3},{4}}}', '{}',
   '\x', 'infinity', '-178000000 years', 'empty', 'empty', 'sad', 2, '', 'bob@example.com',
   encode(public.digest('x', 'sha1'), 'hex')),
  ('-Infinity', 0, 'null', '{}', '{}', '{NULL}', '\x00', '-infinity', '0', '(,5]', '(,)', 'ok', 3,
   NULL, 'BOB@example.com', NULL),
  (('1' || repeat('0', 5000))::numeric, NULL, '"just a string"', NULL, NULL, NULL, NULL,
   '2026-07-01 03:00:00 America/St_Johns', NULL, '[-2147483648,2147483647)',
   '["2026-01-01 00:00:00 Pacific/Chatham","2026-01-02 00:00:00 Asia/Kolkata")', 'ecstatic', 4, NULL, NULL, NULL),
  (('0.' || repeat('0', 16000) || '1')::numeric, NULL, '{"nested": {"deep": [[], {}, [null]]}}', NULL, NULL, NULL, NULL,
   '1999-12-31 23:59:59.999999-12', NULL, NULL, NULL, NULL, 5, NULL, NULL, NULL);
INSERT INTO kinds (n, doc, ints, texts, raw, at, r4, m, p, h, email)
SELECT i / 7.0, jsonb_build_object('i', i, 'sq', i * i), ARRAY[i, -i], ARRAY['t' || i, NULL],
       decode(md5(i::text), 'hex'), '2025-01-01 00:00:00+00'::timestamptz + i * interval '37 minutes 11.5 seconds',
       int4range(i, i + 10), (ARRAY['sad', 'ok', 'happy']::mood[])[1 + i % 3], i + 5,
       hstore('k' || i, i::text), 'User' || i || '@Example.com'
FROM generate_series(1, 300) i;

-- A partitioned table with range partitions (one sub-partitioned) and a default one.
CREATE TABLE events (id bigint NOT NULL, at date NOT NULL, kind text, PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
CREATE TABLE events_2025 PARTITION OF events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE TABLE events_2026 PARTITION OF events FOR VALUES FROM ('2026-01-01') TO ('2027-01-01') PARTITION BY HASH (id);
CREATE TABLE events_2026_h0 PARTITION OF events_2026 FOR VALUES WITH (MODULUS 2, REMAINDER 0);
CREATE TABLE events_2026_h1 PARTITION OF events_2026 FOR VALUES WITH (MODULUS 2, REMAINDER 1);
CREATE TABLE events_other PARTITION OF events DEFAULT;
CREATE INDEX events_kind ON events (kind);
INSERT INTO events SELECT i, date '2025-06-01' + i, 'k' || (i % 5) FROM generate_series(1, 900) i;
ALTER TABLE events OWNER TO app_owner;

-- Two tables that reference each other.
CREATE TABLE authors (id int PRIMARY KEY, name text NOT NULL, favourite_book int NOT NULL);
CREATE TABLE books (id serial PRIMARY KEY, title text NOT NULL,
                    author int NOT NULL REFERENCES authors DEFERRABLE INITIALLY DEFERRED);
ALTER TABLE authors ADD CONSTRAINT authors_favourite FOREIGN KEY (favourite_book) REFERENCES books DEFERRABLE INITIALLY IMMEDIATE;
BEGIN;
SET CONSTRAINTS ALL DEFERRED;
INSERT INTO authors SELECT i, 'author ' || i, i * 10 FROM generate_series(1, 20) i;
INSERT INTO books (id, title, author) SELECT i, 'book ' || i, 1 + i % 20 FROM generate_series(1, 200) i;
COMMIT;
SELECT setval('books_id_seq', 200);
COMMENT ON CONSTRAINT authors_favourite ON authors IS 'closes the cycle';

-- A function, a trigger, a view and a materialized view.
CREATE FUNCTION extra.shout(t text) RETURNS text LANGUAGE sql IMMUTABLE AS $$ SELECT upper(t) || '!' $$;
COMMENT ON FUNCTION extra.shout(text) IS 'louder';
CREATE FUNCTION books_touch() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN NEW.title := trim(NEW.title); RETURN NEW; END $$;
CREATE TRIGGER books_touch BEFORE INSERT OR UPDATE ON books FOR EACH ROW EXECUTE FUNCTION books_touch();
CREATE VIEW happy_kinds AS SELECT id, m, extra.shout(email::text) AS loud FROM kinds WHERE m >= 'happy';
COMMENT ON VIEW happy_kinds IS 'the cheerful ones';
CREATE MATERIALIZED VIEW event_counts AS SELECT kind, count(*) AS n, min(at) AS first FROM events GROUP BY kind;
CREATE UNIQUE INDEX event_counts_kind ON event_counts (kind);
COMMENT ON MATERIALIZED VIEW event_counts IS 'events per kind';

-- A table in another schema, owned by another role.
CREATE TABLE extra.notes (id int PRIMARY KEY, body citext, tags hstore);
INSERT INTO extra.notes SELECT i, 'Note ' || i, hstore('n', i::text) FROM generate_series(1, 50) i;
ALTER TABLE extra.notes OWNER TO app_owner;

-- Sequences away from their defaults.
CREATE SEQUENCE extra.ticket START 1000 INCREMENT 7 MAXVALUE 100000000 CYCLE;
SELECT setval('extra.ticket', 1234567, true);
CREATE SEQUENCE fresh_seq;
SELECT setval('fresh_seq', 42, false);
CREATE SEQUENCE down_seq INCREMENT -3 MINVALUE -1000 MAXVALUE -1 START -1;
SELECT nextval('down_seq'), nextval('down_seq');
ALTER SEQUENCE extra.ticket OWNER TO app_owner;

-- Privileges.
GRANT USAGE ON SCHEMA extra TO reader;
GRANT SELECT ON kinds, happy_kinds, event_counts TO reader;
GRANT SELECT (id, title), UPDATE (title) ON books TO reader;
GRANT USAGE ON SEQUENCE fresh_seq TO reader;
GRANT EXECUTE ON FUNCTION extra.shout(text) TO reader;
REVOKE EXECUTE ON FUNCTION books_touch() FROM PUBLIC;
ALTER DEFAULT PRIVILEGES FOR ROLE app_owner IN SCHEMA extra GRANT SELECT ON TABLES TO reader;

-- Large objects: empty, every byte value, several pages, a fixed oid with owner, comment and grant.
SELECT lo_from_bytea(0, ''::bytea);
SELECT lo_from_bytea(0, 'hello, large world'::bytea);
SELECT lo_from_bytea(424242, (SELECT decode(string_agg(lpad(to_hex(i), 2, '0'), '' ORDER BY i), 'hex') FROM generate_series(0, 255) i));
SELECT lo_from_bytea(0, decode(repeat('00ff7f80', 100000), 'hex'));
ALTER LARGE OBJECT 424242 OWNER TO app_owner;
COMMENT ON LARGE OBJECT 424242 IS 'every byte';
GRANT SELECT ON LARGE OBJECT 424242 TO reader;

-- The database itself.
COMMENT ON DATABASE everything IS 'all the types';
GRANT CONNECT, TEMPORARY ON DATABASE everything TO reader;
ALTER DATABASE everything SET work_mem = '8MB';
"#;

/// The relations whose rows can be read (tables, partitions, views,
/// materialized views), as quoted `schema.name`, sorted.
fn relations(cluster: &Cluster, db: &str) -> Vec<String> {
    cluster.rows(
        db,
        "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c
           JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE c.relkind IN ('r', 'p', 'v', 'm')
            AND n.nspname NOT IN ('pg_catalog', 'information_schema')
            AND n.nspname NOT LIKE 'pg\\_toast%'
          ORDER BY 1",
    )
}

/// The sequences as `schema.name|last_value|is_called`, sorted.
fn sequences(cluster: &Cluster, db: &str) -> Vec<String> {
    let names = cluster.rows(
        db,
        "SELECT format('%I.%I', schemaname, sequencename) FROM pg_sequences ORDER BY 1",
    );
    names
        .iter()
        .map(|s| {
            cluster.sql(
                db,
                &format!("SELECT '{s}' || '|' || last_value || '|' || is_called FROM {s}"),
            )
        })
        .collect()
}

/// Panics at the first row that differs, showing a short excerpt of it.
fn assert_same_rows(what: &str, source: &[String], target: &[String]) {
    let cut = |s: &str| -> String { s.chars().take(300).collect() };
    for (i, (s, t)) in source.iter().zip(target).enumerate() {
        assert!(
            s == t,
            "{what}: row {i} differs\nsource: {}\ntarget: {}",
            cut(s),
            cut(t)
        );
    }
    assert_eq!(source.len(), target.len(), "{what}: row counts differ");
}

/// `pg_dump --schema-only --create` of a database, without comment lines,
/// blank lines and the per-run `\restrict` keys.
fn schema(cluster: &Cluster, db: &str) -> Vec<String> {
    let out = succeed(
        client(cluster, "pg_dump").args(["--schema-only", "--create", "-d", db]),
        "pg_dump --schema-only",
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter(|l| {
            !l.trim().is_empty()
                && !l.starts_with("--")
                && !l.starts_with("\\restrict ")
                && !l.starts_with("\\unrestrict ")
        })
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_common_type_and_object_survives_a_round_trip() {
    let src = Cluster::start();
    src.sql(
        "postgres",
        "CREATE ROLE app_owner LOGIN PASSWORD 'owner-secret'; CREATE ROLE reader NOLOGIN",
    );
    src.sql("postgres", "CREATE DATABASE everything OWNER app_owner");
    src.sql("everything", EVERYTHING);

    let snapshot = snapshot_of(&[("location", &src.uri("everything"))]).await;
    assert_eq!(
        snapshot.paths(),
        ["/everything.dump", "/globals.sql", "/manifest.json"]
    );

    let dst = Cluster::start();
    host::restore(
        &[
            ("location", &dst.uri("")),
            ("create_db", "true"),
            ("restore_globals", "true"),
        ],
        &snapshot,
    )
    .await
    .assert_ok();

    // Every table, partition, view and materialized view, row for row.
    let tables = relations(&src, "everything");
    assert_eq!(relations(&dst, "everything"), tables);
    assert_eq!(tables.len(), 12, "{tables:?}");
    for table in &tables {
        let query = format!("SELECT t::text FROM {table} t ORDER BY 1");
        let source = src.rows("everything", &query);
        assert!(!source.is_empty(), "{table} is empty in the source");
        assert_same_rows(table, &source, &dst.rows("everything", &query));
    }

    // Large objects, their bytes, owners, comments and grants.
    let query = "SELECT oid, lo_get(oid) FROM pg_largeobject_metadata ORDER BY oid";
    let source = src.rows("everything", query);
    assert_eq!(source.len(), 4);
    assert_same_rows("large objects", &source, &dst.rows("everything", query));
    let query = "SELECT m.oid, pg_get_userbyid(m.lomowner), m.lomacl, obj_description(m.oid, 'pg_largeobject')
                   FROM pg_largeobject_metadata m ORDER BY m.oid";
    assert_eq!(dst.rows("everything", query), src.rows("everything", query));

    // Sequences: their current values and whether they were called.
    let seqs = sequences(&src, "everything");
    assert!(
        seqs.contains(&"extra.ticket|1234567|true".to_string())
            && seqs.contains(&"public.fresh_seq|42|false".to_string())
            && seqs.contains(&"public.down_seq|-4|true".to_string()),
        "{seqs:?}"
    );
    assert_eq!(sequences(&dst, "everything"), seqs);

    // The roles the grants name.
    let query = "SELECT rolname, rolcanlogin, rolsuper FROM pg_roles WHERE rolname IN ('app_owner', 'reader') ORDER BY 1";
    assert_eq!(dst.rows("postgres", query), src.rows("postgres", query));
    assert_eq!(
        dst.sql_as(
            "app_owner",
            "owner-secret",
            "everything",
            "SELECT count(*) FROM extra.notes"
        ),
        "50"
    );

    // The schema, database properties included.
    let source = schema(&src, "everything");
    let target = schema(&dst, "everything");
    for needle in [
        "CREATE EXTENSION IF NOT EXISTS pgcrypto WITH SCHEMA public;",
        "CREATE EXTENSION IF NOT EXISTS hstore WITH SCHEMA public;",
        "CREATE EXTENSION IF NOT EXISTS citext WITH SCHEMA public;",
        "COMMENT ON DATABASE everything IS 'all the types';",
        "ALTER DATABASE everything SET work_mem TO '8MB';",
        "GRANT SELECT ON TABLE public.kinds TO reader;",
        "ALTER TABLE ONLY public.events_2026 ATTACH PARTITION public.events_2026_h0 FOR VALUES WITH (modulus 2, remainder 0);",
        "    ADD CONSTRAINT authors_favourite FOREIGN KEY (favourite_book) REFERENCES public.books(id) DEFERRABLE;",
        "    ADD CONSTRAINT books_author_fkey FOREIGN KEY (author) REFERENCES public.authors(id) DEFERRABLE INITIALLY DEFERRED;",
        "    fingerprint bytea GENERATED ALWAYS AS (public.digest(raw, 'sha256'::text)) STORED",
    ] {
        assert!(
            source.iter().any(|l| l == needle),
            "{needle:?} missing from the source schema"
        );
    }
    for (i, (s, t)) in source.iter().zip(&target).enumerate() {
        assert!(
            s == t,
            "schema line {i} differs\nsource: {s}\ntarget: {t}\n--- source around it ---\n{}",
            source[i.saturating_sub(5)..(i + 5).min(source.len())].join("\n")
        );
    }
    assert_eq!(source.len(), target.len(), "schema lengths differ");
}
