//! Point-in-time recovery as the README tells it, through the real Plakar:
//! a store with a base backup source (`@mybin`) and a WAL source (`@mywal`)
//! of one cluster, archive runs, and the three documented restore commands.

use std::path::{Path, PathBuf};

use super::cluster::{bin_location, give_to_server, open_dir, Cluster};
use super::plakar::{Plakar, Ran, Store};

/// One user's Plakar archiving one cluster: its store, `@mybin` and `@mywal`.
pub struct Archive {
    /// The user's Plakar.
    pub pk: Plakar,
    store: PathBuf,
    /// Destinations added so far, each named after its number.
    destinations: std::cell::Cell<u32>,
}

impl Archive {
    /// A fresh Plakar and store, with both sources of `src` added.
    pub fn of(src: &Cluster) -> Archive {
        Archive::of_two(src, src)
    }

    /// Base backups of `bases`, the WAL archived from `wal` (its standby, say).
    pub fn of_two(bases: &Cluster, wal: &Cluster) -> Archive {
        Archive::with(Plakar::new(), bases, wal)
    }

    /// [`Archive::of`] for the `postgres` system user, whom file modes bind.
    pub fn as_postgres(src: &Cluster) -> Archive {
        Archive::with(Plakar::as_postgres(), src, src)
    }

    fn with(pk: Plakar, bases: &Cluster, wal: &Cluster) -> Archive {
        let store = pk.dir().join("store");
        pk.store_at(&store);
        pk.source("mybin", &bases.bin_uri(), &[]);
        pk.source("mywal", &wal.wal_uri(), &[]);
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

    /// `plakar at STORE backup @mybin`: a base backup's snapshot id.
    pub fn base_backup(&self) -> String {
        self.store().backed_up("mybin")
    }

    /// `plakar at STORE backup -tag wal @mywal`, as cron runs it.
    pub fn archive_run(&self) -> Ran {
        self.store()
            .at(&["backup", "-tag", "wal", "-no-progress", "@mywal"])
    }

    /// An archive run that must succeed: its snapshot id.
    pub fn archived(&self) -> String {
        let store = self.store();
        let before = store.snapshots();
        self.archive_run().ok();
        let new: Vec<String> = store
            .snapshots()
            .into_iter()
            .filter(|s| !before.contains(s))
            .collect();
        assert_eq!(new.len(), 1, "one new snapshot: {new:?}");
        new[0].clone()
    }

    /// The README's first two commands into `data`: the base snapshot with
    /// the recovery `options` (`-o key=value`), then every WAL snapshot since,
    /// oldest first. The second command's result.
    pub fn restore(&self, data: &Path, base: &str, options: &[&str]) -> Ran {
        let destination = self.destination(data);
        self.restore_base(&destination, base, options)
            .ok_saying(&["matches its backup_manifest"]);
        self.restore_wal_since(&destination, base)
    }

    /// `plakar destination add` for `data`: the destination's name.
    pub fn destination(&self, data: &Path) -> String {
        let n = self.destinations.get() + 1;
        self.destinations.set(n);
        let name = format!("recovered{n}");
        self.pk.destination(&name, &bin_location(data), &[]);
        name
    }

    /// The README's first command: the base snapshot with the recovery `options`.
    pub fn restore_base(&self, destination: &str, base: &str, options: &[&str]) -> Ran {
        let target = format!("@{destination}");
        let mut args = vec!["restore", "-to", target.as_str()];
        for o in options {
            args.extend(["-o", o]);
        }
        args.push(base);
        self.store().at(&args)
    }

    /// The README's second command: every WAL snapshot since the base
    /// backup's, oldest first, into `destination`, stopping at the first failure.
    pub fn restore_wal_since(&self, destination: &str, base: &str) -> Ran {
        let since = self.timestamp_of(base);
        self.pk.shell(
            &self.store(),
            &format!(
                "plakar at \"$STORE\" ls -tag wal -since {since} | awk '{{print $2}}' | tac |\n  while read snap; do plakar at \"$STORE\" restore -to @{destination} \"$snap\" || exit 1; done"
            ),
        )
    }

    /// When a snapshot was taken, as `plakar ls` prints it (RFC 3339).
    pub fn timestamp_of(&self, snapshot: &str) -> String {
        self.store()
            .at(&["ls"])
            .ok()
            .stdout
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some(snapshot))
            .and_then(|l| l.split_whitespace().next().map(str::to_string))
            .unwrap_or_else(|| panic!("{snapshot} is not in the store"))
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

/// A fresh directory for a restored data directory.
pub fn restore_dir() -> (tempfile::TempDir, PathBuf) {
    let dir = open_dir();
    // Plakar may run as `postgres`, who then writes the directory.
    give_to_server(dir.path());
    let data = dir.path().join("recovered");
    (dir, data)
}
