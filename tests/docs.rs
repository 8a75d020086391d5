//! The option tables are the single source of the validator schemas, the
//! README's option tables and the man page's option lists: these tests fail
//! when any of them disagrees. Run with BLESS=1 to rewrite the generated parts.

use std::path::Path;

use plakar_postgresql::connectors::{Connector, Side, CONNECTORS};
use plakar_postgresql::options::Table;

fn bless() -> bool {
    std::env::var_os("BLESS").is_some()
}

fn check_file(path: &str, expected: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    if bless() {
        std::fs::write(&path, expected).unwrap();
    }
    let actual = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        actual == expected,
        "{} is out of date with the option table; run `BLESS=1 cargo test --test docs`",
        path.display()
    );
}

fn check_section(path: &str, marker: &str, expected: &str) {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    let text = std::fs::read_to_string(&full).unwrap();
    let begin = format!("<!-- {marker}:begin -->\n");
    let end = format!("<!-- {marker}:end -->");
    let start = text
        .find(&begin)
        .unwrap_or_else(|| panic!("{path} lacks {begin}"))
        + begin.len();
    let stop = text[start..]
        .find(&end)
        .unwrap_or_else(|| panic!("{path} lacks {end}"))
        + start;
    if bless() {
        let updated = format!("{}{}{}", &text[..start], expected, &text[stop..]);
        std::fs::write(&full, updated).unwrap();
        return;
    }
    assert!(
        text[start..stop] == *expected,
        "the {marker} table of {path} is out of date; run `BLESS=1 cargo test --test docs`"
    );
}

fn schema(table: &Table) -> String {
    serde_json::to_string_pretty(&table.json_schema()).unwrap() + "\n"
}

/// The README's marker and the man page's section for a connector's options.
fn doc_names(connector: &Connector) -> (String, String) {
    let name = connector.options.connector;
    (
        format!("{}-options", name.replace(' ', "-")),
        format!("{} OPTIONS", name.to_uppercase()),
    )
}

#[test]
fn validators_match_the_option_tables() {
    for connector in &CONNECTORS {
        check_file(
            &format!("validators/{}", connector.validator()),
            &schema(connector.options),
        );
    }
}

#[test]
fn readme_tables_match_the_option_tables() {
    for connector in &CONNECTORS {
        let (marker, _) = doc_names(connector);
        check_section("README.md", &marker, &connector.options.markdown());
    }
}

#[test]
fn man_page_lists_every_option() {
    let man = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("postgresql.1"))
        .unwrap();
    for connector in &CONNECTORS {
        let (_, section) = doc_names(connector);
        let table = connector.options;
        let start = man
            .find(&format!(".Sh {section}"))
            .unwrap_or_else(|| panic!("no {section}"));
        let rest = &man[start + 4..];
        let body = &rest[..rest.find("\n.Sh ").unwrap_or(rest.len())];
        for spec in &table.specs {
            assert!(
                body.contains(&format!(".It Cm {}", spec.name)),
                "postgresql.1 {section} does not describe `{}`",
                spec.name
            );
        }
        let listed = body.matches(".It Cm ").count();
        assert_eq!(
            listed,
            table.specs.len(),
            "postgresql.1 {section} lists options the plugin does not have"
        );
    }
}

#[test]
fn man_page_synopsis_names_every_connector() {
    let man = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("postgresql.1"))
        .unwrap();
    let roles: Vec<&str> = CONNECTORS.iter().map(|c| c.role).collect();
    let synopsis = format!(".Cm {}\n", roles.join(" | "));
    assert!(
        man.contains(&synopsis),
        "postgresql.1's SYNOPSIS does not read {synopsis:?}"
    );
}

#[test]
fn manifest_declares_exactly_the_connectors_the_plugin_serves() {
    let manifest =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("manifest.yaml"))
            .unwrap();
    assert!(manifest.contains("name: postgresql"));
    // One block per connector, each starting at its `- type:` line.
    let blocks: Vec<&str> = manifest.split("  - type: ").skip(1).collect();
    assert_eq!(
        blocks.len(),
        CONNECTORS.len(),
        "manifest.yaml declares {} connectors, the plugin serves {}",
        blocks.len(),
        CONNECTORS.len()
    );
    for connector in &CONNECTORS {
        let block = blocks
            .iter()
            .find(|b| b.contains(&format!("args: [{}]\n", connector.role)))
            .unwrap_or_else(|| {
                panic!(
                    "manifest.yaml has no connector with args: [{}]",
                    connector.role
                )
            });
        let kind = match connector.side {
            Side::Source => "importer",
            Side::Destination => "exporter",
        };
        for needle in [
            format!("{kind}\n"),
            format!("protocols: [{}]\n", connector.scheme),
            format!("validator: {}\n", connector.validator()),
            "executable: postgresql\n".to_string(),
        ] {
            assert!(
                block.contains(&needle),
                "manifest.yaml's {} connector lacks {needle:?}",
                connector.role
            );
        }
        // A source runs a dump or a copy once: Plakar must not import it twice.
        assert_eq!(
            block.contains("location_flags: [stream]"),
            connector.side == Side::Source,
            "manifest.yaml's {} connector: the stream flag belongs to sources only",
            connector.role
        );
    }
}
