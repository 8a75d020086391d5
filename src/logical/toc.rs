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
    let mut found = None;
    let walked = walk_toc(head, |entry, _| {
        if wanted(&entry) {
            found = Some(entry);
            false
        } else {
            true
        }
    })?;
    Ok(match (walked, found) {
        (_, Some(entry)) => Some(Some(entry)),
        (Some(_), None) => Some(None),
        (None, None) => None,
    })
}

/// The archive's layout, as its header gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// Bytes of an integer (`ReadInt`), after its sign byte.
    pub int_size: usize,
    /// Bytes of a data offset, after its flag byte.
    pub off_size: usize,
    /// Where the table of contents ends and the data blocks begin.
    pub data_start: u64,
}

/// The flag of a data offset that pg_dump could not record: it wrote to a pipe.
pub const K_OFFSET_POS_NOT_SET: u8 = 1;
/// The flag of a data offset that is recorded: pg_dump wrote to a seekable file.
pub const K_OFFSET_POS_SET: u8 = 2;
/// The flag of an entry that has no data block.
pub const K_OFFSET_NO_DATA: u8 = 3;
/// A data block holding a table's rows.
const BLK_DATA: u8 = 1;
/// A data block holding large objects.
const BLK_BLOBS: u8 = 3;

/// The data offset slot of one table-of-contents entry: a flag byte and
/// `off_size` bytes, least significant first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffsetSlot {
    /// The entry's dump id, which its data block repeats.
    pub dump_id: i64,
    /// Where the flag byte is in the file.
    pub position: u64,
    /// [`K_OFFSET_POS_NOT_SET`], [`K_OFFSET_POS_SET`] or [`K_OFFSET_NO_DATA`].
    pub flag: u8,
    /// The recorded offset (meaningful with [`K_OFFSET_POS_SET`]).
    pub offset: u64,
}

/// The offset slot of every entry, and the layout; `Ok(None)` while the bytes
/// end inside the table of contents.
pub fn offset_slots(head: &[u8]) -> Result<Option<(Layout, Vec<OffsetSlot>)>, ArchiveError> {
    let mut slots = Vec::new();
    let layout = walk_toc(head, |_, slot| {
        slots.push(slot);
        true
    })?;
    Ok(layout.map(|l| (l, slots)))
}

/// Reads the header and the table of contents, calling `visit` for each
/// entry until it returns false. `Ok(None)` means the bytes end inside the
/// table of contents (and `visit` did not stop the walk before that).
fn walk_toc(
    head: &[u8],
    mut visit: impl FnMut(TocEntry, OffsetSlot) -> bool,
) -> Result<Option<Layout>, ArchiveError> {
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
        let dump_id = int!(c);
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
        let position = c.at as u64;
        let Some(raw) = c.take(1 + c.off_size) else {
            return Ok(None);
        };
        let offset = raw[1..]
            .iter()
            .enumerate()
            .fold(0u64, |acc, (i, b)| acc | (u64::from(*b) << (8 * i)));
        let slot = OffsetSlot {
            dump_id,
            position,
            flag: raw[0],
            offset,
        };
        if !visit(TocEntry { desc, tag, defn }, slot) {
            break;
        }
    }
    Ok(Some(Layout {
        int_size: c.int_size,
        off_size: c.off_size,
        data_start: c.at as u64,
    }))
}

/// How much of the head of an archive [`OffsetScanner`] keeps to read its
/// table of contents; an archive whose table of contents is larger (hundreds of
/// thousands of objects) gets no offsets, which costs speed, not correctness.
const SCAN_HEAD_LIMIT: usize = 32 * 1024 * 1024;

/// Follows a custom-format archive as its bytes go by, in order, and notes
/// where each data block starts, so that a copy of an archive that pg_dump
/// wrote to a pipe can get the data offsets pg_dump itself records when it
/// writes to a file (see [`OffsetScanner::patches`]). Without them, every
/// `pg_restore --jobs` worker, and every `-t`/`-n` selection, reads through
/// the archive to find its data.
///
/// Anything unexpected (not an archive, a block type it does not know, a
/// table of contents over 32 MiB) makes it give up quietly: no patches.
#[derive(Debug)]
pub struct OffsetScanner {
    state: Scan,
    /// Absolute position of the next byte fed.
    at: u64,
    /// Where each dump id's data block starts, in file order.
    blocks: Vec<(i64, u64)>,
}

