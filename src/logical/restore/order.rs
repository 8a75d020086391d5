//! Which snapshot file is restored how, and when: Plakar sends files in name
//! order, so a dump may arrive before the globals it needs and is then held.

use super::options::DestinationConfig;
use crate::names::Entry;
use crate::postgres::connection::MAINTENANCE_DB;

/// The databases every cluster has, which a restore never creates.
const PREEXISTING: &[&str] = &["postgres", "template1"];

/// How the database a dump is restored into comes to exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Create {
    /// It exists already.
    No,
    /// `pg_restore --create` makes it from the dump's own metadata.
    FromDump,
    /// The plugin creates it under the destination's name, with the encoding
    /// and locale of the dump's database, then restores into it.
    Renamed,
}

/// What to do with one file of the snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Nothing to restore (a directory); answer at once.
    Nothing,
    /// Read it and log what it says (`/manifest.json`).
    ReadManifest,
    /// Feed it to psql connected to `database`; `globals` marks the roles file.
    Script { database: String, globals: bool },
    /// Feed database `source`'s dump to pg_restore connected to `connect_to`,
    /// producing database `restored`; `spool` keeps a temporary copy first
    /// (`hold` until the globals are applied, or for `jobs`).
    Dump {
        source: String,
        connect_to: String,
        restored: String,
        create: Create,
        hold: bool,
        spool: bool,
    },
    /// Skip it, saying why.
    Skip(String),
    /// Refuse it, saying why.
    Refuse(String),
}

/// What the restore has done so far, as far as the next file's action depends on it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Seen {
    /// `/globals.sql` was applied.
    pub globals_applied: bool,
    /// A dump was already restored as the database the destination names (`create_db`).
    pub target_produced: bool,
}

/// The database a `create_db` restore must produce: the one the destination
/// names, unless it is one that every cluster has.
pub fn create_target(config: &DestinationConfig) -> Option<&str> {
    if !config.create_db {
        return None;
    }
    config
        .conn
        .database
        .as_deref()
        .filter(|db| !PREEXISTING.contains(db))
}

/// Whether `jobs` has dumps copied to a temporary file and restored with
/// `pg_restore --jobs` (a pipe cannot be restored in parallel), or streamed
/// like without it, and why. The copy costs the time it takes to receive the
/// whole dump before pg_restore starts; the parallel restore gains only what
/// spare cores let it gain. So a dump is streamed when `jobs` is 1, and when
/// the server runs on this machine (a Unix socket, `localhost`, a loopback
/// address) and the machine has no more CPUs than `jobs`: there the server's
/// workers, pg_restore and Plakar share the same few cores, and the copy costs
/// more than the parallel restore gains (measured in BENCHMARKS.md).
pub fn parallel_restore(config: &DestinationConfig, cpus: usize) -> Result<bool, Streamed> {
    let Some(jobs) = config.jobs else {
        return Ok(false);
    };
    if jobs < 2 {
        return Err(Streamed::OneJob);
    }
    if is_local(&config.conn.host) && cpus <= jobs {
        return Err(Streamed::LocalServer { cpus });
    }
    Ok(true)
}

/// Why a restore with `jobs` streams its dumps all the same.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Streamed {
    #[error("jobs=1 restores one object at a time: the dump is streamed")]
    OneJob,
    #[error("the server runs on this machine, whose {cpus} CPU{} the server's workers, pg_restore and Plakar would share: a parallel restore cannot make up for the temporary copy it needs, so the dump is streamed", if *.cpus == 1 { "" } else { "s" })]
    LocalServer { cpus: usize },
}

