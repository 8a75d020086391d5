//! Property tests for the plugin's hostile-input surfaces: the option parsers
//! of both connectors, the connection URI, and the snapshot record names.
//!
//! Everything here is pure parsing: no server, no client tools.

mod common;

use std::collections::HashMap;

use plakar_postgresql::logical::backup::options::{SourceConfig, SOURCE_OPTIONS};
use plakar_postgresql::logical::restore::options::{DestinationConfig, DESTINATION_OPTIONS};
use plakar_postgresql::names::{classify, dump_path, Entry};
use plakar_postgresql::options::{OptionError, Table};
use proptest::prelude::*;
use proptest::sample::select;

/// Percent-encodes every byte but the URI's unreserved characters.
use common::cluster::encode as encode_all;

fn config() -> ProptestConfig {
    ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::with_cases(512)
    }
}

// ---------------------------------------------------------------------------
// Strategies
// ---------------------------------------------------------------------------

/// Any characters at all, control characters and unassigned planes included.
fn any_chars(max: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(any::<char>(), 0..=max).prop_map(String::from_iter)
}

/// Hostile text: empty, printable unicode, control characters, very long, or words parsers look for.
fn hostile_text() -> BoxedStrategy<String> {
    prop_oneof![
        4 => any_chars(24),
        3 => "\\PC{0,24}",
        2 => "[\\x00-\\x1f\\x7f ,.=:@/%\\\\'\"`-]{0,12}",
        1 => Just(String::new()),
        1 => "[a-z0-9 ]{2000,6000}",
        1 => any_chars(3000),
        3 => select(&[
            "true", "false", "1", "0", "yes", "NO", " on ", "off", "maybe", "-1", "5432", "65535",
            "65536", "64", "65", "3600", "99999999999999999999", "+7", " 2 ", "prefer",
            "disable", "verify-ca", "verify-full", "require", "allow", "a,b", " , ", ",",
            "s.a,s.b", "a.t,b.u", "/etc/hostname", "/nonexistent", "-----BEGIN ",
            "-----BEGIN CERTIFICATE-----\nAAA\n-----END CERTIFICATE-----\n", "\n", "\r\n",
        ][..])
        .prop_map(String::from),
        3 => uri_like(),
    ]
    .boxed()
}

/// Percent-encodes only what would change the URI's structure, keeping non-ASCII raw.
fn encode_some(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if c.is_ascii() && !(c.is_ascii_alphanumeric() || "-._~".contains(c)) {
            out.push_str(&format!("%{:02X}", c as u8));
        } else {
            out.push(c);
        }
    }
    out
}

/// A URI part: raw (possibly breaking the URI), or percent-encoded in full or in part.
fn uri_part() -> impl Strategy<Value = String> {
    (any_chars(12), 0..3u8).prop_map(|(s, how)| match how {
        0 => s,
        1 => encode_all(&s),
        _ => encode_some(&s),
    })
}

/// Things that look like `postgres://...` URIs, well formed or not.
fn uri_like() -> BoxedStrategy<String> {
    (
        select(
            &[
                "postgres",
                "postgresql",
                "POSTGRES",
                "mysql",
                "",
                "postgres:",
            ][..],
        ),
        proptest::option::of(uri_part()),
        proptest::option::of(uri_part()),
        uri_part(),
        proptest::option::of(prop_oneof![
            (0u32..70000).prop_map(|p| p.to_string()),
            "[0-9a-z]{0,6}"
        ]),
        proptest::option::of(uri_part()),
        proptest::option::of(uri_part()),
    )
        .prop_map(|(scheme, user, password, host, port, path, query)| {
            let mut uri = format!("{scheme}://");
            if let Some(u) = &user {
                uri.push_str(u);
                if let Some(p) = &password {
                    uri.push(':');
                    uri.push_str(p);
                }
                uri.push('@');
            }
            uri.push_str(&host);
            if let Some(p) = &port {
                uri.push(':');
                uri.push_str(p);
            }
            if let Some(p) = &path {
                uri.push('/');
                uri.push_str(p);
            }
            if let Some(q) = &query {
                uri.push('?');
                uri.push_str(q);
            }
            uri
        })
        .boxed()
}

