//! The physical connectors' options (`plakar source add NAME postgres+bin://...`,
//! `plakar destination add NAME postgres+bin:///path/to/directory`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use super::owner::Owner;
use super::recovery::{Recovery, RECOVERY_OPTIONS};
use crate::options::{Kind, OptionError, Spec, Table, Values};
use crate::postgres::connection::{Connection, CLIENT_OPTIONS, SERVER_OPTIONS, TOOL_OPTIONS};
use crate::postgres::replication::slot::SlotName;
use std::time::Duration;

static BASEBACKUP_OPTIONS: &[Spec] = &[
    Spec {
        name: "checkpoint",
        kind: Kind::Choice(&["fast", "spread"]),
        default: Some("fast"),
        description: "How the server's backup checkpoint runs (`pg_basebackup --checkpoint`): `fast` starts at once with a burst of writes, `spread` paces them like a normal checkpoint.",
    },
    Spec {
        name: "max_rate",
        kind: Kind::Text,
        default: None,
        description: "The most the server sends per second (`pg_basebackup --max-rate`), so a backup does not starve production: kilobytes, or with a `k` or `M` suffix, from 32k to 1024M.",
    },
    Spec {
        name: "verify_checksums",
        kind: Kind::Bool,
        default: Some("true"),
        description: "Verify page checksums as the files are read (on clusters that have them): by the server with `copy=stream`, by the plugin with `copy=direct`; a failure fails the backup and names the file.",
    },
];

static DIRECT_OPTIONS: &[Spec] = &[
    Spec {
        name: "copy",
        kind: Kind::Choice(&["auto", "direct", "stream"]),
        default: Some("auto"),
        description: "How the base backup is read. `direct`: on the database host, from the data directory itself, under PostgreSQL's low-level backup API (PostgreSQL 15 or later, a primary, Plakar run as the directory's owner or root): Plakar reads as many files at once as its `-cpu` allows, and stores a file unchanged since the previous snapshot without reading it. `stream`: through pg_basebackup's single stream, from anywhere. `auto`: `direct` when the data directory can be read here and is the server's, else `stream`; the log says which and why.",
    },
    Spec {
        name: "data_dir",
        kind: Kind::Text,
        default: None,
        description: "With `copy=direct` or `auto`: the data directory's path on this host. Without it, the server's `data_directory` setting (readable by superusers and members of pg_read_all_settings).",
    },
];

static ARCHIVE_OPTIONS: &[Spec] = &[
    Spec {
        name: "archive_wal",
        kind: Kind::Bool,
        default: Some("false"),
        description: "Make every snapshot restorable to any moment up to its run: each run adds the WAL written since the previous one, streamed from a permanent replication slot, and carries forward the base backup and the WAL that snapshot held (Plakar stores them again without reading them). A new base backup is taken by the first run, when the current one is older than `base_max_age`, and when a run cannot prove that the previous snapshot was committed. Run it often (every minute from cron): the slot keeps the server's WAL until the next run.",
    },
    Spec {
        name: "slot",
        kind: Kind::Text,
        default: Some(DEFAULT_SLOT),
        description: "With `archive_wal`: the permanent physical replication slot that keeps the server's WAL until a committed snapshot holds it; created by the first run. One slot per store. To stop archiving, drop it: `SELECT pg_drop_replication_slot('plakar_wal')`.",
    },
    Spec {
        name: "state_dir",
        kind: Kind::Text,
        default: None,
        description: "The local directory of this source's state. With `archive_wal`, two files per slot and server: `SLOT@HOST-PORT.lock`, held while a run lasts, and `SLOT@HOST-PORT.json`, what the last snapshots hold. With a direct copy, `direct-SYSTEMID.crc`: the checksums of the files it read, which the next copy's `backup_manifest` gives the files Plakar stores unread. Default: `$XDG_STATE_HOME/plakar-postgresql`, or `~/.local/state/plakar-postgresql`. Losing it loses no WAL and no data: the next run takes a new base backup (with `archive_wal`), and the next direct copy lists the files it does not read with their size alone.",
    },
    Spec {
        name: "base_max_age",
        kind: Kind::Text,
        default: Some(DEFAULT_BASE_MAX_AGE),
        description: "With `archive_wal`: the age at which a run takes a new base backup instead of carrying the current one forward, as a number and a unit (`s`, `m`, `h`, `d`), such as `12h` or `7d`. The snapshot of that run holds both, so every moment stays reachable.",
    },
    Spec {
        name: "new_base",
        kind: Kind::Bool,
        default: Some("false"),
        description: "With `archive_wal`: take a new base backup in this run whatever its age, for one run: `plakar backup -o new_base=true @mypg`.",
    },
];

