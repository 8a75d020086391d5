//! Reading the head of a pg_dump custom-format archive: its header and the
//! entries of its table of contents, as far as the caller needs them.
//!
//! The format is pg_dump's own (pg_backup_archiver.c, `ReadHead`/`ReadToc`,
//! and pg_backup_custom.c for the per-entry data offset). Only the versions
//! written by PostgreSQL 10 and later (archive 1.12 onwards) are read.

/// Why the head of an archive cannot be read.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ArchiveError {
    /// The bytes are not a custom-format archive.
    #[error("the file is not a dump in pg_dump's custom format")]
    NotCustom,
    /// An archive version this reader does not know.
    #[error("the dump's archive version {0}.{1}.{2} is not supported (PostgreSQL 10 or later writes 1.12 and up)")]
    Version(u8, u8, u8),
    /// A field with an impossible value: the archive is damaged.
    #[error("the dump's table of contents is damaged ({0})")]
    Damaged(&'static str),
    /// The whole file was read and the table of contents was not complete.
    #[error("the dump ends inside its table of contents: it is truncated")]
    Truncated,
}

/// One entry of the table of contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TocEntry {
    /// The entry's kind (`TABLE`, `DATABASE`, `TABLE DATA`, ...).
    pub desc: String,
    /// The object's name.
    pub tag: String,
    /// The SQL that creates it, if any.
    pub defn: Option<String>,
}

/// The archive's version triple, compared as a whole.
type Version = (u8, u8, u8);

const V1_12: Version = (1, 12, 0);
const V1_14: Version = (1, 14, 0);
const V1_15: Version = (1, 15, 0);
const V1_16: Version = (1, 16, 0);
/// The newest version known to this reader; newer ones are refused rather than misread.
const NEWEST: Version = (1, 16, 0);

/// A cursor over the bytes read so far; `None` from a read means "need more bytes".
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
    int_size: usize,
    off_size: usize,
}

impl<'a> Cursor<'a> {
    fn byte(&mut self) -> Option<u8> {
        let b = *self.bytes.get(self.at)?;
        self.at += 1;
        Some(b)
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.at.checked_add(n)?;
        let slice = self.bytes.get(self.at..end)?;
        self.at = end;
        Some(slice)
    }

    /// pg_dump's `ReadInt`: a sign byte, then `int_size` bytes, least significant first.
    fn int(&mut self) -> Option<i64> {
        let negative = self.byte()? != 0;
        let mut value: i64 = 0;
        for (i, b) in self.take(self.int_size)?.iter().enumerate() {
            value |= i64::from(*b) << (8 * i);
        }
        Some(if negative { -value } else { value })
    }

    /// pg_dump's `ReadStr`: a length (negative for NULL), then the bytes.
    fn string(&mut self) -> Option<Result<Option<String>, ArchiveError>> {
        let len = self.int()?;
        if len < 0 {
            return Some(Ok(None));
        }
        if len > 1 << 30 {
            return Some(Err(ArchiveError::Damaged("a string longer than 1 GiB")));
        }
        let bytes = self.take(len as usize)?;
        Some(Ok(Some(String::from_utf8_lossy(bytes).into_owned())))
    }
}

/// Reads a string field, returning early with "need more" or an error.
macro_rules! field {
    ($cursor:expr) => {
        match $cursor.string() {
            None => return Ok(None),
            Some(Err(e)) => return Err(e),
            Some(Ok(s)) => s,
        }
    };
}

/// Reads an integer field, returning early with "need more".
macro_rules! int {
    ($cursor:expr) => {
        match $cursor.int() {
            None => return Ok(None),
            Some(n) => n,
        }
    };
}