/// A configuration map: the table's real keys mixed with arbitrary ones, often with a usable `location`.
fn config_map(table: &'static Table) -> impl Strategy<Value = HashMap<String, String>> {
    let names: Vec<String> = table.specs.iter().map(|s| s.name.to_string()).collect();
    let key = prop_oneof![12 => select(names), 1 => any_chars(12), 1 => "\\PC{1,12}"];
    let location = prop_oneof![
        Just("postgres://u@h/".to_string()),
        Just("postgres://u@h/app".to_string()),
        Just("postgres://".to_string()),
        uri_like(),
    ];
    (
        prop::collection::hash_map(key, hostile_text(), 0..8),
        proptest::option::of(location),
    )
        .prop_map(|(mut map, location)| {
            if let Some(l) = location {
                map.entry("location".into()).or_insert(l);
            }
            map
        })
}

// ---------------------------------------------------------------------------
// Checks on option errors
// ---------------------------------------------------------------------------

/// Fixed text error messages are made of, so a secret that happens to be one of its words is not a leak.
fn vocabulary(table: &Table) -> String {
    let mut words = String::from(
        "unknown option; the source destination accepts: option has the invalid value (hidden) \
         accepted: options and cannot both be true; set at most one of them \
         is required: a URI such as postgres://user@host:5432/dbname \
         is not a valid PostgreSQL URI; expected postgres://[user[:password]@]host[:port][/database] \
         the scheme is query parameters are not read; use the options ssl_mode, connect_timeout, ... instead \
         a percent-encoded part is not valid UTF-8 \
         the password cannot contain a line break \
         is empty; give a database name or leave the option out \
         a client certificate needs both (or ) and \
         needs the CA certificate that signed the server's: set or \
         a client certificate cannot be used with ssl_mode=disable \
         cannot both be set; give the file's path or its contents, not both \
         is not a readable file does not hold PEM text (a \"-----BEGIN ...\" block) \
         cannot write a private temporary file for \
         applies to whole-cluster backups, but database is named; remove , or name no database in and \
         schema-qualified names must all share one schema (pg_restore restricts -t to the schemas given with -n); \
         restore the schemas one at a time \
         cannot be used together: a parallel restore uses several transactions ",
    );
    for spec in &table.specs {
        words.push_str(spec.name);
        words.push(' ');
        words.push_str(&spec.accepted());
        words.push(' ');
        words.push_str(spec.description);
        words.push(' ');
    }
    words
}

/// Whether a message tells the user which option to look at.
fn names_an_option(table: &Table, message: &str) -> bool {
    message.starts_with("unknown option `")
        || message.contains("location")
        || message.contains("password")
        || table.specs.iter().any(|s| {
            message.contains(&format!("`{}`", s.name)) || message.contains(&format!("{}=", s.name))
        })
}

