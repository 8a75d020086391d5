//! Point-in-time recovery in the physical destination: the recovery target
//! options, and the settings and `recovery.signal` that a restore writes so
//! that `pg_ctl start` recovers to the target with no hand editing.

use std::path::Path;

use crate::options::{Kind, OptionError, Spec, Values};
use crate::postgres::replication::Lsn;

/// The `restore_command` of a restored snapshot: the WAL is in `pg_wal/`
/// already, and a recovery asked for (`recovery.signal`) needs a command,
/// whose failure sends PostgreSQL to `pg_wal/`.
const NOTHING_TO_FETCH: &str = "false";

/// Why it is so, in the settings' block for the DBA who reads it.
const WHY_NOTHING_TO_FETCH: &str = "# The snapshot's WAL is in pg_wal/ already: restore_command fetches nothing, and PostgreSQL reads pg_wal/.";

/// The recovery options of the physical destination.
pub static RECOVERY_OPTIONS: &[Spec] = &[
    Spec {
        name: "recovery_target",
        kind: Kind::Choice(&["immediate", "latest"]),
        default: None,
        description: "For a snapshot that carries its WAL: `latest` (the default for such a snapshot) replays all of it, `immediate` stops as soon as the copy is consistent. One recovery target at most.",
    },
    Spec {
        name: "recovery_target_time",
        kind: Kind::Text,
        default: None,
        description: "Recover up to this moment, a PostgreSQL timestamp with time zone such as `2026-12-02 14:03:11+00`: the transactions committed after it are not restored.",
    },
    Spec {
        name: "recovery_target_lsn",
        kind: Kind::Text,
        default: None,
        description: "Recover up to this WAL position, such as `16/B374D848`.",
    },
    Spec {
        name: "recovery_target_xid",
        kind: Kind::Integer {
            min: 3,
            max: i64::MAX,
        },
        default: None,
        description: "Recover up to the commit of this transaction ID.",
    },
    Spec {
        name: "recovery_target_name",
        kind: Kind::Text,
        default: None,
        description: "Recover up to the restore point of this name, made with `SELECT pg_create_restore_point('name')`.",
    },
    Spec {
        name: "recovery_target_action",
        kind: Kind::Choice(&["pause", "promote", "shutdown"]),
        default: None,
        description: "What the server does at the target: `pause` (PostgreSQL's default) for read-only queries until `SELECT pg_wal_replay_resume()`, `promote` to open for writes on a new timeline, `shutdown` to stop. Needs a recovery target other than `latest`.",
    },
    Spec {
        name: "recovery_target_inclusive",
        kind: Kind::Bool,
        default: None,
        description: "Whether recovery stops just after the target (PostgreSQL's default, true) or just before it. Needs `recovery_target_time`, `_lsn` or `_xid`.",
    },
    Spec {
        name: "recovery_target_timeline",
        kind: Kind::Text,
        default: None,
        description: "The timeline to recover along: `latest` (PostgreSQL's default: the newest whose history the restored WAL holds), `current`, or a timeline number.",
    },
];

/// Where recovery stops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// All the WAL restored.
    Latest,
    /// As soon as the copy is consistent.
    Immediate,
    /// A moment.
    Time(String),
    /// A WAL position.
    Lsn(Lsn),
    /// A transaction's commit.
    Xid(i64),
    /// A restore point.
    Name(String),
}

/// The recovery the user asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// Where it stops.
    pub target: Target,
    /// `recovery_target_action`.
    pub action: Option<String>,
    /// `recovery_target_inclusive`.
    pub inclusive: Option<bool>,
    /// `recovery_target_timeline`.
    pub timeline: Option<String>,
}

/// The first and last lines of the block this package writes into postgresql.auto.conf.
const BEGIN: &str = "# Point-in-time recovery, written by the plakar postgresql destination";
const END: &str = "# End of point-in-time recovery";

impl Recovery {
    /// Recovery to the end of the WAL, with PostgreSQL's defaults.
    pub fn latest() -> Recovery {
        Recovery {
            target: Target::Latest,
            action: None,
            inclusive: None,
            timeline: None,
        }
    }

