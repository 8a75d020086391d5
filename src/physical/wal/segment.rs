//! WAL file names as PostgreSQL writes them: a segment is
//! `TTTTTTTTXXXXXXXXYYYYYYYY` (timeline, then the segment number split in
//! "log" and "seg" parts), a timeline's history `TTTTTTTT.history`. Both
//! sides of point-in-time recovery name records with them. And the little a
//! copy needs to know of a segment's content: the size its first page
//! declares, and where the zeros that end it begin.

use std::fmt;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use crate::postgres::replication::Lsn;

/// One WAL segment: a timeline and the segment's number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Segment {
    /// The timeline the file belongs to.
    pub timeline: u32,
    /// The segment's number: its first position divided by the segment size.
    pub number: u64,
}

impl Segment {
    /// The segment of `timeline` that holds `lsn`.
    pub fn holding(timeline: u32, lsn: Lsn, size: u64) -> Segment {
        Segment {
            timeline,
            number: lsn.0 / size,
        }
    }

    /// Its first position.
    pub fn start(&self, size: u64) -> Lsn {
        Lsn(self.number * size)
    }

    /// The position just past its last byte.
    pub fn end(&self, size: u64) -> Lsn {
        Lsn((self.number + 1) * size)
    }

    /// Its file name for a segment size of `size` bytes.
    pub fn file_name(&self, size: u64) -> String {
        let per_log = 0x1_0000_0000 / size;
        format!(
            "{:08X}{:08X}{:08X}",
            self.timeline,
            self.number / per_log,
            self.number % per_log
        )
    }

    /// The segment a file name names, for a segment size of `size` bytes.
    pub fn parse(name: &str, size: u64) -> Option<Segment> {
        if !is_segment_name(name) {
            return None;
        }
        let part = |i: usize| u32::from_str_radix(&name[i..i + 8], 16).ok();
        let (timeline, log, seg) = (part(0)?, u64::from(part(8)?), u64::from(part(16)?));
        let per_log = 0x1_0000_0000 / size;
        (seg < per_log).then_some(Segment {
            timeline,
            number: log * per_log + seg,
        })
    }
}

/// A WAL page as PostgreSQL is built by default (`XLOG_BLCKSZ`): a segment
/// is cut short in whole pages of it.
pub const WAL_PAGE: u64 = 8192;

/// The segment size a segment file's first page declares (`xlp_seg_size` of
/// its long page header, as pg_waldump reads it), if `head` begins with one.
pub fn declared_size(head: &[u8]) -> Option<u64> {
    // XLogLongPageHeaderData: xlp_magic u16, xlp_info u16, xlp_tli u32,
    // xlp_pageaddr u64, xlp_rem_len u32 (24 bytes aligned), then xlp_sysid
    // u64, xlp_seg_size u32 at 32 and xlp_xlog_blcksz u32 at 36, in the
    // server's byte order, which is this machine's.
    const XLP_LONG_HEADER: u16 = 0x0002;
    let head = head.get(..40)?;
    let u16_at = |i: usize| u16::from_ne_bytes([head[i], head[i + 1]]);
    let u32_at = |i: usize| u32::from_ne_bytes([head[i], head[i + 1], head[i + 2], head[i + 3]]);
    // Every release since 9.0 has a magic of 0xD1xx.
    let magic = u16_at(0) & 0xFF00 == 0xD100;
    let long = u16_at(2) & XLP_LONG_HEADER != 0;
    let (segment, page) = (u32_at(32), u32_at(36));
    let plausible = segment.is_power_of_two()
        && (1 << 20..=1 << 30).contains(&segment)
        && page.is_power_of_two()
        && (1024..=65536).contains(&page);
    (magic && long && plausible).then_some(u64::from(segment))
}

/// The segment size the first page of `file` declares, if it is a
/// segment's ([`declared_size`]).
pub fn declared_size_of(file: &File) -> io::Result<Option<u64>> {
    let mut head = [0u8; 40];
    let read = file.read_at(&mut head, 0)?;
    Ok(declared_size(&head[..read]))
}