/// The properties every parse error must have, whatever the configuration.
fn check_error(
    table: &Table,
    config: &HashMap<String, String>,
    err: &OptionError,
) -> Result<(), TestCaseError> {
    let message = err.to_string();
    prop_assert!(!message.trim().is_empty(), "empty message for {config:?}");
    prop_assert!(
        names_an_option(table, &message),
        "message names no option: {message:?} for {config:?}"
    );
    match err {
        OptionError::Unknown { key, connector, .. } => {
            prop_assert!(config.contains_key(key), "{message}");
            prop_assert!(table.spec(key).is_none(), "{message}");
            prop_assert_eq!(*connector, table.connector);
        }
        OptionError::Invalid { key, .. } => {
            prop_assert!(config.contains_key(*key), "{message}");
            prop_assert!(table.spec(key).is_some(), "{message}");
        }
        OptionError::Conflict(_) => {}
    }

    // No secret value shows, raw or escaped, unless the user wrote it elsewhere too.
    let vocabulary = vocabulary(table);
    for (key, secret) in config {
        if key != "password" && !key.ends_with("_data") {
            continue;
        }
        let written_elsewhere = config
            .iter()
            .any(|(k, v)| k.contains(secret.as_str()) || (k != key && v.contains(secret.as_str())));
        if secret.chars().count() <= 3 || written_elsewhere || vocabulary.contains(secret.as_str())
        {
            continue;
        }
        let escaped = format!("{secret:?}");
        let escaped = &escaped[1..escaped.len() - 1];
        prop_assert!(
            !message.contains(secret.as_str()) && !message.contains(escaped),
            "the value of `{key}` shows in {message:?}"
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    /// Property 1a: the source parser never panics, and its errors are useful and keep secrets.
    #[test]
    fn source_options_fail_cleanly(config in config_map(&SOURCE_OPTIONS)) {
        if let Err(err) = SourceConfig::parse(&config) {
            check_error(&SOURCE_OPTIONS, &config, &err)?;
        }
    }

    /// Property 1b: the same for the destination parser.
    #[test]
    fn destination_options_fail_cleanly(config in config_map(&DESTINATION_OPTIONS)) {
        if let Err(err) = DestinationConfig::parse(&config) {
            check_error(&DESTINATION_OPTIONS, &config, &err)?;
        }
    }

    /// Property 1c: a hostile secret next to an otherwise valid configuration is never echoed.
    #[test]
    fn secrets_stay_hidden(
        key in select(&["password", "ssl_cert_data", "ssl_key_data", "ssl_root_cert_data"][..]),
        secret in prop_oneof![any_chars(40), "\\PC{4,40}", "[a-z\\n\\r:]{4,20}"],
        other in proptest::option::of((select(&["port", "ssl_mode", "jobs", "ssl_cert", "tables"][..]), hostile_text())),
    ) {
        let mut config: HashMap<String, String> = HashMap::new();
        config.insert("location".into(), "postgres://u@h/".into());
        config.insert(key.into(), secret);
        if let Some((k, v)) = other {
            config.insert(k.into(), v);
        }
        if let Err(err) = SourceConfig::parse(&config) {
            check_error(&SOURCE_OPTIONS, &config, &err)?;
        }
        if let Err(err) = DestinationConfig::parse(&config) {
            check_error(&DESTINATION_OPTIONS, &config, &err)?;
        }
    }
}

// ---------------------------------------------------------------------------
// Record names
// ---------------------------------------------------------------------------

/// Database names, hostile ones weighted up.
fn database_name() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => any_chars(24),
        2 => "\\PC{1,24}",
        2 => "[%/\\\\\\x00-\\x1f\\x7f.-]{1,10}",
        2 => "[0-9]{4,6}-?.{0,6}",
        1 => "[0-9]{5}-(globals|all|manifest)?(\\.sql|\\.json|\\.dump)?",
        1 => "%[0-9A-Fa-f+zZ-]{0,3}.{0,4}",
        1 => select(&[
            "globals", "all", "manifest", "manifest.json", "globals.sql", "all.sql", "00000-globals.sql",
            "12345-x", "12345-", "00000-globals", ".dump", "x.dump", ".", "..", "-", "--help", "-h",
            "%", "%%", "%2F", "%zz", "/", "\\", "\u{0}", "\u{7f}", "\u{85}", "\u{2028}", "\u{feff}",
        ][..])
        .prop_map(String::from),
    ]
    .prop_filter("database names are not empty", |s| !s.is_empty())
}