    /// The option that names the target.
    pub fn option(&self) -> &'static str {
        match self.target {
            Target::Latest | Target::Immediate => "recovery_target",
            Target::Time(_) => "recovery_target_time",
            Target::Lsn(_) => "recovery_target_lsn",
            Target::Xid(_) => "recovery_target_xid",
            Target::Name(_) => "recovery_target_name",
        }
    }

    /// The recovery the options ask for; None without any recovery option.
    pub fn from_values(values: &Values) -> Result<Option<Recovery>, OptionError> {
        let targets = [
            "recovery_target",
            "recovery_target_time",
            "recovery_target_lsn",
            "recovery_target_xid",
            "recovery_target_name",
        ];
        let given: Vec<&str> = targets
            .iter()
            .copied()
            .filter(|t| values.is_set(t))
            .collect();
        if given.len() > 1 {
            return Err(OptionError::Conflict(format!(
                "options `{}` and `{}` are two recovery targets; PostgreSQL recovers to one: keep one of them",
                given[0], given[1]
            )));
        }
        let action = values.text("recovery_target_action");
        let inclusive = values
            .is_set("recovery_target_inclusive")
            .then(|| values.flag("recovery_target_inclusive"));
        let timeline = values
            .text("recovery_target_timeline")
            .map(|t| check_timeline(&t))
            .transpose()?;
        let Some(&name) = given.first() else {
            for (option, set) in [
                ("recovery_target_action", action.is_some()),
                ("recovery_target_inclusive", inclusive.is_some()),
                ("recovery_target_timeline", timeline.is_some()),
            ] {
                if set {
                    return Err(OptionError::Conflict(format!(
                        "option `{option}` needs a recovery target: set one of {}",
                        targets.join(", ")
                    )));
                }
            }
            return Ok(None);
        };
        // recovery_target_xid is an integer; every other target is text.
        let text = || values.text(name).unwrap_or_default();
        let target = match name {
            "recovery_target" if text() == "latest" => Target::Latest,
            "recovery_target" => Target::Immediate,
            "recovery_target_time" => Target::Time(check_time(&text())?),
            "recovery_target_lsn" => {
                let text = text();
                Target::Lsn(text.trim().parse().map_err(|_| OptionError::Invalid {
                    key: "recovery_target_lsn",
                    value: format!("{text:?}"),
                    accepted: "a WAL position such as 16/B374D848".into(),
                })?)
            }
            "recovery_target_xid" => Target::Xid(values.integer(name).unwrap_or_default()),
            _ => Target::Name(text()),
        };
        if action.is_some() && target == Target::Latest {
            return Err(OptionError::Conflict(
                "option `recovery_target_action` does nothing with recovery_target=latest: recovery ends when the WAL does, and the server opens for writes; leave it out, or name a target".into(),
            ));
        }
        if inclusive.is_some()
            && !matches!(target, Target::Time(_) | Target::Lsn(_) | Target::Xid(_))
        {
            return Err(OptionError::Conflict(
                "option `recovery_target_inclusive` needs recovery_target_time, recovery_target_lsn or recovery_target_xid".into(),
            ));
        }
        Ok(Some(Recovery {
            target,
            action,
            inclusive,
            timeline,
        }))
    }

    /// The settings, as postgresql.auto.conf lines take them.
    pub fn settings(&self) -> Vec<(&'static str, String)> {
        let mut lines = vec![("restore_command", NOTHING_TO_FETCH.to_string())];
        match &self.target {
            Target::Latest => {}
            Target::Immediate => lines.push(("recovery_target", "immediate".into())),
            Target::Time(t) => lines.push(("recovery_target_time", t.clone())),
            Target::Lsn(l) => lines.push(("recovery_target_lsn", l.to_string())),
            Target::Xid(x) => lines.push(("recovery_target_xid", x.to_string())),
            Target::Name(n) => lines.push(("recovery_target_name", n.clone())),
        }
        if let Some(a) = &self.action {
            lines.push(("recovery_target_action", a.clone()));
        }
        if let Some(i) = self.inclusive {
            lines.push(("recovery_target_inclusive", i.to_string()));
        }
        if let Some(t) = &self.timeline {
            lines.push(("recovery_target_timeline", t.clone()));
        }
        lines
    }

    /// Writes the settings into `data`'s postgresql.auto.conf (replacing a
    /// block written before), and `recovery.signal`; a copy of a standby
    /// loses its `standby.signal`, which would make it a standby again.
    pub fn write(&self, data: &Path) -> std::io::Result<()> {
        let conf = data.join("postgresql.auto.conf");
        let text = std::fs::read_to_string(&conf).unwrap_or_default();
        let mut kept = String::new();
        let mut inside = false;
        for line in text.lines() {
            if line == BEGIN {
                inside = true;
            } else if line == END {
                inside = false;
            } else if !inside {
                kept.push_str(line);
                kept.push('\n');
            }
        }
        kept.push_str(BEGIN);
        kept.push('\n');
        kept.push_str(WHY_NOTHING_TO_FETCH);
        kept.push('\n');
        for (key, value) in self.settings() {
            kept.push_str(&format!("{key} = '{}'\n", value.replace('\'', "''")));
        }
        kept.push_str(END);
        kept.push('\n');
        std::fs::write(&conf, kept)?;
        let signal = data.join("recovery.signal");
        if !signal.exists() {
            std::fs::write(&signal, b"")?;
        }
        let standby = data.join("standby.signal");
        if standby.exists() {
            std::fs::remove_file(&standby)?;
            tracing::info!(
                "{} was removed: the copy of a standby recovers to its target as a server of its own",
                standby.display()
            );
        }
        Ok(())
    }
}

