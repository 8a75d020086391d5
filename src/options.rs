//! Option tables: one per connector, the single source for parsing, the
//! unknown-key error, the validator JSON schema and the README's tables.

use std::collections::{BTreeMap, HashMap};

use serde_json::{json, Value};

/// The kind of value an option accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Free text.
    Text,
    /// Free text that must never be logged or echoed.
    Secret,
    /// `true` or `false` (also `1`/`0`, `yes`/`no`, `on`/`off`).
    Bool,
    /// A whole number in an inclusive range.
    Integer { min: i64, max: i64 },
    /// One word of a fixed list.
    Choice(&'static [&'static str]),
    /// A comma-separated list of names.
    List,
}

/// One option of a connector.
#[derive(Debug)]
pub struct Spec {
    /// The key users write: `plakar source add NAME URI key=value`.
    pub name: &'static str,
    /// What the value must look like.
    pub kind: Kind,
    /// The value in force when the key is absent, as users would write it.
    pub default: Option<&'static str>,
    /// One sentence for the README, the schema and `--help`.
    pub description: &'static str,
}

impl Spec {
    /// The accepted values, in words, for error messages.
    pub fn accepted(&self) -> String {
        match self.kind {
            Kind::Text | Kind::Secret => "any text".into(),
            Kind::Bool => "true or false".into(),
            Kind::Integer { min, max } => format!("a whole number from {min} to {max}"),
            Kind::Choice(words) => format!("one of {}", words.join(", ")),
            Kind::List => "a comma-separated list of names".into(),
        }
    }

    fn type_name(&self) -> &'static str {
        match self.kind {
            Kind::Text | Kind::Secret => "string",
            Kind::Bool => "boolean",
            Kind::Integer { .. } => "integer",
            Kind::Choice(_) => "enum",
            Kind::List => "list",
        }
    }
}

/// A configuration error, reported by `Init` before anything runs.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OptionError {
    /// A key no option of this connector has.
    #[error("unknown option `{key}`; the {connector} accepts: {accepted}")]
    Unknown {
        key: String,
        connector: &'static str,
        accepted: String,
    },
    /// A value of the wrong shape.
    #[error("option `{key}` has the invalid value {value}; accepted: {accepted}")]
    Invalid {
        key: &'static str,
        value: String,
        accepted: String,
    },
    /// Two options that cannot be used together, or one that needs another.
    #[error("{0}")]
    Conflict(String),
}

/// A value of the wrong shape, shown without leaking secrets.
fn invalid(spec: &Spec, value: &str) -> OptionError {
    let shown = if spec.kind == Kind::Secret {
        "(hidden)".to_string()
    } else {
        format!("{value:?}")
    };
    OptionError::Invalid {
        key: spec.name,
        value: shown,
        accepted: spec.accepted(),
    }
}

/// A connector's option table.
#[derive(Debug)]
pub struct Table {
    /// `source` or `destination`, as the user calls it.
    pub connector: &'static str,
    /// Every option, in the order the README lists them.
    pub specs: Vec<&'static Spec>,
}

