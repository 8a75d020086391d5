//! The option tables are the single source of the validator schemas, the
//! README's option tables and the man page's option lists: these tests fail
//! when any of them disagrees. Run with BLESS=1 to rewrite the generated parts.

use std::path::Path;

use plakar_postgresql::backup::options::SOURCE_OPTIONS;
use plakar_postgresql::options::Table;
use plakar_postgresql::physical::options::{PHYSICAL_DESTINATION_OPTIONS, PHYSICAL_SOURCE_OPTIONS};
use plakar_postgresql::restore::options::DESTINATION_OPTIONS;

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

#[test]
fn validators_match_the_option_tables() {
    check_file(
        "validators/postgresql-importer.json",
        &schema(&SOURCE_OPTIONS),
    );
    check_file(
        "validators/postgresql-exporter.json",
        &schema(&DESTINATION_OPTIONS),
    );
    check_file(
        "validators/postgresql-physical-importer.json",
        &schema(&PHYSICAL_SOURCE_OPTIONS),
    );
    check_file(
        "validators/postgresql-physical-exporter.json",
        &schema(&PHYSICAL_DESTINATION_OPTIONS),
    );
}

#[test]
fn readme_tables_match_the_option_tables() {
    check_section("README.md", "source-options", &SOURCE_OPTIONS.markdown());
    check_section(
        "README.md",
        "destination-options",
        &DESTINATION_OPTIONS.markdown(),
    );
    check_section(
        "README.md",
        "physical-source-options",
        &PHYSICAL_SOURCE_OPTIONS.markdown(),
    );
    check_section(
        "README.md",
        "physical-destination-options",
        &PHYSICAL_DESTINATION_OPTIONS.markdown(),
    );
}

#[test]
fn man_page_lists_every_option() {
    let man = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("postgresql.1"))
        .unwrap();
    for (section, table) in [
        ("SOURCE OPTIONS", &*SOURCE_OPTIONS),
        ("DESTINATION OPTIONS", &*DESTINATION_OPTIONS),
        ("PHYSICAL SOURCE OPTIONS", &*PHYSICAL_SOURCE_OPTIONS),
        (
            "PHYSICAL DESTINATION OPTIONS",
            &*PHYSICAL_DESTINATION_OPTIONS,
        ),
    ] {
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
fn manifest_names_the_validators_and_the_stream_flag() {
    let manifest =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("manifest.yaml"))
            .unwrap();
    for needle in [
        "name: postgresql",
        "validator: postgresql-importer.json",
        "validator: postgresql-exporter.json",
        "location_flags: [stream]",
        "args: [importer]",
        "args: [exporter]",
        "protocols: [postgres]",
        "validator: postgresql-physical-importer.json",
        "validator: postgresql-physical-exporter.json",
        "args: [physical-importer]",
        "args: [physical-exporter]",
        "protocols: [postgres+bin]",
    ] {
        assert!(manifest.contains(needle), "manifest.yaml lacks {needle:?}");
    }
}