#[derive(Debug)]
enum Scan {
    /// Reading the header and the table of contents; parsed again when the
    /// bytes have doubled since the last try.
    Head { bytes: Vec<u8>, tried_at: usize },
    /// Following the data blocks.
    Blocks {
        layout: Layout,
        slots: Vec<OffsetSlot>,
        step: Step,
        /// The bytes of the integer or header being read.
        partial: Vec<u8>,
    },
    /// Gave up, or done.
    Off,
}

/// What the block reader expects next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// A block type byte (or the end of the file).
    BlockType,
    /// The block's dump id.
    DumpId { blk: u8 },
    /// A chunk length; 0 ends the table's data or the large object.
    Length { in_blobs: bool },
    /// Bytes to skip, then a length.
    Skip { left: u64, in_blobs: bool },
    /// A large object's oid; 0 ends the block.
    Oid,
}

impl Default for OffsetScanner {
    fn default() -> Self {
        OffsetScanner {
            state: Scan::Head {
                bytes: Vec::new(),
                tried_at: 0,
            },
            at: 0,
            blocks: Vec::new(),
        }
    }
}

impl OffsetScanner {
    /// A scanner at the start of an archive.
    pub fn new() -> OffsetScanner {
        OffsetScanner::default()
    }

    /// Follows the next bytes of the archive.
    pub fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            match &mut self.state {
                Scan::Off => return,
                Scan::Head { .. } => {
                    self.feed_head(bytes);
                    return;
                }
                Scan::Blocks { .. } => {
                    let taken = self.feed_blocks(bytes);
                    bytes = &bytes[taken..];
                }
            }
        }
    }

    /// Takes head bytes; once the table of contents is complete, follows the
    /// blocks after it.
    fn feed_head(&mut self, bytes: &[u8]) {
        let Scan::Head { bytes: head, .. } = &mut self.state else {
            unreachable!("called in the head state")
        };
        head.extend_from_slice(bytes);
        self.at += bytes.len() as u64;
        self.read_head(false);
    }

    /// Parses the head kept so far, when it has doubled since the last try
    /// (or when `now`); once the table of contents is complete, switches to
    /// the blocks and follows the bytes kept after it.
    fn read_head(&mut self, now: bool) {
        let Scan::Head {
            bytes: head,
            tried_at,
        } = &mut self.state
        else {
            return;
        };
        if !now && head.len() < (*tried_at * 2).max(64 * 1024) && head.len() < SCAN_HEAD_LIMIT {
            return;
        }
        *tried_at = head.len();
        match offset_slots(head) {
            Ok(Some((layout, slots))) => {
                let rest = head.split_off(layout.data_start as usize);
                self.at = layout.data_start;
                self.state = Scan::Blocks {
                    layout,
                    slots,
                    step: Step::BlockType,
                    partial: Vec::new(),
                };
                self.feed(&rest);
            }
            Ok(None) if head.len() < SCAN_HEAD_LIMIT => {}
            Ok(None) | Err(_) => self.state = Scan::Off,
        }
    }

    /// Follows data blocks; returns how many bytes it took (all of them,
    /// unless it gave up).
    fn feed_blocks(&mut self, bytes: &[u8]) -> usize {
        let Scan::Blocks {
            layout,
            step,
            partial,
            ..
        } = &mut self.state
        else {
            unreachable!("called in the blocks state")
        };
        let int_len = 1 + layout.int_size;
        let mut i = 0;
        while i < bytes.len() {
            match *step {
                Step::Skip { left, in_blobs } => {
                    let n = left.min((bytes.len() - i) as u64);
                    i += n as usize;
                    *step = if n == left {
                        Step::Length { in_blobs }
                    } else {
                        Step::Skip {
                            left: left - n,
                            in_blobs,
                        }
                    };
                }
                Step::BlockType => {
                    let blk = bytes[i];
                    if blk != BLK_DATA && blk != BLK_BLOBS {
                        self.state = Scan::Off;
                        return bytes.len();
                    }
                    i += 1;
                    self.blocks.push((0, self.at + i as u64 - 1));
                    *step = Step::DumpId { blk };
                }
                Step::DumpId { .. } | Step::Length { .. } | Step::Oid => {
                    let need = int_len - partial.len();
                    let n = need.min(bytes.len() - i);
                    partial.extend_from_slice(&bytes[i..i + n]);
                    i += n;
                    if partial.len() < int_len {
                        continue;
                    }
                    let value = read_int(partial);
                    partial.clear();
                    *step = match (*step, value) {
                        (_, None) => {
                            self.state = Scan::Off;
                            return bytes.len();
                        }
                        (Step::DumpId { blk }, Some(id)) => {
                            if let Some(last) = self.blocks.last_mut() {
                                last.0 = id;
                            }
                            if blk == BLK_DATA {
                                Step::Length { in_blobs: false }
                            } else {
                                Step::Oid
                            }
                        }
                        (Step::Length { in_blobs }, Some(0)) => {
                            if in_blobs {
                                Step::Oid
                            } else {
                                Step::BlockType
                            }
                        }
                        (Step::Length { in_blobs }, Some(len)) => Step::Skip {
                            left: len as u64,
                            in_blobs,
                        },
                        (Step::Oid, Some(0)) => Step::BlockType,
                        (Step::Oid, Some(_)) => Step::Length { in_blobs: true },
                        _ => unreachable!("only integer steps read integers"),
                    };
                }
            }
        }
        self.at += bytes.len() as u64;
        bytes.len()
    }

    /// The writes that record, in a copy of the archive fed so far (the
    /// whole of it), where each entry's data block starts: for every entry
    /// whose offset is not set and whose block was seen, the flag
    /// [`K_OFFSET_POS_SET`] and the block's position, at the entry's slot.
    /// This is exactly what pg_dump writes into a seekable output when it
    /// rewrites its table of contents at the end.
    pub fn patches(&mut self) -> Vec<(u64, Vec<u8>)> {
        self.read_head(true);
        let Scan::Blocks {
            layout,
            slots,
            step,
            ..
        } = &self.state
        else {
            return Vec::new();
        };
        if *step != Step::BlockType {
            // The archive ends inside a block: it is truncated, and
            // pg_restore says so better without our help.
            return Vec::new();
        }
        let mut patches = Vec::new();
        for slot in slots.iter().filter(|s| s.flag == K_OFFSET_POS_NOT_SET) {
            let Some(&(_, position)) = self.blocks.iter().find(|(id, _)| *id == slot.dump_id)
            else {
                continue;
            };
            if layout.off_size < 8 && position >> (8 * layout.off_size) != 0 {
                continue;
            }
            let mut bytes = vec![K_OFFSET_POS_SET];
            bytes.extend_from_slice(&position.to_le_bytes()[..layout.off_size.min(8)]);
            bytes.resize(1 + layout.off_size, 0);
            patches.push((slot.position, bytes));
        }
        patches
    }
}

