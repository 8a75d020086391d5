//! The tar stream `pg_basebackup -D - -Ft` writes: ustar headers of 512 bytes,
//! each file's content padded to 512 bytes, two zero blocks at the end.
//! PostgreSQL writes names and link targets of at most 99 bytes (longer ones
//! are refused by the server), so no long-name extension is needed; sizes of
//! 8 GiB and more use the base-256 form, which is read too.

/// Why a header cannot be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TarError {
    /// The checksum does not match: the stream is not a tar archive or is damaged.
    #[error("pg_basebackup's tar stream is damaged (a header's checksum does not match)")]
    Checksum,
    /// A numeric field that is not a number.
    #[error("pg_basebackup's tar stream is damaged (a header's {0} is not a number)")]
    Number(&'static str),
}

/// The size of a tar block.
pub const BLOCK: usize = 512;

/// What one header describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A regular file, whose content follows.
    File,
    /// A directory.
    Directory,
    /// A symbolic link.
    Symlink,
    /// Anything else (hard links, devices): PostgreSQL writes none.
    Other(u8),
}

/// One member of the archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The path inside the data directory, without a trailing `/`.
    pub name: String,
    /// Permission bits.
    pub mode: u32,
    /// Owner and group ids.
    pub uid: u64,
    pub gid: u64,
    /// Owner and group names.
    pub uname: String,
    pub gname: String,
    /// The content's size in bytes (0 but for files).
    pub size: u64,
    /// Modification time, seconds since the epoch.
    pub mtime: i64,
    /// What it is.
    pub kind: Kind,
    /// A symbolic link's target.
    pub link: String,
}

impl Header {
    /// The bytes of padding that follow the content, up to the next block.
    pub fn padding(&self) -> u64 {
        (BLOCK as u64 - self.size % BLOCK as u64) % BLOCK as u64
    }
}

/// Reads one header block; `Ok(None)` for a zero block (the end of the archive).
pub fn parse(block: &[u8; BLOCK]) -> Result<Option<Header>, TarError> {
    if block.iter().all(|&b| b == 0) {
        return Ok(None);
    }
    let stored = number(&block[148..156], "checksum")?;
    if checksum(block) != stored {
        return Err(TarError::Checksum);
    }
    let mut name = text(&block[0..100]);
    let prefix = text(&block[345..500]);
    if &block[257..262] == b"ustar" && !prefix.is_empty() {
        name = format!("{prefix}/{name}");
    }
    let kind = match block[156] {
        b'0' | 0 => Kind::File,
        b'5' => Kind::Directory,
        b'2' => Kind::Symlink,
        other => Kind::Other(other),
    };
    Ok(Some(Header {
        name: name.trim_end_matches('/').to_string(),
        mode: number(&block[100..108], "mode")? as u32 & 0o7777,
        uid: number(&block[108..116], "owner")?,
        gid: number(&block[116..124], "group")?,
        uname: text(&block[265..297]),
        gname: text(&block[297..329]),
        size: number(&block[124..136], "size")?,
        mtime: number(&block[136..148], "modification time")? as i64,
        kind,
        link: text(&block[157..257]),
    }))
}

/// A header's checksum: the sum of its bytes, its own field counted as eight spaces.
fn checksum(block: &[u8; BLOCK]) -> u64 {
    block
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                32
            } else {
                b as u64
            }
        })
        .sum()
}

/// A NUL-terminated text field.
fn text(field: &[u8]) -> String {
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    String::from_utf8_lossy(&field[..end]).into_owned()
}

/// An octal field (spaces and NULs around it), or base-256 when its high bit is set.
fn number(field: &[u8], what: &'static str) -> Result<u64, TarError> {
    if field[0] & 0x80 != 0 {
        let mut value: u64 = (field[0] & 0x7f) as u64;
        for &b in &field[1..] {
            value = value
                .checked_mul(256)
                .ok_or(TarError::Number(what))?
                .checked_add(b as u64)
                .ok_or(TarError::Number(what))?;
        }
        return Ok(value);
    }
    let digits: &[u8] = {
        let s = field
            .iter()
            .position(|&b| b != b' ' && b != 0)
            .unwrap_or(field.len());
        let rest = &field[s..];
        let e = rest
            .iter()
            .position(|&b| b == b' ' || b == 0)
            .unwrap_or(rest.len());
        &rest[..e]
    };
    if digits.is_empty() {
        return Ok(0);
    }
    let s = std::str::from_utf8(digits).map_err(|_| TarError::Number(what))?;
    u64::from_str_radix(s, 8).map_err(|_| TarError::Number(what))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A ustar header as PostgreSQL's tarCreateHeader writes it.
    pub fn header(name: &str, kind: u8, size: u64, link: &str) -> [u8; BLOCK] {
        let mut h = [0u8; BLOCK];
        h[..name.len()].copy_from_slice(name.as_bytes());
        let octal = |h: &mut [u8; BLOCK], at: usize, len: usize, v: u64| {
            let s = format!("{v:0width$o}", width = len - 1);
            h[at..at + len - 1].copy_from_slice(s.as_bytes());
        };
        octal(&mut h, 100, 8, 0o600);
        octal(&mut h, 108, 8, 105);
        octal(&mut h, 116, 8, 110);
        if size >= 8 << 30 {
            h[124] = 0x80;
            h[124 + 4..136].copy_from_slice(&size.to_be_bytes());
        } else {
            octal(&mut h, 124, 12, size);
        }
        octal(&mut h, 136, 12, 1_700_000_000);
        h[156] = kind;
        h[157..157 + link.len()].copy_from_slice(link.as_bytes());
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[265..273].copy_from_slice(b"postgres");
        h[297..305].copy_from_slice(b"postgres");
        let s = format!("{:06o}\0 ", checksum(&h));
        h[148..156].copy_from_slice(s.as_bytes());
        h
    }

    #[test]
    fn files_directories_and_links_are_read() {
        let f = parse(&header("base/1/1259", b'0', 8192 + 3, ""))
            .unwrap()
            .unwrap();
        assert_eq!(
            (f.name.as_str(), f.kind, f.size, f.mode, f.uid, f.gid),
            ("base/1/1259", Kind::File, 8195, 0o600, 105, 110)
        );
        assert_eq!(
            (f.uname.as_str(), f.mtime, f.padding()),
            ("postgres", 1_700_000_000, 509)
        );
        let d = parse(&header("base/1/", b'5', 0, "")).unwrap().unwrap();
        assert_eq!(
            (d.name.as_str(), d.kind, d.padding()),
            ("base/1", Kind::Directory, 0)
        );
        let l = parse(&header("pg_tblspc/16384", b'2', 0, "/srv/ts"))
            .unwrap()
            .unwrap();
        assert_eq!((l.kind, l.link.as_str()), (Kind::Symlink, "/srv/ts"));
        let big = parse(&header("big", b'0', 9 << 30, "")).unwrap().unwrap();
        assert_eq!(big.size, 9 << 30);
    }

    #[test]
    fn the_end_and_damage_are_told_apart() {
        assert_eq!(parse(&[0; BLOCK]), Ok(None));
        let mut h = header("PG_VERSION", b'0', 3, "");
        h[0] = b'Q';
        assert_eq!(parse(&h), Err(TarError::Checksum));
    }
}