/// How many of the `size` bytes of a segment file hold anything: up to the
/// end of its last page that is not all zeros, and never less than `floor`
/// (a multiple of [`WAL_PAGE`]). When PostgreSQL switches to the next
/// segment (as `pg_backup_stop` makes it do), it fills the rest of the
/// current one with zeros: the segment a backup ends in is mostly zeros,
/// which need not be stored to be given back.
pub fn used_length(file: &File, size: u64, floor: u64) -> io::Result<u64> {
    const BLOCK: u64 = 1 << 20;
    let mut block = vec![0u8; BLOCK as usize];
    let mut end = size;
    while end > floor {
        let from = end.saturating_sub(BLOCK).max(floor);
        let bytes = &mut block[..(end - from) as usize];
        file.read_exact_at(bytes, from)?;
        let last = bytes
            .chunks(WAL_PAGE as usize)
            .rposition(|page| page.iter().fold(0, |any, b| any | b) != 0);
        if let Some(page) = last {
            return Ok(from + (page as u64 + 1) * WAL_PAGE);
        }
        end = from;
    }
    Ok(floor)
}

/// Whether `name` has the shape of a segment's file name: 24 hex digits.
pub fn is_segment_name(name: &str) -> bool {
    name.len() == 24 && name.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The history file name of a timeline: `00000002.history`.
pub fn history_file_name(timeline: u32) -> String {
    format!("{timeline:08X}.history")
}

/// The timeline a history file name names.
pub fn parse_history_file_name(name: &str) -> Option<u32> {
    let hex = name.strip_suffix(".history")?;
    (hex.len() == 8)
        .then(|| u32::from_str_radix(hex, 16).ok())
        .flatten()
}

/// One line of a timeline history file: `parent` ended at `switch`, where
/// the next timeline began.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Switch {
    /// The timeline that ended.
    pub parent: u32,
    /// The first position of the next timeline.
    pub switch: Lsn,
}

/// A timeline's ancestry: the switches that led to it, oldest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct History {
    /// The timeline this history leads to.
    pub timeline: u32,
    /// Every earlier timeline and where it ended.
    pub switches: Vec<Switch>,
}

/// A history file that does not read as one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line} of {file} is not `timeline<TAB>position<TAB>reason`")]
pub struct BadHistory {
    /// The file's name.
    pub file: String,
    /// The line, from 1.
    pub line: usize,
}

impl History {
    /// The history of timeline 1, which has no ancestors.
    pub fn first() -> History {
        History {
            timeline: 1,
            switches: Vec::new(),
        }
    }

    /// Reads the history file of `timeline`.
    pub fn parse(timeline: u32, text: &str) -> Result<History, BadHistory> {
        let mut switches = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = || BadHistory {
                file: history_file_name(timeline),
                line: i + 1,
            };
            let mut words = line.split_whitespace();
            let parent = words.next().and_then(|w| w.parse().ok()).ok_or_else(bad)?;
            let switch = words.next().and_then(|w| w.parse().ok()).ok_or_else(bad)?;
            switches.push(Switch { parent, switch });
        }
        Ok(History { timeline, switches })
    }

    /// The timeline that wrote `lsn`, on the way to this one.
    pub fn timeline_of(&self, lsn: Lsn) -> u32 {
        self.switches
            .iter()
            .find(|s| lsn < s.switch)
            .map(|s| s.parent)
            .unwrap_or(self.timeline)
    }

    /// Where `timeline` ended on the way to this one; None for this one
    /// itself, or one that is not an ancestor.
    pub fn end_of(&self, timeline: u32) -> Option<Lsn> {
        self.switches
            .iter()
            .find(|s| s.parent == timeline)
            .map(|s| s.switch)
    }

    /// Whether `timeline` is this one or one of its ancestors.
    pub fn leads_from(&self, timeline: u32) -> bool {
        timeline == self.timeline || self.switches.iter().any(|s| s.parent == timeline)
    }
}

impl fmt::Display for Segment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "timeline {} segment {}", self.timeline, self.number)
    }
}

/// A segment's first page as PostgreSQL 15 writes it, for tests: magic
/// 0xD110, the long header's flag, then the segment and page sizes.
#[cfg(test)]
pub fn first_page(segment: u32) -> Vec<u8> {
    let mut page = vec![0u8; WAL_PAGE as usize];
    page[0..2].copy_from_slice(&0xD110u16.to_ne_bytes());
    page[2..4].copy_from_slice(&0x0006u16.to_ne_bytes());
    page[4..8].copy_from_slice(&1u32.to_ne_bytes());
    page[32..36].copy_from_slice(&segment.to_ne_bytes());
    page[36..40].copy_from_slice(&8192u32.to_ne_bytes());
    page
}

#[cfg(test)]
mod tests {
    use super::*;

    const MB16: u64 = 16 * 1024 * 1024;