static DESTINATION_OPTIONS: &[Spec] = &[
    Spec {
        name: "location",
        kind: Kind::Text,
        default: None,
        description: "The directory to restore into: `postgres+bin:///absolute/path`. It must be absent or empty.",
    },
    Spec {
        name: "sync",
        kind: Kind::Bool,
        default: Some("true"),
        description: "Flush every restored file to disk (syncfs on the file system of the data directory and of each tablespace) before the restore reports success, so that a crash just after it loses nothing; `false` for throw-away copies.",
    },
    Spec {
        name: "pg_bin_dir",
        kind: Kind::Text,
        default: None,
        description: "Directory of `pg_verifybackup` (and `pg_waldump`) of the backup's major version. Without it they are looked up in the usual install locations, then on `$PATH`.",
    },
    Spec {
        name: "owner",
        kind: Kind::Text,
        default: None,
        description: "The system user (such as `postgres`) the restored files are given to, with its primary group, so that the server starts as that user without a `chown -R`. Needs Plakar to run as root, unless it names the user running it. Without it the files belong to the user running Plakar.",
    },
    Spec {
        name: "tablespace_mapping",
        kind: Kind::Text,
        default: None,
        description: "Where tablespaces go instead of their original directories, as `pg_basebackup --tablespace-mapping` does: `NAME_OR_OID=/absolute/dir`, several separated by commas. Each directory must be absent or empty, and outside the data directory. Without it each tablespace is restored at its original directory, which must be absent or empty too.",
    },
];

/// Every option of the physical source.
pub static PHYSICAL_SOURCE_OPTIONS: LazyLock<Table> = LazyLock::new(|| {
    Table::new(
        "physical source",
        &[
            SERVER_OPTIONS,
            TOOL_OPTIONS,
            CLIENT_OPTIONS,
            BASEBACKUP_OPTIONS,
            DIRECT_OPTIONS,
            ARCHIVE_OPTIONS,
        ],
    )
});

/// Every option of the physical destination.
pub static PHYSICAL_DESTINATION_OPTIONS: LazyLock<Table> = LazyLock::new(|| {
    Table::new(
        "physical destination",
        &[DESTINATION_OPTIONS, RECOVERY_OPTIONS],
    )
});

/// The physical source configuration, checked.
#[derive(Debug)]
pub struct PhysicalSource {
    /// How to reach the server.
    pub conn: Connection,
    /// `--checkpoint=fast` (else spread).
    pub fast_checkpoint: bool,
    /// `--max-rate`, as pg_basebackup takes it.
    pub max_rate: Option<String>,
    /// Leave page checksums to the server (else `--no-verify-checksums`).
    pub verify_checksums: bool,
    /// How the snapshots carry their WAL, with `archive_wal`.
    pub archive: Option<ArchiveConfig>,
    /// How the base backup is read.
    pub copy: CopyMethod,
    /// The state directory (option `state_dir`, else the default), if any.
    pub state_dir: Option<PathBuf>,
    /// The data directory's path on this host, for a direct copy.
    pub data_dir: Option<PathBuf>,
}

/// How the base backup is read (option `copy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyMethod {
    Auto,
    Direct,
    Stream,
}

/// The slot that keeps the WAL when the user names none.
pub const DEFAULT_SLOT: &str = "plakar_wal";

/// The age of a base backup past which a run takes a new one.
pub const DEFAULT_BASE_MAX_AGE: &str = "1d";

/// What `archive_wal` and its companions ask.
#[derive(Debug, Clone)]
pub struct ArchiveConfig {
    /// The permanent slot.
    pub slot: SlotName,
    /// Where the runs' state lives.
    pub state_dir: PathBuf,
    /// The age past which a run takes a new base backup.
    pub base_max_age: Duration,
    /// Take a new base backup in this run.
    pub new_base: bool,
}

