//! Point-in-time recovery as the README tells it, through the real Plakar:
//! a store with one physical source that archives its WAL (`@mypg`,
//! `archive_wal=true`), runs as cron makes them, and the one-command restore
//! of a single snapshot to a moment.

use std::path::{Path, PathBuf};

use super::cluster::{bin_location, give_to_server, open_dir, Cluster};
use super::plakar::{Plakar, Ran, Store};

/// One user's Plakar archiving one cluster: its store and `@mypg`.
pub struct Archive {
    /// The user's Plakar.
    pub pk: Plakar,
    store: PathBuf,
    /// Destinations added so far, each named after its number.
    destinations: std::cell::Cell<u32>,
}

impl Archive {
    /// A fresh Plakar and store, with `src` added as `@mypg`.
    pub fn of(src: &Cluster) -> Archive {
        Archive::with(Plakar::new(), src, &[])
    }

    /// [`Archive::of`] with more source options (`key=value`).
    pub fn with_options(src: &Cluster, options: &[&str]) -> Archive {
        Archive::with(Plakar::new(), src, options)
    }

    /// [`Archive::of`] for the `postgres` system user, whom file modes bind.
    pub fn as_postgres(src: &Cluster) -> Archive {
        Archive::with(Plakar::as_postgres(), src, &[])
    }

    fn with(pk: Plakar, src: &Cluster, options: &[&str]) -> Archive {
        let store = pk.dir().join("store");
        pk.store_at(&store);
        let mut all = vec!["archive_wal=true"];
        all.extend_from_slice(options);
        pk.source("mypg", &src.bin_uri(), &all);
        Archive {
            pk,
            store,
            destinations: std::cell::Cell::new(0),
        }
    }

    /// The store.
    pub fn store(&self) -> Store<'_> {
        self.pk.existing_store(&self.store)
    }

    /// `plakar at STORE backup @mypg`, as cron runs it, with `-o` options.
    pub fn run_with(&self, options: &[&str]) -> Ran {
        self.run_source("mypg", options)
    }

    /// A run of another source of the same store.
    pub fn run_source(&self, source: &str, options: &[&str]) -> Ran {
        let mut args = vec!["backup", "-no-progress"];
        for o in options {
            args.extend(["-o", o]);
        }
        let at = format!("@{source}");
        args.push(&at);
        self.store().at(&args)
    }

    /// `plakar at STORE backup @mypg`.
    pub fn run(&self) -> Ran {
        self.run_with(&[])
    }

    /// A run that must succeed: its snapshot id.
    pub fn archived(&self) -> String {
        self.archived_with(&[])
    }

    /// A run with `-o` options that must succeed: its snapshot id.
    pub fn archived_with(&self, options: &[&str]) -> String {
        let store = self.store();
        let before = store.snapshots();
        self.run_with(options).ok();
        let new: Vec<String> = store
            .snapshots()
            .into_iter()
            .filter(|s| !before.contains(s))
            .collect();
        assert_eq!(new.len(), 1, "one new snapshot: {new:?}");
        new[0].clone()
    }

    /// `plakar destination add` for `data`: the destination's name.
    pub fn destination(&self, data: &Path) -> String {
        let n = self.destinations.get() + 1;
        self.destinations.set(n);
        let name = format!("recovered{n}");
        self.pk.destination(&name, &bin_location(data), &[]);
        name
    }

    /// The README's one command: `plakar restore -to @dest -o ... SNAPSHOT`
    /// into `data`, a new destination.
    pub fn restore(&self, data: &Path, snapshot: &str, options: &[&str]) -> Ran {
        let destination = self.destination(data);
        self.restore_to(&destination, snapshot, options)
    }

    /// The same, into a destination already added.
    pub fn restore_to(&self, destination: &str, snapshot: &str, options: &[&str]) -> Ran {
        let target = format!("@{destination}");
        let mut args = vec!["restore", "-to", target.as_str()];
        for o in options {
            args.extend(["-o", o]);
        }
        args.push(snapshot);
        self.store().at(&args)
    }

    /// A snapshot's `/.chain.json`.
    pub fn chain(&self, snapshot: &str) -> serde_json::Value {
        serde_json::from_slice(&self.store().cat(snapshot, "/.chain.json"))
            .expect("/.chain.json is JSON")
    }

    /// The newest snapshot, as `plakar ls` lists it first.
    pub fn latest(&self) -> String {
        self.store().snapshots()[0].clone()
    }
}

/// Makes the table of marks the point-in-time cases commit and look for.
pub fn create_marks(cluster: &Cluster) {
    cluster.sql(
        "postgres",
        "CREATE TABLE marks (name text PRIMARY KEY, at timestamptz NOT NULL DEFAULT clock_timestamp())",
    );
}

/// Commits a mark; the server's clock just after its commit.
pub fn mark(cluster: &Cluster, name: &str) -> String {
    cluster.sql(
        "postgres",
        &format!("INSERT INTO marks (name) VALUES ('{name}')"),
    );
    cluster.sql("postgres", "SELECT clock_timestamp()::text")
}

/// The names in `marks`, in the order they were written.
pub fn marks(cluster: &Cluster) -> Vec<String> {
    cluster.rows("postgres", "SELECT name FROM marks ORDER BY at")
}

/// A fresh directory for a restored data directory.
pub fn restore_dir() -> (tempfile::TempDir, PathBuf) {
    let dir = open_dir();
    // Plakar may run as `postgres`, who then writes the directory.
    give_to_server(dir.path());
    let data = dir.path().join("recovered");
    (dir, data)
}