/// pg_dump's `ReadInt` over exactly its bytes; None for a negative value
/// where none is expected.
fn read_int(bytes: &[u8]) -> Option<i64> {
    let (sign, digits) = bytes.split_first()?;
    let mut value: i64 = 0;
    for (i, b) in digits.iter().enumerate() {
        value |= i64::from(*b) << (8 * i);
    }
    (*sign == 0).then_some(value)
}

/// The entry kind pg_dump 18 gives the planner statistics of a table, a
/// materialized view or an index (`pg_dump --statistics`).
pub const STATISTICS_DATA: &str = "STATISTICS DATA";

/// How much of the head of an archive [`StatisticsProbe`] keeps to find a
/// statistics entry: the schema's definitions come before it. Beyond that the
/// probe says "not known", and the restore analyzes, as without statistics.
const PROBE_HEAD_LIMIT: usize = 8 * 1024 * 1024;

/// Follows the head of a custom-format archive as its bytes go by, until its
/// table of contents (which comes first) says whether the dump carries
/// planner statistics: a [`STATISTICS_DATA`] entry, or none at its end.
#[derive(Debug, Default)]
pub struct StatisticsProbe {
    head: Vec<u8>,
    tried_at: usize,
    verdict: Option<bool>,
}

impl StatisticsProbe {
    /// A probe at the start of an archive.
    pub fn new() -> StatisticsProbe {
        StatisticsProbe::default()
    }

    /// Follows the next bytes; once the verdict is in, they are not kept.
    pub fn feed(&mut self, bytes: &[u8]) {
        if self.verdict.is_some() {
            return;
        }
        self.head.extend_from_slice(bytes);
        // Parsed again only when the head has doubled: linear in all.
        if self.head.len() >= (self.tried_at * 2).max(64 * 1024) {
            self.decide();
        }
    }

    /// Whether the archive carries statistics; false when that is not known
    /// (not an archive, damaged, truncated, or a head over the limit).
    pub fn carries_statistics(&mut self) -> bool {
        if self.verdict.is_none() {
            self.decide();
        }
        self.verdict.unwrap_or(false)
    }