/// Finds the first table-of-contents entry for which `wanted` is true, reading
/// only the start of the archive. `Ok(None)` means the bytes end before it:
/// call again with more, or, at the end of the file, treat it as
/// [`ArchiveError::Truncated`]. `Ok(Some(None))` means the whole table of
/// contents was read and no entry matched.
pub fn find_entry(
    head: &[u8],
    wanted: impl Fn(&TocEntry) -> bool,
) -> Result<Option<Option<TocEntry>>, ArchiveError> {
    let mut c = Cursor {
        bytes: head,
        at: 0,
        int_size: 0,
        off_size: 0,
    };
    let Some(magic) = c.take(5) else {
        return if b"PGDMP".starts_with(head) {
            Ok(None)
        } else {
            Err(ArchiveError::NotCustom)
        };
    };
    if magic != b"PGDMP" {
        return Err(ArchiveError::NotCustom);
    }
    let Some(version) = (|| Some((c.byte()?, c.byte()?, c.byte()?)))() else {
        return Ok(None);
    };
    if version < V1_12 || version > NEWEST {
        return Err(ArchiveError::Version(version.0, version.1, version.2));
    }
    let Some((int_size, off_size, format)) = (|| Some((c.byte()?, c.byte()?, c.byte()?)))() else {
        return Ok(None);
    };
    // 1 is archCustom; a tar or directory archive never reaches a pipe of ours.
    if format != 1 {
        return Err(ArchiveError::NotCustom);
    }
    if !(1..=8).contains(&int_size) || !(1..=8).contains(&off_size) {
        return Err(ArchiveError::Damaged("impossible integer sizes"));
    }
    c.int_size = int_size as usize;
    c.off_size = off_size as usize;
    if version >= V1_15 {
        if c.byte().is_none() {
            return Ok(None);
        }
    } else {
        int!(c);
    }
    // The creation time: seconds, minutes, hours, day, month, year, DST flag.
    for _ in 0..7 {
        int!(c);
    }
    let _database = field!(c);
    let _server_version = field!(c);
    let _pg_dump_version = field!(c);
    let count = int!(c);
    if count < 0 {
        return Err(ArchiveError::Damaged("a negative entry count"));
    }
    for _ in 0..count {
        let _dump_id = int!(c);
        let _had_dumper = int!(c);
        let _table_oid = field!(c);
        let _oid = field!(c);
        let tag = field!(c).unwrap_or_default();
        let desc = field!(c).unwrap_or_default();
        let _section = int!(c);
        let defn = field!(c);
        let _drop = field!(c);
        let _copy = field!(c);
        let _namespace = field!(c);
        let _tablespace = field!(c);
        if version >= V1_14 {
            let _table_am = field!(c);
        }
        if version >= V1_16 {
            let _relkind = int!(c);
        }
        let _owner = field!(c);
        let _with_oids = field!(c);
        // The dependencies: a list of strings ended by a NULL.
        loop {
            if field!(c).is_none() {
                break;
            }
        }
        // The custom format's data offset: a flag byte and `off_size` bytes.
        if c.take(1 + c.off_size).is_none() {
            return Ok(None);
        }
        let entry = TocEntry { desc, tag, defn };
        if wanted(&entry) {
            return Ok(Some(Some(entry)));
        }
    }
    Ok(Some(None))
}

/// The `CREATE DATABASE` options of a dump's own database, to create it under another name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseOptions {
    /// `(KEY, value as SQL)` pairs, in the dump's order.
    pub options: Vec<(String, String)>,
}

/// The keys of pg_dump's `CREATE DATABASE ... WITH` that describe the database
/// itself; `OID` (binary upgrades only) is left out.
const KEPT_KEYS: &[&str] = &[
    "TEMPLATE",
    "ENCODING",
    "LOCALE_PROVIDER",
    "LOCALE",
    "LC_COLLATE",
    "LC_CTYPE",
    "ICU_LOCALE",
    "ICU_RULES",
    "BUILTIN_LOCALE",
    "TABLESPACE",
];

