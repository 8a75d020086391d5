//! Point-in-time recovery as the README tells it, through the real Plakar:
//! a store with a base backup source (`@mybin`) and a WAL source (`@mywal`)
//! of one cluster, archive runs, and the three documented restore commands.

use std::path::{Path, PathBuf};

use super::cluster::{bin_location, open_dir, Cluster};
use super::plakar::{Plakar, Ran, Store};

/// One user's Plakar archiving one cluster: its store, `@mybin` and `@mywal`.
pub struct Archive {
    /// The user's Plakar.
    pub pk: Plakar,
    store: PathBuf,
}

impl Archive {
    /// A fresh Plakar and store, with both sources of `src` added.
    pub fn of(src: &Cluster) -> Archive {
        Archive::of_two(src, src)
    }

    /// Base backups of `bases`, the WAL archived from `wal` (its standby, say).
    pub fn of_two(bases: &Cluster, wal: &Cluster) -> Archive {
        let pk = Plakar::new();
        let store = pk.dir().join("store");
        pk.store_at(&store);
        pk.source("mybin", &bases.bin_uri(), &[]);
        pk.source("mywal", &wal.wal_uri(), &[]);
        Archive { pk, store }
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
        let store = self.store();
        self.pk.destination("mydata", &bin_location(data), &[]);
        let mut args = vec!["restore", "-to", "@mydata"];
        for o in options {
            args.extend(["-o", o]);
        }
        args.push(base);
        store.at(&args).ok_saying(&["matches its backup_manifest"]);
        self.restore_wal_since(base)
    }

    /// The README's second command: every WAL snapshot since the base
    /// backup's, oldest first, into `@mydata`, stopping at the first failure.
    pub fn restore_wal_since(&self, base: &str) -> Ran {
        let since = self.timestamp_of(base);
        self.pk.shell(
            &self.store(),
            &format!(
                "plakar at \"$STORE\" ls -tag wal -since {since} | awk '{{print $2}}' | tac |\n  while read snap; do plakar at \"$STORE\" restore -to @mydata \"$snap\" || exit 1; done"
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

/// A fresh directory for a restored data directory.
pub fn restore_dir() -> (tempfile::TempDir, PathBuf) {
    let dir = open_dir();
    let data = dir.path().join("recovered");
    (dir, data)
}
