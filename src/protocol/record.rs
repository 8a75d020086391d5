//! Records and file modes as Plakar expects them.

use std::time::SystemTime;

use super::connectors::{FileInfo, Record};

/// Go's `fs.ModeDir` bit.
pub const MODE_DIR: u32 = 0x8000_0000;
/// Go's `fs.ModeSymlink` bit.
pub const MODE_SYMLINK: u32 = 0x0800_0000;

/// What an entry of a file tree is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file of this size, whose content Plakar fetches with `Open`.
    File(u64),
    /// A directory.
    Directory,
    /// A symbolic link to this target.
    Symlink(String),
}

/// An entry of a file tree with its real metadata.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The record's path, from `/`.
    pub path: String,
    /// What it is.
    pub kind: EntryKind,
    /// Permission bits.
    pub perm: u32,
    /// Modification time.
    pub modified: SystemTime,
    /// Owner and group, by id and by name.
    pub uid: u64,
    pub gid: u64,
    pub user: String,
    pub group: String,
    /// The device number Plakar's cache compares (see the physical source).
    pub dev: u64,
    /// The inode number, as Plakar's cache compares it (0 when none).
    pub ino: u64,
}

/// The record of an entry.
pub fn entry_record(e: &Entry) -> Record {
    let (mode, size, target, has_reader) = match &e.kind {
        EntryKind::File(size) => (e.perm, *size as i64, String::new(), true),
        EntryKind::Directory => (MODE_DIR | e.perm, 0, String::new(), false),
        EntryKind::Symlink(target) => (MODE_SYMLINK | e.perm, 0, target.clone(), false),
    };
    Record {
        has_reader,
        pathname: e.path.clone(),
        target,
        file_info: Some(FileInfo {
            name: base_name(&e.path).to_string(),
            size,
            mode,
            mod_time: Some(e.modified.into()),
            dev: e.dev,
            ino: e.ino,
            uid: e.uid,
            gid: e.gid,
            nlink: 1,
            username: e.user.clone(),
            groupname: e.group.clone(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The metadata of a regular file of unknown or known size, readable by its owner and group.
pub fn file_info(pathname: &str, size: i64, modified: SystemTime) -> FileInfo {
    FileInfo {
        name: base_name(pathname).to_string(),
        size,
        mode: 0o640,
        mod_time: Some(modified.into()),
        nlink: 1,
        ..Default::default()
    }
}

/// A record for a regular file whose content Plakar fetches with `Open`.
pub fn file_record(pathname: &str, size: i64, modified: SystemTime) -> Record {
    Record {
        has_reader: true,
        pathname: pathname.to_string(),
        file_info: Some(file_info(pathname, size, modified)),
        ..Default::default()
    }
}

/// The record of the snapshot's root directory.
pub fn root_record(modified: SystemTime) -> Record {
    Record {
        pathname: "/".to_string(),
        file_info: Some(FileInfo {
            name: "/".to_string(),
            mode: MODE_DIR | 0o750,
            mod_time: Some(modified.into()),
            nlink: 1,
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Whether a record describes a directory.
pub fn is_dir(record: &Record) -> bool {
    record
        .file_info
        .as_ref()
        .is_some_and(|fi| fi.mode & MODE_DIR != 0)
}

fn base_name(pathname: &str) -> &str {
    match pathname.rsplit('/').next() {
        Some("") | None => "/",
        Some(name) => name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_and_directories_use_go_modes() {
        let f = file_record("/app.dump", 0, SystemTime::UNIX_EPOCH);
        assert!(f.has_reader);
        assert_eq!(f.file_info.as_ref().unwrap().name, "app.dump");
        assert!(!is_dir(&f));
        let r = root_record(SystemTime::UNIX_EPOCH);
        assert!(is_dir(&r));
        assert_eq!(r.file_info.unwrap().mode, 0x8000_01E8);
    }
}