impl DatabaseOptions {
    /// Reads the options of the `DATABASE` entry's definition, such as
    /// `CREATE DATABASE app WITH TEMPLATE = template0 ENCODING = 'UTF8' LOCALE = 'C';`.
    /// Values are kept only when they are a single word or a quoted literal, so
    /// nothing but options ever reaches the server.
    pub fn from_definition(defn: &str) -> Result<DatabaseOptions, ArchiveError> {
        let damaged = ArchiveError::Damaged("the DATABASE entry is not a CREATE DATABASE");
        let rest = defn
            .trim()
            .strip_prefix("CREATE DATABASE ")
            .ok_or(damaged.clone())?;
        let rest = skip_identifier(rest).ok_or(damaged.clone())?;
        let rest = rest.trim_start();
        let rest = rest.strip_suffix(';').unwrap_or(rest).trim_end();
        let rest = rest.strip_prefix("WITH").unwrap_or(rest);
        let mut options = Vec::new();
        let mut tokens = tokens(rest).ok_or(damaged.clone())?.into_iter();
        while let Some(key) = tokens.next() {
            if tokens.next().as_deref() != Some("=") {
                return Err(damaged);
            }
            let value = tokens.next().ok_or(damaged.clone())?;
            let key = key.to_ascii_uppercase();
            if KEPT_KEYS.contains(&key.as_str()) {
                options.push((key, value));
            } else if key != "OID" {
                tracing::warn!(
                    "the dump's CREATE DATABASE has an option {key} that is not carried over"
                );
            }
        }
        Ok(DatabaseOptions { options })
    }

    /// `CREATE DATABASE <name> WITH ...` for another name (already quoted).
    pub fn create_statement(&self, quoted_name: &str) -> String {
        let mut sql = format!("CREATE DATABASE {quoted_name}");
        if !self.options.is_empty() {
            sql.push_str(" WITH");
            for (key, value) in &self.options {
                sql.push_str(&format!(" {key} = {value}"));
            }
        }
        sql
    }
}

/// Skips one SQL identifier, quoted or not, and returns what follows it.
fn skip_identifier(s: &str) -> Option<&str> {
    if let Some(inner) = s.strip_prefix('"') {
        let mut chars = inner.char_indices();
        while let Some((i, ch)) = chars.next() {
            if ch == '"' {
                if inner[i + 1..].starts_with('"') {
                    chars.next();
                } else {
                    return Some(&inner[i + 1..]);
                }
            }
        }
        None
    } else {
        let end = s.find(char::is_whitespace).unwrap_or(s.len());
        (end > 0).then(|| &s[end..])
    }
}