impl ArchiveConfig {
    fn parse(
        values: &Values,
        state_dir: Option<&Path>,
    ) -> Result<Option<ArchiveConfig>, OptionError> {
        if !values.flag("archive_wal") {
            for option in ["slot", "base_max_age", "new_base"] {
                if values.is_set(option) {
                    return Err(OptionError::Conflict(format!(
                        "option `{option}` belongs to WAL archiving, which is off: set archive_wal=true, or leave `{option}` out"
                    )));
                }
            }
            return Ok(None);
        }
        let raw = values.text("slot").unwrap_or_else(|| DEFAULT_SLOT.into());
        let slot = SlotName::new(&raw).map_err(|_| OptionError::Invalid {
            key: "slot",
            value: format!("{raw:?}"),
            accepted: "1 to 63 lower-case letters, digits and underscores".into(),
        })?;
        let state_dir = state_dir.map(Path::to_path_buf).ok_or_else(|| {
            OptionError::Conflict(
                "neither XDG_STATE_HOME nor HOME is set, so WAL archiving has no default state_dir; set the option `state_dir`".into(),
            )
        })?;
        let age = values
            .text("base_max_age")
            .unwrap_or_else(|| DEFAULT_BASE_MAX_AGE.into());
        let base_max_age = parse_age(&age).ok_or_else(|| OptionError::Invalid {
            key: "base_max_age",
            value: format!("{age:?}"),
            accepted: "a whole number and a unit, s, m, h or d, such as 12h or 7d".into(),
        })?;
        Ok(Some(ArchiveConfig {
            slot,
            state_dir,
            base_max_age,
            new_base: values.flag("new_base"),
        }))
    }
}

/// `90m`, `12h`, `7d`: a whole number of seconds, minutes, hours or days.
fn parse_age(raw: &str) -> Option<Duration> {
    let raw = raw.trim();
    let unit = raw.chars().last()?;
    let number: u64 = raw[..raw.len() - unit.len_utf8()].trim().parse().ok()?;
    let seconds = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        _ => return None,
    };
    (number > 0).then(|| Duration::from_secs(number * seconds))
}

/// Option `state_dir`, else the default; none when neither is there.
fn state_dir(values: &Values) -> Result<Option<PathBuf>, OptionError> {
    match values.text("state_dir") {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            if !dir.is_absolute() {
                return Err(OptionError::Invalid {
                    key: "state_dir",
                    value: format!("{:?}", dir.display().to_string()),
                    accepted: "an absolute directory path".into(),
                });
            }
            Ok(Some(dir))
        }
        None => Ok(default_state_dir()),
    }
}