/// Whether the host is this machine: a Unix socket directory, `localhost`,
/// or a loopback address.
fn is_local(host: &str) -> bool {
    host.starts_with('/')
        || host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Decides a file's action, given what the restore has done so far;
/// `parallel` is [`parallel_restore`]'s verdict.
pub fn action(config: &DestinationConfig, entry: &Entry, seen: Seen, parallel: bool) -> Action {
    match entry {
        Entry::Root => Action::Nothing,
        Entry::Manifest => Action::ReadManifest,
        Entry::Globals if config.restore_globals => Action::Script {
            database: MAINTENANCE_DB.into(),
            globals: true,
        },
        Entry::Globals => Action::Skip(
            "roles and tablespaces not applied; set restore_globals=true to apply them".into(),
        ),
        Entry::Cluster => {
            let unfit = config.unfit_for_cluster_script();
            if unfit.is_empty() {
                Action::Script {
                    database: MAINTENANCE_DB.into(),
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
            let (connect_to, restored, create) = if !config.create_db {
                let target = config.conn.database.clone().unwrap_or_else(|| name.clone());
                (target.clone(), target, Create::No)
            } else if PREEXISTING.contains(&name.as_str()) {
                // Every cluster has them: like pg_dumpall, restore into them
                // rather than fail on their CREATE DATABASE.
                (name.clone(), name.clone(), Create::No)
            } else {
                match create_target(config) {
                    None => (MAINTENANCE_DB.into(), name.clone(), Create::FromDump),
                    Some(target) if seen.target_produced => {
                        return Action::Refuse(format!(
                            "the destination names database {target:?}, and this restore has already produced it from another dump; to restore a snapshot of several databases, leave the database out of the URI so that each dump creates its own, or pick one dump with `databases=` or by its path (SNAPSHOT:/<database>.dump)"
                        ))
                    }
                    Some(target) if target == name => {
                        (MAINTENANCE_DB.into(), name.clone(), Create::FromDump)
                    }
                    Some(target) => (target.to_string(), target.to_string(), Create::Renamed),
                }
            };
            let hold = config.restore_globals && !seen.globals_applied;
            Action::Dump {
                source: name.clone(),
                connect_to,
                restored,
                create,
                hold,
                spool: hold || parallel,
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

    fn applied() -> Seen {
        Seen {
            globals_applied: true,
            target_produced: false,
        }
    }

    #[test]
    fn dumps_wait_for_globals_only_when_asked() {
        let db = Entry::Database("app".into());
        let plain = config(&[("location", "postgres://h/")]);
        assert!(matches!(
            action(&plain, &db, Seen::default(), false),
            Action::Dump {
                hold: false,
                spool: false,
                ..
            }
        ));
        let globals = config(&[("location", "postgres://h/"), ("restore_globals", "true")]);
        assert!(matches!(
            action(&globals, &db, Seen::default(), false),
            Action::Dump {
                hold: true,
                spool: true,
                ..
            }
        ));
        assert!(matches!(
            action(&globals, &db, applied(), false),
            Action::Dump {
                hold: false,
                spool: false,
                ..
            }
        ));
        let jobs = config(&[("location", "postgres://h/"), ("jobs", "2")]);
        assert!(matches!(
            action(&jobs, &db, Seen::default(), true),
            Action::Dump {
                hold: false,
                spool: true,
                ..
            }
        ));
        assert!(matches!(
            action(&jobs, &db, Seen::default(), false),
            Action::Dump {
                hold: false,
                spool: false,
                ..
            }
        ));
    }

    #[test]
    fn jobs_spool_only_where_a_parallel_restore_can_win() {
        let parallel = |location: &str, jobs: &str, cpus| {
            let mut pairs = vec![("location", location)];
            if !jobs.is_empty() {
                pairs.push(("jobs", jobs));
            }
            parallel_restore(&config(&pairs), cpus)
        };
        // Without jobs, nothing to decide.
        assert_eq!(parallel("postgres://db.example.com/", "", 2), Ok(false));
        // A remote server: its cores are its own.
        assert_eq!(parallel("postgres://db.example.com/", "2", 2), Ok(true));
        assert_eq!(parallel("postgres://10.1.2.3/", "8", 1), Ok(true));
        // One job is a serial restore: nothing to gain from a copy.
        let one = parallel("postgres://db.example.com/", "1", 64)
            .unwrap_err()
            .to_string();
        assert!(one.contains("streamed"), "{one}");
        // A server on this machine, with no more CPUs than jobs.
        for local in [
            "postgres://localhost/",
            "postgres://127.0.0.1:5433/",
            "postgres://[::1]/",
            "postgres://%2Fvar%2Frun%2Fpostgresql/",
        ] {
            let why = parallel(local, "2", 2).unwrap_err().to_string();
            assert!(
                why.contains("2 CPUs") && why.contains("streamed"),
                "{local}: {why}"
            );
            assert_eq!(parallel(local, "2", 4), Ok(true), "{local}");
        }
    }

    #[test]
    fn targets_follow_create_db() {
        let db = Entry::Database("app".into());
        let target = |c: &DestinationConfig, seen| match action(c, &db, seen, false) {
            Action::Dump {
                connect_to,
                restored,
                create,
                ..
            } => (connect_to, restored, create),
            other => panic!("{other:?}"),
        };
        let named = config(&[("location", "postgres://h/other")]);
        assert_eq!(
            target(&named, applied()),
            ("other".into(), "other".into(), Create::No)
        );
        // No database named, or the dump's own: the dump creates it, from the maintenance database.
        for uri in ["postgres://h/", "postgres://h/app", "postgres://h/postgres"] {
            let create = config(&[("location", uri), ("create_db", "true")]);
            assert_eq!(
                target(&create, applied()),
                ("postgres".into(), "app".into(), Create::FromDump),
                "{uri}"
            );
        }
        // Another name: the plugin creates it like the dump's, once.
        let renamed = config(&[
            ("location", "postgres://h/app_check"),
            ("create_db", "true"),
        ]);
        assert_eq!(
            target(&renamed, applied()),
            ("app_check".into(), "app_check".into(), Create::Renamed)
        );
        let produced = Seen {
            target_produced: true,
            ..applied()
        };
        match action(&renamed, &db, produced, false) {
            Action::Refuse(why) => assert!(
                why.contains("\"app_check\"") && why.contains("databases="),
                "{why}"
            ),
            other => panic!("{other:?}"),
        }
        let create = config(&[("location", "postgres://h/"), ("create_db", "true")]);
        for name in ["postgres", "template1"] {
            let db = Entry::Database(name.into());
            assert!(
                matches!(action(&create, &db, applied(), false), Action::Dump { ref connect_to, ref restored, create: Create::No, .. } if connect_to == name && restored == name)
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
            action(&c, &Entry::Database("b".into()), applied(), false),
            Action::Skip(_)
        ));
        match action(&c, &Entry::Cluster, applied(), false) {
            Action::Refuse(why) => assert!(why.contains("no_owner, databases"), "{why}"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            action(&c, &Entry::Globals, Seen::default(), false),
            Action::Skip(_)
        ));
    }
}