/// Splits option text into words, `=` and single-quoted literals (kept quoted).
fn tokens(s: &str) -> Option<Vec<String>> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    while let Some(&ch) = chars.peek() {
        if ch.is_whitespace() {
            chars.next();
        } else if ch == '=' {
            chars.next();
            out.push("=".into());
        } else if ch == '\'' {
            let mut literal = String::from("'");
            chars.next();
            loop {
                let c = chars.next()?;
                literal.push(c);
                if c == '\'' {
                    if chars.peek() == Some(&'\'') {
                        literal.push(chars.next()?);
                    } else {
                        break;
                    }
                }
            }
            out.push(literal);
        } else if ch.is_ascii_alphanumeric() || ch == '_' || ch == '"' {
            let mut word = String::new();
            if ch == '"' {
                // A quoted identifier (a tablespace name).
                word.push(chars.next()?);
                loop {
                    let c = chars.next()?;
                    word.push(c);
                    if c == '"' {
                        if chars.peek() == Some(&'"') {
                            word.push(chars.next()?);
                        } else {
                            break;
                        }
                    }
                }
            } else {
                while let Some(&c) = chars.peek() {
                    if c.is_ascii_alphanumeric() || c == '_' {
                        word.push(c);
                        chars.next();
                    } else {
                        break;
                    }
                }
            }
            out.push(word);
        } else {
            return None;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal archive of the given version with the given (desc, tag, defn) entries.
    pub(crate) fn archive(version: Version, entries: &[(&str, &str, Option<&str>)]) -> Vec<u8> {
        let mut out = b"PGDMP".to_vec();
        out.extend([version.0, version.1, version.2, 4, 8, 1]);
        let int = |out: &mut Vec<u8>, n: i64| {
            out.push(u8::from(n < 0));
            out.extend((n.unsigned_abs() as u32).to_le_bytes());
        };
        let string = |out: &mut Vec<u8>, s: Option<&str>| match s {
            None => int(out, -1),
            Some(s) => {
                int(out, s.len() as i64);
                out.extend(s.as_bytes());
            }
        };
        if version >= V1_15 {
            out.push(0);
        } else {
            int(&mut out, 0);
        }
        for n in [0, 0, 0, 1, 0, 126, 0] {
            int(&mut out, n);
        }
        for s in ["app", "15.0", "15.0"] {
            string(&mut out, Some(s));
        }
        int(&mut out, entries.len() as i64);
        for (i, (desc, tag, defn)) in entries.iter().enumerate() {
            int(&mut out, i as i64 + 1);
            int(&mut out, 0);
            string(&mut out, Some("0"));
            string(&mut out, Some("0"));
            string(&mut out, Some(tag));
            string(&mut out, Some(desc));
            int(&mut out, 1);
            string(&mut out, *defn);
            string(&mut out, Some(""));
            string(&mut out, None);
            string(&mut out, None);
            string(&mut out, None);
            if version >= V1_14 {
                string(&mut out, None);
            }
            if version >= V1_16 {
                int(&mut out, 0);
            }
            string(&mut out, Some("postgres"));
            string(&mut out, Some("false"));
            string(&mut out, Some("1"));
            string(&mut out, None);
            out.push(3);
            out.extend([0; 8]);
        }
        out
    }

    fn is_database(e: &TocEntry) -> bool {
        e.desc == "DATABASE"
    }

    #[test]
    fn the_database_entry_is_found_in_every_supported_version() {
        let defn = "CREATE DATABASE app WITH TEMPLATE = template0 ENCODING = 'UTF8';\n";
        for version in [(1, 12, 0), (1, 14, 0), (1, 15, 0), (1, 16, 0)] {
            let bytes = archive(
                version,
                &[
                    ("ENCODING", "ENCODING", None),
                    ("DATABASE", "app", Some(defn)),
                ],
            );
            let found = find_entry(&bytes, is_database).unwrap().unwrap().unwrap();
            assert_eq!(found.tag, "app");
            assert_eq!(found.defn.as_deref(), Some(defn));
            // Any prefix asks for more bytes; none is mistaken for an answer.
            for cut in 0..bytes.len() {
                assert_eq!(find_entry(&bytes[..cut], is_database), Ok(None), "{cut}");
            }
        }
    }

    #[test]
    fn other_files_and_versions_are_refused() {
        assert_eq!(
            find_entry(b"-- PostgreSQL database dump", is_database),
            Err(ArchiveError::NotCustom)
        );
        assert_eq!(find_entry(b"PGD", is_database), Ok(None));
        let old = archive((1, 11, 0), &[]);
        assert_eq!(
            find_entry(&old, is_database),
            Err(ArchiveError::Version(1, 11, 0))
        );
        let none = archive((1, 14, 0), &[("TABLE", "t", None)]);
        assert_eq!(find_entry(&none, is_database), Ok(Some(None)));
    }

    #[test]
    fn database_options_are_carried_over_and_nothing_else() {
        let o = DatabaseOptions::from_definition(
            "CREATE DATABASE \"my \"\"app\"\"\" WITH TEMPLATE = template0 ENCODING = 'UTF8' LOCALE_PROVIDER = libc LOCALE = 'en_US.UTF-8' OID = 1234 TABLESPACE = \"fast disk\";\n",
        )
        .unwrap();
        assert_eq!(
            o.create_statement("\"copy\""),
            "CREATE DATABASE \"copy\" WITH TEMPLATE = template0 ENCODING = 'UTF8' LOCALE_PROVIDER = libc LOCALE = 'en_US.UTF-8' TABLESPACE = \"fast disk\""
        );
        for bad in [
            "DROP DATABASE app;",
            "CREATE DATABASE app WITH ENCODING = 'UTF8'; DROP TABLE x;",
            "CREATE DATABASE app WITH ENCODING 'UTF8'",
        ] {
            assert!(DatabaseOptions::from_definition(bad).is_err(), "{bad}");
        }
    }
}