    fn decide(&mut self) {
        self.tried_at = self.head.len();
        self.verdict = match find_entry(&self.head, |e| e.desc == STATISTICS_DATA) {
            Ok(Some(found)) => Some(found.is_some()),
            Ok(None) if self.head.len() < PROBE_HEAD_LIMIT => None,
            Ok(None) | Err(_) => Some(false),
        };
        if self.verdict.is_some() {
            self.head = Vec::new();
        }
    }
}

/// Gives a file holding a whole custom-format archive the data offsets
/// pg_dump records when it writes to a file; returns how many entries got
/// theirs. Reads the file once, sequentially.
pub fn fill_in_offsets(file: &std::fs::File) -> std::io::Result<usize> {
    use std::os::unix::fs::FileExt;
    let mut scanner = OffsetScanner::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut at = 0u64;
    loop {
        let n = match file.read_at(&mut buf, at) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        scanner.feed(&buf[..n]);
        at += n as u64;
    }
    let patches = scanner.patches();
    for (position, bytes) in &patches {
        file.write_all_at(bytes, *position)?;
    }
    Ok(patches.len())
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
        let flags = vec![K_OFFSET_NO_DATA; entries.len()];
        archive_with_slots(version, entries, &flags)
    }

    /// pg_dump's `WriteInt` with 4-byte integers.
    fn int(out: &mut Vec<u8>, n: i64) {
        out.push(u8::from(n < 0));
        out.extend((n.unsigned_abs() as u32).to_le_bytes());
    }

    /// [`archive`] with each entry's offset flag (dump ids are 1, 2, ...).
    fn archive_with_slots(
        version: Version,
        entries: &[(&str, &str, Option<&str>)],
        flags: &[u8],
    ) -> Vec<u8> {
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
            out.push(flags[i]);
            out.extend([0; 8]);
        }
        out
    }

    /// A table's data block: rows as chunks of their own, as `pg_dump -Z0` writes them.
    fn data_block(out: &mut Vec<u8>, dump_id: i64, rows: &[&[u8]]) {
        out.push(BLK_DATA);
        int(out, dump_id);
        for row in rows {
            int(out, row.len() as i64);
            out.extend_from_slice(row);
        }
        int(out, 0);
    }

    /// A large objects' block: each object's oid, then its chunks.
    fn blobs_block(out: &mut Vec<u8>, dump_id: i64, objects: &[(i64, &[&[u8]])]) {
        out.push(BLK_BLOBS);
        int(out, dump_id);
        for (oid, chunks) in objects {
            int(out, *oid);
            for c in *chunks {
                int(out, c.len() as i64);
                out.extend_from_slice(c);
            }
            int(out, 0);
        }
        int(out, 0);
    }

    /// An archive as pg_dump writes it into a pipe: a table (id 1) without
    /// data, two tables' data (ids 2 and 4, blocks in the order 4, 2), large
    /// objects (id 3), and the block start of each id.
    fn piped_archive(version: Version) -> (Vec<u8>, Vec<(i64, u64)>) {
        let entries = [
            ("TABLE", "t", Some("CREATE TABLE t ();")),
            ("TABLE DATA", "t", None),
            ("BLOBS", "BLOBS", None),
            ("TABLE DATA", "u", None),
        ];
        let flags = [
            K_OFFSET_NO_DATA,
            K_OFFSET_POS_NOT_SET,
            K_OFFSET_POS_NOT_SET,
            K_OFFSET_POS_NOT_SET,
        ];
        let mut out = archive_with_slots(version, &entries, &flags);
        let mut starts = Vec::new();
        starts.push((4, out.len() as u64));
        data_block(&mut out, 4, &[b"1\tone\n", b"2\ttwo\n"]);
        starts.push((2, out.len() as u64));
        data_block(&mut out, 2, &[&[7u8; 300], b"x"]);
        starts.push((3, out.len() as u64));
        blobs_block(&mut out, 3, &[(16384, &[b"abc", b"de"]), (16385, &[])]);
        (out, starts)
    }

    /// Applies patches to a copy.
    fn patched(bytes: &[u8], patches: &[(u64, Vec<u8>)]) -> Vec<u8> {
        let mut out = bytes.to_vec();
        for (at, p) in patches {
            out[*at as usize..*at as usize + p.len()].copy_from_slice(p);
        }
        out
    }

    #[test]
    fn the_probe_tells_a_dump_with_statistics_from_one_without() {
        let with = archive(
            V1_16,
            &[
                ("TABLE", "t", Some("CREATE TABLE t ();")),
                ("TABLE DATA", "t", None),
                (
                    STATISTICS_DATA,
                    "t",
                    Some("SELECT pg_restore_relation_stats();"),
                ),
            ],
        );
        let without = archive(V1_16, &[("TABLE", "t", Some("CREATE TABLE t ();"))]);
        for size in [1, 7, 100, with.len()] {
            let mut probe = StatisticsProbe::new();
            for chunk in with.chunks(size) {
                probe.feed(chunk);
            }
            assert!(probe.carries_statistics(), "chunks of {size}");
        }
        let mut probe = StatisticsProbe::new();
        probe.feed(&without);
        assert!(!probe.carries_statistics());
        // Cut inside the table of contents, or not an archive: not known, so no.
        let mut cut = StatisticsProbe::new();
        cut.feed(&with[..with.len() - 20]);
        assert!(!cut.carries_statistics());
        let mut garbage = StatisticsProbe::new();
        garbage.feed(b"SELECT 1;\n");
        assert!(!garbage.carries_statistics());
    }

    #[test]
    fn the_scanner_records_where_each_data_block_starts() {
        for version in [(1, 12, 0), (1, 14, 0), (1, 15, 0), (1, 16, 0)] {
            let (bytes, starts) = piped_archive(version);
            let expected: Vec<(i64, u8, u64)> = vec![
                (1, K_OFFSET_NO_DATA, 0),
                (2, K_OFFSET_POS_SET, starts[1].1),
                (3, K_OFFSET_POS_SET, starts[2].1),
                (4, K_OFFSET_POS_SET, starts[0].1),
            ];
            // Chunk boundaries anywhere: inside the header, an integer, a row.
            for size in [1, 2, 3, 5, 7, 64, 1000, bytes.len()] {
                let mut scanner = OffsetScanner::new();
                for chunk in bytes.chunks(size) {
                    scanner.feed(chunk);
                }
                let filled = patched(&bytes, &scanner.patches());
                let (layout, slots) = offset_slots(&filled).unwrap().unwrap();
                assert_eq!(layout.off_size, 8);
                let got: Vec<(i64, u8, u64)> = slots
                    .iter()
                    .map(|s| (s.dump_id, s.flag, s.offset))
                    .collect();
                assert_eq!(got, expected, "{version:?}, chunks of {size}");
                // Only the slots change.
                assert_eq!(filled.len(), bytes.len());
                let changed = filled.iter().zip(&bytes).filter(|(a, b)| a != b).count();
                assert!(changed <= 3 * 9, "{changed} bytes changed");
            }
        }
    }

    #[test]
    fn offsets_already_recorded_are_kept() {
        let (bytes, _) = piped_archive((1, 14, 0));
        let mut scanner = OffsetScanner::new();
        scanner.feed(&bytes);
        let once = patched(&bytes, &scanner.patches());
        let mut again = OffsetScanner::new();
        again.feed(&once);
        assert_eq!(again.patches(), Vec::new());
    }

    #[test]
    fn anything_but_a_whole_archive_gets_no_patches() {
        let (bytes, starts) = piped_archive((1, 14, 0));
        // Cut inside a block, inside the table of contents, or not an archive.
        for cut in [bytes.len() - 1, starts[1].1 as usize + 3, 40] {
            let mut scanner = OffsetScanner::new();
            scanner.feed(&bytes[..cut]);
            assert_eq!(scanner.patches(), Vec::new(), "cut at {cut}");
        }
        for junk in [&b"-- PostgreSQL database dump\n"[..], b"", b"PGDMP\x01\x0e"] {
            let mut scanner = OffsetScanner::new();
            scanner.feed(junk);
            assert_eq!(scanner.patches(), Vec::new());
        }
        // An unknown block type: give up rather than guess.
        let mut odd = bytes.clone();
        odd[starts[0].1 as usize] = 9;
        let mut scanner = OffsetScanner::new();
        scanner.feed(&odd);
        assert_eq!(scanner.patches(), Vec::new());
    }

    #[test]
    fn a_file_is_filled_in_place() {
        use std::io::Write;
        let (bytes, starts) = piped_archive((1, 15, 0));
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(&bytes).unwrap();
        assert_eq!(fill_in_offsets(&file).unwrap(), 3);
        let mut filled = Vec::new();
        use std::io::{Read, Seek};
        file.rewind().unwrap();
        file.read_to_end(&mut filled).unwrap();
        let (_, slots) = offset_slots(&filled).unwrap().unwrap();
        assert_eq!(slots[3].offset, starts[0].1);
        assert_eq!(slots[3].flag, K_OFFSET_POS_SET);
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