    #[test]
    fn segment_names_are_postgresqls() {
        let lsn: Lsn = "16/B374D848".parse().unwrap();
        let seg = Segment::holding(1, lsn, MB16);
        assert_eq!(seg.file_name(MB16), "0000000100000016000000B3");
        assert_eq!(Segment::parse("0000000100000016000000B3", MB16), Some(seg));
        assert_eq!(seg.start(MB16).to_string(), "16/B3000000");
        assert_eq!(seg.end(MB16).to_string(), "16/B4000000");
        // 1 GiB segments: four per "log".
        let big = 1024 * 1024 * 1024;
        let seg = Segment::holding(2, "5/C0000000".parse().unwrap(), big);
        assert_eq!(seg.file_name(big), "000000020000000500000003");
        assert_eq!(Segment::parse("000000020000000500000004", big), None);
        for bad in [
            "",
            "00000001",
            "0000000100000016000000BZ",
            "0000000100000016000000B30",
        ] {
            assert_eq!(Segment::parse(bad, MB16), None, "{bad:?}");
        }
    }

    #[test]
    fn history_files_say_which_timeline_wrote_a_position() {
        assert_eq!(history_file_name(2), "00000002.history");
        assert_eq!(parse_history_file_name("0000000A.history"), Some(10));
        assert_eq!(parse_history_file_name("0000000A.partial"), None);
        let text =
            "1\t0/3000158\tno recovery target specified\n\n2\t0/5000000\tat restore point \"x\"\n";
        let h = History::parse(3, text).unwrap();
        assert_eq!(h.timeline_of("0/3000157".parse().unwrap()), 1);
        assert_eq!(h.timeline_of("0/3000158".parse().unwrap()), 2);
        assert_eq!(h.timeline_of("0/6000000".parse().unwrap()), 3);
        assert_eq!(h.end_of(1), Some("0/3000158".parse().unwrap()));
        assert_eq!(h.end_of(3), None);
        assert!(h.leads_from(1) && h.leads_from(3) && !h.leads_from(4));
        let err = History::parse(2, "1\tnot-a-position\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "line 1 of 00000002.history is not `timeline<TAB>position<TAB>reason`"
        );
    }

    #[test]
    fn a_segments_first_page_declares_its_size() {
        assert_eq!(declared_size(&first_page(16 << 20)), Some(MB16));
        assert_eq!(declared_size(&first_page(1 << 30)), Some(1 << 30));
        // Not a segment's head: zeros, a short read, no long header, an
        // impossible size, another magic.
        assert_eq!(declared_size(&[0u8; 8192]), None);
        assert_eq!(declared_size(&first_page(16 << 20)[..39]), None);
        let mut short = first_page(16 << 20);
        short[2] = 0;
        assert_eq!(declared_size(&short), None);
        assert_eq!(declared_size(&first_page(3 << 20)), None);
        let mut other = first_page(16 << 20);
        other[1] = 0;
        other[0] = 0;
        assert_eq!(declared_size(&other), None);
    }

    #[test]
    fn a_segment_is_used_up_to_its_last_page_that_is_not_zeros() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("000000010000000000000003");
        let file = File::create(&path).unwrap();
        file.set_len(MB16).unwrap();
        file.write_all_at(&first_page(16 << 20), 0).unwrap();
        let file = File::open(&path).unwrap();
        // The first page alone, whatever the floor below it.
        assert_eq!(used_length(&file, MB16, 0).unwrap(), WAL_PAGE);
        assert_eq!(used_length(&file, MB16, WAL_PAGE).unwrap(), WAL_PAGE);
        // Never less than the floor, zeros or not.
        assert_eq!(
            used_length(&file, MB16, 5 * WAL_PAGE).unwrap(),
            5 * WAL_PAGE
        );
        // One byte in a page a few blocks on keeps that page whole; one in
        // the last page keeps the whole segment.
        let rw = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        rw.write_all_at(&[1], 3 * (1 << 20) + 100 * WAL_PAGE + 17)
            .unwrap();
        assert_eq!(
            used_length(&file, MB16, WAL_PAGE).unwrap(),
            3 * (1 << 20) + 101 * WAL_PAGE
        );
        rw.write_all_at(&[1], MB16 - 1).unwrap();
        assert_eq!(used_length(&file, MB16, WAL_PAGE).unwrap(), MB16);
        // A file shorter than it should be is an error, not a guess.
        assert!(used_length(&file, 2 * MB16, WAL_PAGE).is_err());
    }
}