impl Table {
    /// Builds a table from slices of specs (shared connection options first).
    pub fn new(connector: &'static str, parts: &[&'static [Spec]]) -> Table {
        let specs = parts.iter().flat_map(|p| p.iter()).collect();
        Table { connector, specs }
    }

    /// The spec of a key, if this table has it.
    pub fn spec(&self, name: &str) -> Option<&'static Spec> {
        self.specs.iter().copied().find(|s| s.name == name)
    }

    /// Checks every key and value of a configuration against the table.
    pub fn parse(&self, config: &HashMap<String, String>) -> Result<Values, OptionError> {
        let mut values = BTreeMap::new();
        // Sorted so that the first error reported does not depend on hash order.
        let mut keys: Vec<_> = config.keys().collect();
        keys.sort();
        for key in keys {
            let raw = &config[key];
            let spec = self.spec(key).ok_or_else(|| OptionError::Unknown {
                key: key.clone(),
                connector: self.connector,
                accepted: self
                    .specs
                    .iter()
                    .map(|s| s.name)
                    .collect::<Vec<_>>()
                    .join(", "),
            })?;
            values.insert(spec.name, check(spec, raw)?);
        }
        Ok(Values {
            table: self.specs.clone(),
            values,
        })
    }

    /// The validator JSON schema that `manifest.yaml` ships for this connector.
    pub fn json_schema(&self) -> Value {
        let mut properties = serde_json::Map::new();
        for spec in &self.specs {
            let mut p = serde_json::Map::new();
            // Plakar hands every value over as a string, so the schema checks strings.
            p.insert("type".into(), json!("string"));
            p.insert("description".into(), json!(spec.description));
            if let Some(d) = spec.default {
                p.insert("default".into(), json!(d));
            }
            match spec.kind {
                Kind::Bool => {
                    p.insert(
                        "enum".into(),
                        json!(["true", "false", "1", "0", "yes", "no", "on", "off"]),
                    );
                }
                Kind::Choice(words) => {
                    p.insert("enum".into(), json!(words));
                }
                Kind::Integer { .. } => {
                    p.insert("pattern".into(), json!("^[0-9]+$"));
                }
                _ => {}
            }
            p.insert("x-type".into(), json!(spec.type_name()));
            properties.insert(spec.name.into(), Value::Object(p));
        }
        json!({
            "$schema": "http://json-schema.org/draft-07/schema#",
            "title": format!("PostgreSQL {} options", self.connector),
            "type": "object",
            "properties": properties,
            "required": ["location"],
            "additionalProperties": false,
        })
    }

    /// The Markdown table of options that the README embeds.
    pub fn markdown(&self) -> String {
        let mut out =
            String::from("| Option | Type | Default | Description |\n|---|---|---|---|\n");
        for spec in &self.specs {
            out.push_str(&format!(
                "| `{}` | {} | {} | {} |\n",
                spec.name,
                spec.type_name(),
                spec.default.map(|d| format!("`{d}`")).unwrap_or_default(),
                spec.description
            ));
        }
        out
    }
}

/// A checked value.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Checked {
    Text(String),
    Bool(bool),
    Integer(i64),
    List(Vec<String>),
}

fn check(spec: &'static Spec, raw: &str) -> Result<Checked, OptionError> {
    match spec.kind {
        Kind::Text | Kind::Secret => Ok(Checked::Text(raw.to_string())),
        Kind::Bool => match raw.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Ok(Checked::Bool(true)),
            "false" | "0" | "no" | "off" => Ok(Checked::Bool(false)),
            _ => Err(invalid(spec, raw)),
        },
        Kind::Integer { min, max } => match raw.trim().parse::<i64>() {
            Ok(n) if (min..=max).contains(&n) => Ok(Checked::Integer(n)),
            _ => Err(invalid(spec, raw)),
        },
        Kind::Choice(words) => {
            let word = raw.trim();
            if words.contains(&word) {
                Ok(Checked::Text(word.to_string()))
            } else {
                Err(invalid(spec, raw))
            }
        }
        Kind::List => {
            let items: Vec<String> = raw
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect();
            if items.is_empty() {
                Err(invalid(spec, raw))
            } else {
                Ok(Checked::List(items))
            }
        }
    }
}

/// A configuration checked against its table; typed look-ups fall back to defaults.
#[derive(Debug)]
pub struct Values {
    table: Vec<&'static Spec>,
    values: BTreeMap<&'static str, Checked>,
}

impl Values {
    fn get(&self, name: &str) -> Option<Checked> {
        let spec = self
            .table
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("option `{name}` is not in the table"));
        match self.values.get(name) {
            Some(v) => Some(v.clone()),
            None => spec
                .default
                .map(|d| check(spec, d).expect("defaults in the option table are valid")),
        }
    }

    /// Whether this connector has the option at all.
    pub fn knows(&self, name: &str) -> bool {
        self.table.iter().any(|s| s.name == name)
    }

    /// Whether the user set this key.
    pub fn is_set(&self, name: &str) -> bool {
        self.values.contains_key(name)
    }

    /// A text or choice option.
    pub fn text(&self, name: &str) -> Option<String> {
        match self.get(name)? {
            Checked::Text(s) => Some(s),
            other => panic!("option `{name}` is not text: {other:?}"),
        }
    }

    /// A boolean option (false when absent and without default).
    pub fn flag(&self, name: &str) -> bool {
        match self.get(name) {
            Some(Checked::Bool(b)) => b,
            None => false,
            Some(other) => panic!("option `{name}` is not a boolean: {other:?}"),
        }
    }

    /// An integer option.
    pub fn integer(&self, name: &str) -> Option<i64> {
        match self.get(name)? {
            Checked::Integer(n) => Some(n),
            other => panic!("option `{name}` is not an integer: {other:?}"),
        }
    }

    /// A list option (empty when absent).
    pub fn list(&self, name: &str) -> Vec<String> {
        match self.get(name) {
            Some(Checked::List(items)) => items,
            None => Vec::new(),
            Some(other) => panic!("option `{name}` is not a list: {other:?}"),
        }
    }
}