/// A timestamp as recovery_target_time takes it, roughly checked.
fn check_time(raw: &str) -> Result<String, OptionError> {
    let t = raw.trim();
    let ok = t.len() >= 10
        && t.as_bytes()[..4].iter().all(u8::is_ascii_digit)
        && t.as_bytes()[4] == b'-'
        && t.chars()
            .all(|c| c.is_ascii_alphanumeric() || " -:+./_".contains(c));
    if ok {
        Ok(t.to_string())
    } else {
        Err(OptionError::Invalid {
            key: "recovery_target_time",
            value: format!("{raw:?}"),
            accepted: "a timestamp with time zone such as 2026-12-02 14:03:11+00".into(),
        })
    }
}

/// `latest`, `current` or a timeline number.
fn check_timeline(raw: &str) -> Result<String, OptionError> {
    let t = raw.trim();
    if t == "latest" || t == "current" || t.parse::<u32>().is_ok_and(|n| n > 0) {
        Ok(t.to_string())
    } else {
        Err(OptionError::Invalid {
            key: "recovery_target_timeline",
            value: format!("{raw:?}"),
            accepted: "latest, current, or a timeline number".into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::{config_map, Table};

    fn parse(pairs: &[(&str, &str)]) -> Result<Option<Recovery>, OptionError> {
        let table = Table::new("physical destination", &[RECOVERY_OPTIONS]);
        Recovery::from_values(&table.parse(&config_map(pairs)).unwrap())
    }

    #[test]
    fn one_target_and_its_companions() {
        assert_eq!(parse(&[]).unwrap(), None);
        let r = parse(&[
            ("recovery_target_time", "2026-12-02 14:03:11+00"),
            ("recovery_target_action", "promote"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(
            r.settings(),
            vec![
                ("restore_command", "false".to_string()),
                ("recovery_target_time", "2026-12-02 14:03:11+00".to_string()),
                ("recovery_target_action", "promote".to_string()),
            ]
        );
        let latest = parse(&[("recovery_target", "latest")]).unwrap().unwrap();
        assert_eq!(latest.settings().len(), 1);
        let lsn = parse(&[("recovery_target_lsn", "16/B374D848")])
            .unwrap()
            .unwrap();
        assert_eq!(lsn.target, Target::Lsn("16/B374D848".parse().unwrap()));
        let xid = parse(&[("recovery_target_xid", "28024")]).unwrap().unwrap();
        assert_eq!(xid.target, Target::Xid(28024));
        assert_eq!(
            xid.settings()[1],
            ("recovery_target_xid", "28024".to_string())
        );
        let immediate = parse(&[("recovery_target", "immediate")]).unwrap().unwrap();
        assert_eq!(immediate.target, Target::Immediate);
    }

    #[test]
    fn conflicting_or_lonely_options_are_refused_by_name() {
        for (pairs, words) in [
            (
                vec![("recovery_target", "latest"), ("recovery_target_name", "x")],
                "options `recovery_target` and `recovery_target_name` are two recovery targets",
            ),
            (
                vec![("recovery_target_action", "promote")],
                "option `recovery_target_action` needs a recovery target",
            ),
            (
                vec![("recovery_target_lsn", "16")],
                "option `recovery_target_lsn` has the invalid value \"16\"",
            ),
            (
                vec![("recovery_target_time", "yesterday")],
                "a timestamp with time zone such as 2026-12-02 14:03:11+00",
            ),
            (
                vec![
                    ("recovery_target", "latest"),
                    ("recovery_target_action", "pause"),
                ],
                "does nothing with recovery_target=latest",
            ),
            (
                vec![
                    ("recovery_target_name", "x"),
                    ("recovery_target_inclusive", "false"),
                ],
                "option `recovery_target_inclusive` needs",
            ),
            (
                vec![
                    ("recovery_target", "latest"),
                    ("recovery_target_timeline", "two"),
                ],
                "latest, current, or a timeline number",
            ),
        ] {
            let err = parse(&pairs).unwrap_err().to_string();
            assert!(err.contains(words), "{pairs:?}: {err}");
        }
    }

    #[test]
    fn the_settings_replace_those_written_before() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("postgresql.auto.conf"),
            "work_mem = '8MB'\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("standby.signal"), b"").unwrap();
        parse(&[("recovery_target_name", "a")])
            .unwrap()
            .unwrap()
            .write(dir.path())
            .unwrap();
        parse(&[("recovery_target_name", "it's")])
            .unwrap()
            .unwrap()
            .write(dir.path())
            .unwrap();
        let conf = std::fs::read_to_string(dir.path().join("postgresql.auto.conf")).unwrap();
        assert!(conf.starts_with("work_mem = '8MB'\n"), "{conf}");
        assert_eq!(conf.matches("restore_command = ").count(), 1, "{conf}");
        assert_eq!(conf.matches(WHY_NOTHING_TO_FETCH).count(), 1, "{conf}");
        assert!(conf.contains("recovery_target_name = 'it''s'"), "{conf}");
        assert!(dir.path().join("recovery.signal").exists());
        assert!(!dir.path().join("standby.signal").exists());
    }
}