/// `$XDG_STATE_HOME/plakar-postgresql`, or `~/.local/state/plakar-postgresql`.
fn default_state_dir() -> Option<PathBuf> {
    let nonempty = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    nonempty("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| nonempty("HOME").map(|h| PathBuf::from(h).join(".local/state")))
        .map(|d| d.join("plakar-postgresql"))
}

impl PhysicalSource {
    /// Checks the configuration Plakar hands to `Init`.
    pub fn parse(config: &HashMap<String, String>) -> Result<PhysicalSource, OptionError> {
        let values = PHYSICAL_SOURCE_OPTIONS.parse(config)?;
        let conn = Connection::from_values(&values)?;
        if let Some(db) = &conn.database {
            return Err(OptionError::Conflict(format!(
                "a physical backup copies the whole cluster, so the URI names no database; remove /{db} from `location`"
            )));
        }
        let max_rate = values
            .text("max_rate")
            .map(|r| check_rate(&r))
            .transpose()?;
        let copy = match values.text("copy").as_deref() {
            Some("direct") => CopyMethod::Direct,
            Some("stream") => CopyMethod::Stream,
            _ => CopyMethod::Auto,
        };
        let data_dir = values.text("data_dir").map(PathBuf::from);
        if let Some(dir) = &data_dir {
            if !dir.is_absolute() {
                return Err(OptionError::Invalid {
                    key: "data_dir",
                    value: format!("{:?}", dir.display().to_string()),
                    accepted: "an absolute directory path".into(),
                });
            }
            if copy == CopyMethod::Stream {
                return Err(OptionError::Conflict(
                    "option `data_dir` is for a direct copy, and copy=stream reads through pg_basebackup: leave `data_dir` out, or set copy=direct".into(),
                ));
            }
        }
        let state_dir = state_dir(&values)?;
        Ok(PhysicalSource {
            archive: ArchiveConfig::parse(&values, state_dir.as_deref())?,
            state_dir,
            copy,
            data_dir,
            conn,
            fast_checkpoint: values.text("checkpoint").as_deref() == Some("fast"),
            max_rate,
            verify_checksums: values.flag("verify_checksums"),
        })
    }
}

/// `max_rate` as pg_basebackup accepts it: 32 kB/s to 1 GB/s.
fn check_rate(raw: &str) -> Result<String, OptionError> {
    let rate = raw.trim();
    let (digits, unit) = match rate.strip_suffix(['k', 'K']) {
        Some(d) => (d, 1),
        None => match rate.strip_suffix('M') {
            Some(d) => (d, 1024),
            None => (rate, 1),
        },
    };
    let kilobytes = digits.parse::<u64>().ok().map(|n| n * unit);
    match kilobytes {
        Some(k) if (32..=1_048_576).contains(&k) => Ok(rate.to_string()),
        _ => Err(OptionError::Invalid {
            key: "max_rate",
            value: format!("{raw:?}"),
            accepted:
                "kilobytes per second from 32 to 1048576, or with a k or M suffix (32k to 1024M)"
                    .into(),
        }),
    }
}

/// The physical destination configuration, checked.
#[derive(Debug)]
pub struct PhysicalDestination {
    /// The directory to restore into.
    pub directory: PathBuf,
    /// The user's `pg_bin_dir`.
    pub pg_bin_dir: Option<PathBuf>,
    /// Who the restored files are given to (`owner`).
    pub owner: Option<Owner>,
    /// `tablespace_mapping`: a tablespace's name or OID, and its new directory.
    pub tablespace_mapping: Vec<(String, PathBuf)>,
    /// The recovery to write for `pg_ctl start`, if any recovery option is set.
    pub recovery: Option<Recovery>,
    /// Flush the restored files to disk before reporting success.
    pub sync: bool,
}

/// `tablespace_mapping`: `NAME_OR_OID=/absolute/dir[,...]`, each tablespace once.
fn parse_mapping(raw: &str) -> Result<Vec<(String, PathBuf)>, OptionError> {
    let invalid = || OptionError::Invalid {
        key: "tablespace_mapping",
        value: format!("{raw:?}"),
        accepted: "NAME_OR_OID=/absolute/dir, several separated by commas, each tablespace once"
            .into(),
    };
    let mut mapping: Vec<(String, PathBuf)> = Vec::new();
    for pair in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (key, dir) = pair.split_once('=').ok_or_else(invalid)?;
        let (key, dir) = (key.trim(), PathBuf::from(dir.trim()));
        if key.is_empty() || !dir.is_absolute() || mapping.iter().any(|(k, _)| k == key) {
            return Err(invalid());
        }
        mapping.push((key.to_string(), dir));
    }
    if mapping.is_empty() {
        return Err(invalid());
    }
    Ok(mapping)
}

