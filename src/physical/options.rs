//! The physical connectors' options (`plakar source add NAME postgres+bin://...`,
//! `plakar destination add NAME postgres+bin:///path/to/directory`).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::LazyLock;

use super::owner::Owner;
use super::recovery::{Recovery, RECOVERY_OPTIONS};
use crate::connection::{Connection, CLIENT_OPTIONS, SERVER_OPTIONS, TOOL_OPTIONS};
use crate::options::{Kind, OptionError, Spec, Table};

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
        description: "Have the server verify page checksums as it reads (on clusters that have them); a failure fails the backup and names the file.",
    },
];

static DESTINATION_OPTIONS: &[Spec] = &[
    Spec {
        name: "location",
        kind: Kind::Text,
        default: None,
        description: "The directory to restore into: `postgres+bin:///absolute/path`. It must be absent or empty, but for a WAL snapshot, which goes into a directory restored for recovery (see `recovery_target`).",
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
        Ok(PhysicalSource {
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