/// Fails when both of two boolean options are true.
pub fn exclusive(values: &Values, a: &str, b: &str) -> Result<(), OptionError> {
    if values.flag(a) && values.flag(b) {
        return Err(OptionError::Conflict(format!(
            "options `{a}` and `{b}` cannot both be true; set at most one of them"
        )));
    }
    Ok(())
}

/// A configuration map from pairs, as Plakar hands it over (for tests).
#[cfg(test)]
pub fn config_map(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    static SPECS: &[Spec] = &[
        Spec {
            name: "location",
            kind: Kind::Text,
            default: None,
            description: "where",
        },
        Spec {
            name: "flag",
            kind: Kind::Bool,
            default: Some("false"),
            description: "a flag",
        },
        Spec {
            name: "n",
            kind: Kind::Integer { min: 1, max: 4 },
            default: Some("2"),
            description: "a number",
        },
        Spec {
            name: "mode",
            kind: Kind::Choice(&["a", "b"]),
            default: Some("a"),
            description: "a mode",
        },
        Spec {
            name: "secret",
            kind: Kind::Secret,
            default: None,
            description: "a secret",
        },
        Spec {
            name: "names",
            kind: Kind::List,
            default: None,
            description: "names",
        },
    ];

    fn parse(pairs: &[(&str, &str)]) -> Result<Values, OptionError> {
        Table::new("source", &[SPECS]).parse(&config_map(pairs))
    }

    #[test]
    fn defaults_apply_when_absent() {
        let v = parse(&[]).unwrap();
        assert!(!v.flag("flag"));
        assert_eq!(v.integer("n"), Some(2));
        assert_eq!(v.text("mode").as_deref(), Some("a"));
        assert!(v.list("names").is_empty());
        assert!(!v.is_set("n"));
    }

    #[test]
    fn values_are_typed() {
        let v = parse(&[("flag", "YES"), ("n", "4"), ("names", " a, b ,,c")]).unwrap();
        assert!(v.flag("flag"));
        assert_eq!(v.integer("n"), Some(4));
        assert_eq!(v.list("names"), ["a", "b", "c"]);
    }

    #[test]
    fn unknown_key_lists_accepted_keys() {
        let err = parse(&[("colour", "red")]).unwrap_err().to_string();
        assert_eq!(
            err,
            "unknown option `colour`; the source accepts: location, flag, n, mode, secret, names"
        );
    }

    #[test]
    fn invalid_values_name_key_and_accepted_values() {
        let err = parse(&[("flag", "maybe")]).unwrap_err().to_string();
        assert_eq!(
            err,
            "option `flag` has the invalid value \"maybe\"; accepted: true or false"
        );
        let err = parse(&[("n", "9")]).unwrap_err().to_string();
        assert!(err.contains("a whole number from 1 to 4"), "{err}");
        let err = parse(&[("mode", "c")]).unwrap_err().to_string();
        assert!(err.contains("one of a, b"), "{err}");
        let err = parse(&[("names", " , ")]).unwrap_err().to_string();
        assert!(err.contains("option `names`"), "{err}");
    }

    #[test]
    fn secrets_are_never_echoed() {
        static S: &[Spec] = &[Spec {
            name: "pin",
            kind: Kind::Secret,
            default: None,
            description: "",
        }];
        let err = invalid(&S[0], "hunter2").to_string();
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[test]
    fn schema_and_markdown_list_every_option() {
        let table = Table::new("source", &[SPECS]);
        let schema = table.json_schema();
        let props = schema["properties"].as_object().unwrap();
        assert_eq!(props.len(), SPECS.len());
        assert_eq!(props["mode"]["enum"], json!(["a", "b"]));
        assert_eq!(props["n"]["default"], json!("2"));
        let md = table.markdown();
        for spec in SPECS {
            assert!(md.contains(&format!("| `{}` |", spec.name)));
        }
    }
}