impl PhysicalDestination {
    /// Checks the configuration Plakar hands to `Init`.
    pub fn parse(config: &HashMap<String, String>) -> Result<PhysicalDestination, OptionError> {
        let values = PHYSICAL_DESTINATION_OPTIONS.parse(config)?;
        let location = values.text("location").unwrap_or_default();
        let bad = |why: &str| {
            OptionError::Conflict(format!(
                "option `location` must name a local directory as postgres+bin:///absolute/path ({why})"
            ))
        };
        let url = url::Url::parse(&location).map_err(|e| bad(&e.to_string()))?;
        if url.scheme() != "postgres+bin" {
            return Err(bad(&format!("the scheme is {:?}", url.scheme())));
        }
        if !matches!(url.host_str(), None | Some("") | Some("localhost")) {
            return Err(bad(
                "it names a host: a physical restore writes files on this machine",
            ));
        }
        let path = url
            .to_file_path()
            .map_err(|_| bad("the path is not an absolute local path"))?;
        if path == std::path::Path::new("/") {
            return Err(bad("the root directory cannot be a data directory"));
        }
        let owner = values
            .text("owner")
            .map(|name| {
                Owner::lookup(&name).ok_or_else(|| OptionError::Invalid {
                    key: "owner",
                    value: format!("{name:?}"),
                    accepted: "the name of a user of this system, such as postgres".into(),
                })
            })
            .transpose()?;
        let tablespace_mapping = values
            .text("tablespace_mapping")
            .map(|raw| parse_mapping(&raw))
            .transpose()?
            .unwrap_or_default();
        Ok(PhysicalDestination {
            directory: path,
            pg_bin_dir: values.text("pg_bin_dir").map(PathBuf::from),
            owner,
            tablespace_mapping,
            recovery: Recovery::from_values(&values)?,
            sync: values.flag("sync"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::config_map;

    #[test]
    fn tablespace_mapping_takes_names_or_oids_and_absolute_directories() {
        assert_eq!(
            parse_mapping("fast=/srv/fast, 16385=/srv/idx").unwrap(),
            vec![
                ("fast".to_string(), PathBuf::from("/srv/fast")),
                ("16385".to_string(), PathBuf::from("/srv/idx")),
            ]
        );
        for bad in ["fast", "fast=relative/dir", "=/srv", "a=/x,a=/y", ","] {
            let why = parse_mapping(bad).unwrap_err().to_string();
            assert!(why.contains("NAME_OR_OID=/absolute/dir"), "{bad}: {why}");
        }
    }

    #[test]
    fn sources_take_the_cluster_and_basebackup_options() {
        let s = PhysicalSource::parse(&config_map(&[
            ("location", "postgres+bin://u:p@db:5433"),
            ("checkpoint", "spread"),
            ("max_rate", "100M"),
            ("verify_checksums", "false"),
        ]))
        .unwrap();
        assert_eq!((s.conn.host.as_str(), s.conn.port), ("db", 5433));
        assert!(!s.fast_checkpoint && !s.verify_checksums);
        assert_eq!(s.max_rate.as_deref(), Some("100M"));
        for (pairs, words) in [
            (vec![("location", "postgres+bin://db/app")], "remove /app"),
            (
                vec![("location", "postgres+bin://db"), ("database", "app")],
                "unknown option `database`",
            ),
            (
                vec![("location", "postgres+bin://db"), ("max_rate", "10")],
                "option `max_rate`",
            ),
            (
                vec![("location", "postgres+bin://db"), ("max_rate", "2048M")],
                "32k to 1024M",
            ),
            (
                vec![("location", "postgres+bin://db"), ("checkpoint", "now")],
                "fast, spread",
            ),
        ] {
            let err = PhysicalSource::parse(&config_map(&pairs))
                .unwrap_err()
                .to_string();
            assert!(err.contains(words), "{pairs:?}: {err}");
        }
    }

    #[test]
    fn destinations_are_local_absolute_directories() {
        let d = PhysicalDestination::parse(&config_map(&[(
            "location",
            "postgres+bin:///var/lib/postgresql/15/my%20copy",
        )]))
        .unwrap();
        assert_eq!(d.directory, PathBuf::from("/var/lib/postgresql/15/my copy"));
        for location in [
            "postgres+bin://db.example.com/x",
            "postgres:///x",
            "postgres+bin:///",
            "relative/dir",
        ] {
            let err = PhysicalDestination::parse(&config_map(&[("location", location)]))
                .unwrap_err()
                .to_string();
            assert!(err.contains("option `location`"), "{location}: {err}");
        }
    }

    #[test]
    fn an_owner_is_a_user_of_this_system() {
        let at = ("location", "postgres+bin:///srv/data");
        let d = PhysicalDestination::parse(&config_map(&[at, ("owner", "root")])).unwrap();
        assert_eq!(d.owner.map(|o| (o.uid, o.gid)), Some((0, 0)));
        assert!(PhysicalDestination::parse(&config_map(&[at]))
            .unwrap()
            .owner
            .is_none());
        let err = PhysicalDestination::parse(&config_map(&[at, ("owner", "nosuchuser")]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("option `owner` has the invalid value \"nosuchuser\""),
            "{err}"
        );
    }
}
