//! Which snapshot file is restored how, and when: Plakar sends files in name
//! order, so a dump may arrive before the globals it needs and is then held.

use super::options::DestinationConfig;
use crate::names::Entry;

/// The databases every cluster has, which a restore never creates.
const PREEXISTING: &[&str] = &["postgres", "template1"];

/// What to do with one file of the snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Nothing to restore (a directory); answer at once.
    Nothing,
    /// Read it and log what it says (`/manifest.json`).
    ReadManifest,
    /// Feed it to psql connected to `database`; `globals` marks the roles file.
    Script { database: String, globals: bool },
    /// Feed it to pg_restore; `create` makes it create the database
    /// (`--create`); `spool` keeps a temporary copy first (held, or for `jobs`).
    Dump {
        source: String,
        connect_to: String,
        restored: String,
        create: bool,
        hold: bool,
        spool: bool,
    },
    /// Skip it, saying why.
    Skip(String),
    /// Refuse it, saying why.
    Refuse(String),
}

/// Decides a file's action; `globals_applied` tells whether `/globals.sql` was restored already.
pub fn action(config: &DestinationConfig, entry: &Entry, globals_applied: bool) -> Action {
    match entry {
        Entry::Root => Action::Nothing,
        Entry::Manifest => Action::ReadManifest,
        Entry::Globals if config.restore_globals => Action::Script {
            database: "postgres".into(),
            globals: true,
        },
        Entry::Globals => Action::Skip(
            "roles and tablespaces not applied; set restore_globals=true to apply them".into(),
        ),
        Entry::Cluster => {
            let unfit = config.unfit_for_cluster_script();
            if unfit.is_empty() {
                Action::Script {
                    database: "postgres".into(),
                    globals: false,
                }
            } else {
                Action::Refuse(format!(
                    "a whole-cluster script (pg_dumpall) cannot honour the option(s) {}; remove them to restore it, or back up with split_databases=true",
                    unfit.join(", ")
                ))
            }
        }
        Entry::Database(name) => {
            if !config.databases.is_empty() && !config.databases.contains(name) {
                return Action::Skip(format!(
                    "database {name:?} is not in the `databases` option"
                ));
            }
            // `postgres` and `template1` exist on every cluster: like pg_dumpall,
            // restore into them rather than fail on their CREATE DATABASE.
            let create = config.create_db && !PREEXISTING.contains(&name.as_str());
            let (connect_to, restored) = if create {
                (
                    config
                        .conn
                        .database
                        .clone()
                        .unwrap_or_else(|| "postgres".into()),
                    name.clone(),
                )
            } else if config.create_db {
                (name.clone(), name.clone())
            } else {
                let target = config.conn.database.clone().unwrap_or_else(|| name.clone());
                (target.clone(), target)
            };
            let hold = config.restore_globals && !globals_applied;
            Action::Dump {
                source: name.clone(),
                connect_to,
                restored,
                create,
                hold,
                spool: hold || config.jobs.is_some(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(pairs: &[(&str, &str)]) -> DestinationConfig {
        let map = crate::options::config_map(pairs);
        DestinationConfig::parse(&map).unwrap()
    }

    #[test]
    fn dumps_wait_for_globals_only_when_asked() {
        let db = Entry::Database("app".into());
        let plain = config(&[("location", "postgres://h/")]);
        assert!(matches!(
            action(&plain, &db, false),
            Action::Dump {
                hold: false,
                spool: false,
                ..
            }
        ));
        let globals = config(&[("location", "postgres://h/"), ("restore_globals", "true")]);
        assert!(matches!(
            action(&globals, &db, false),
            Action::Dump {
                hold: true,
                spool: true,
                ..
            }
        ));
        assert!(matches!(
            action(&globals, &db, true),
            Action::Dump {
                hold: false,
                spool: false,
                ..
            }
        ));
        let jobs = config(&[("location", "postgres://h/"), ("jobs", "2")]);
        assert!(matches!(
            action(&jobs, &db, false),
            Action::Dump {
                hold: false,
                spool: true,
                ..
            }
        ));
    }

    #[test]
    fn targets_follow_create_db() {
        let db = Entry::Database("app".into());
        let named = config(&[("location", "postgres://h/other")]);
        assert!(
            matches!(action(&named, &db, true), Action::Dump { ref connect_to, ref restored, .. } if connect_to == "other" && restored == "other")
        );
        let create = config(&[("location", "postgres://h/"), ("create_db", "true")]);
        assert!(
            matches!(action(&create, &db, true), Action::Dump { ref connect_to, ref restored, create: true, .. } if connect_to == "postgres" && restored == "app")
        );
        for name in ["postgres", "template1"] {
            let db = Entry::Database(name.into());
            assert!(
                matches!(action(&create, &db, true), Action::Dump { ref connect_to, ref restored, create: false, .. } if connect_to == name && restored == name)
            );
        }
    }

    #[test]
    fn filters_and_cluster_scripts() {
        let c = config(&[
            ("location", "postgres://h/"),
            ("databases", "a"),
            ("no_owner", "1"),
        ]);
        assert!(matches!(
            action(&c, &Entry::Database("b".into()), true),
            Action::Skip(_)
        ));
        match action(&c, &Entry::Cluster, true) {
            Action::Refuse(why) => assert!(why.contains("no_owner, databases"), "{why}"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            action(&c, &Entry::Globals, false),
            Action::Skip(_)
        ));
    }
}