proptest! {
    #![proptest_config(config())]

    /// Property 2a: every database name maps to one path element and back.
    #[test]
    fn dump_paths_round_trip(name in database_name()) {
        let path = dump_path(&name);
        prop_assert!(path.starts_with('/'), "{path:?}");
        prop_assert_eq!(path.matches('/').count(), 1, "{:?}", path);
        prop_assert!(path.ends_with(".dump"), "{path:?}");
        prop_assert!(!path.chars().any(char::is_control), "{path:?}");
        prop_assert_eq!(classify(&path), Ok(Entry::Database(name)));
    }

    /// Property 2b: classify never panics, and refusals quote the path.
    #[test]
    fn classify_never_panics(
        path in prop_oneof![
            any_chars(30),
            any_chars(30).prop_map(|s| format!("/{s}")),
            any_chars(30).prop_map(|s| format!("/{s}.dump")),
            ("[0-9]{5}", any_chars(8)).prop_map(|(n, s)| format!("/{n}-{s}.dump")),
            "/[%0-9a-fA-F\\-+]{0,10}\\.dump",
        ]
    ) {
        match classify(&path) {
            Ok(Entry::Database(name)) => prop_assert!(!name.is_empty()),
            Ok(_) => {}
            Err(err) => prop_assert!(err.to_string().starts_with(&path)),
        }
    }
}

// ---------------------------------------------------------------------------
// Connection URIs
// ---------------------------------------------------------------------------

/// A URI part users would have to percent-encode, in the form they may write it.
fn encoded(s: &str, all: bool) -> String {
    if all {
        encode_all(s)
    } else {
        encode_some(s)
    }
}

proptest! {
    #![proptest_config(config())]

    /// Property 3: a percent-encoded URI parses back to exactly its parts.
    #[test]
    fn uri_parts_round_trip(
        user in prop_oneof![any_chars(12), "\\PC{0,12}", "[a-z_]{1,8}"],
        password in proptest::option::of(prop_oneof![any_chars(12), "[a-z:@/%]{0,8}"]),
        host in prop_oneof![
            any_chars(16),
            "\\PC{1,16}",
            "[a-z0-9.-]{1,16}",
            Just("/var/run/postgresql".to_string()),
            Just("::1".to_string()),
        ].prop_filter("a host is not empty", |h| !h.is_empty()),
        port in proptest::option::of(1u16..=65535),
        database in proptest::option::of(
            prop_oneof![any_chars(16), "\\PC{1,16}", "[a-z%/.]{1,8}"]
                .prop_filter("a database name is not empty", |d| !d.is_empty())
        ),
        all in any::<bool>(),
        scheme in select(&["postgres", "postgresql"][..]),
    ) {
        let mut uri = format!("{scheme}://");
        if !user.is_empty() || password.is_some() {
            uri.push_str(&encoded(&user, all));
            if let Some(p) = &password {
                uri.push(':');
                uri.push_str(&encoded(p, all));
            }
            uri.push('@');
        }
        uri.push_str(&encoded(&host, all));
        if let Some(p) = port {
            uri.push_str(&format!(":{p}"));
        }
        if let Some(d) = &database {
            uri.push('/');
            uri.push_str(&encoded(d, all));
        }
        let config: HashMap<String, String> = [("location".to_string(), uri.clone())].into();
        let parsed = SourceConfig::parse(&config);
        if password.as_deref().is_some_and(|p| p.contains(['\n', '\r'])) {
            let err = parsed.expect_err("a password with a line break is refused");
            check_error(&SOURCE_OPTIONS, &config, &err)?;
            prop_assert!(err.to_string().contains("password"));
            return Ok(());
        }
        if matches!(database.as_deref(), Some(".") | Some("..")) {
            // The URL parser would resolve these away; they are refused rather than dropped.
            let err = parsed.expect_err("a dot segment is refused");
            check_error(&SOURCE_OPTIONS, &config, &err)?;
            prop_assert!(err.to_string().contains("`database`"), "{}", err);
            return Ok(());
        }
        let conn = match parsed {
            Ok(c) => c.conn,
            Err(e) => return Err(TestCaseError::fail(format!("{uri:?} is refused: {e}"))),
        };
        prop_assert_eq!(&conn.host, &host, "host of {:?}", uri);
        prop_assert_eq!(conn.port, port.unwrap_or(5432), "port of {:?}", uri);
        if !user.is_empty() {
            prop_assert_eq!(&conn.user, &user, "user of {:?}", uri);
        }
        prop_assert_eq!(&conn.database, &database, "database of {:?}", uri);
    }
}
