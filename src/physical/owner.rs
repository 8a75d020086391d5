//! Who owns the restored files: the physical destination's `owner` option.
//!
//! A restore run as root writes files root owns, which a server started as
//! `postgres` cannot use; `owner=postgres` gives every file to that user (and
//! its primary group) as it is written, the data directory itself included.

use std::ffi::{CStr, CString};
use std::path::Path;

use crate::physical::error::{Error, FileError};

/// A system user the restored files are given to, with its primary group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// The user's name, as the option gave it.
    pub name: String,
    /// Its user id.
    pub uid: u32,
    /// The id of its primary group.
    pub gid: u32,
}

/// A user database entry: name, uid, primary gid.
type Passwd = (String, u32, u32);

/// Runs a reentrant `getpw*_r` lookup, growing its buffer as it asks.
fn passwd_entry(
    mut lookup: impl FnMut(
        *mut libc::passwd,
        *mut libc::c_char,
        usize,
        *mut *mut libc::passwd,
    ) -> libc::c_int,
) -> Option<Passwd> {
    let mut buf: Vec<libc::c_char> = vec![0; 4096];
    loop {
        // SAFETY: `passwd` is plain data the call fills in; its strings point into `buf`,
        // which outlives every read below.
        let mut entry: libc::passwd = unsafe { std::mem::zeroed() };
        let mut found: *mut libc::passwd = std::ptr::null_mut();
        let rc = lookup(&mut entry, buf.as_mut_ptr(), buf.len(), &mut found);
        if rc == libc::ERANGE && buf.len() < 1 << 20 {
            buf.resize(buf.len() * 2, 0);
            continue;
        }
        if rc != 0 || found.is_null() || entry.pw_name.is_null() {
            return None;
        }
        // SAFETY: a successful lookup leaves a NUL-terminated name in `buf`.
        let name = unsafe { CStr::from_ptr(entry.pw_name) }
            .to_string_lossy()
            .into_owned();
        return Some((name, entry.pw_uid, entry.pw_gid));
    }
}

/// The name of a user id, or `uid N` when it has none.
fn user_name(uid: u32) -> String {
    passwd_entry(|entry, buf, len, found| {
        // SAFETY: every pointer is valid for the call, `buf` for `len` bytes.
        unsafe { libc::getpwuid_r(uid, entry, buf, len, found) }
    })
    .map(|(name, _, _)| name)
    .unwrap_or_else(|| format!("uid {uid}"))
}

impl Owner {
    /// The system user `name`; `None` when this system has no such user.
    pub fn lookup(name: &str) -> Option<Owner> {
        let cname = CString::new(name).ok()?;
        let (_, uid, gid) = passwd_entry(|entry, buf, len, found| {
            // SAFETY: every pointer is valid for the call, `buf` for `len` bytes.
            unsafe { libc::getpwnam_r(cname.as_ptr(), entry, buf, len, found) }
        })?;
        Some(Owner {
            name: name.to_string(),
            uid,
            gid,
        })
    }

    /// Refuses, before anything is written, an owner that a process running
    /// as `euid` cannot give files to: only root gives files away.
    pub fn check_running_as(&self, euid: u32) -> Result<(), Error> {
        if euid == 0 || euid == self.uid {
            return Ok(());
        }
        Err(Error::OwnerNeedsRoot {
            owner: self.name.clone(),
            running: user_name(euid),
        })
    }

    /// [`Owner::check_running_as`] for this process.
    pub fn check(&self) -> Result<(), Error> {
        // SAFETY: geteuid cannot fail.
        self.check_running_as(unsafe { libc::geteuid() })
    }

    /// Gives `path` to the owner; a symbolic link itself, not what it points to.
    pub fn give(&self, path: &Path) -> Result<(), FileError> {
        std::os::unix::fs::lchown(path, Some(self.uid), Some(self.gid))
            .map_err(|source| self.refused(path, source))
    }

    /// Gives an open file to the owner.
    pub fn give_file(&self, file: &std::fs::File, path: &Path) -> Result<(), FileError> {
        std::os::unix::fs::fchown(file, Some(self.uid), Some(self.gid))
            .map_err(|source| self.refused(path, source))
    }

    fn refused(&self, path: &Path, source: std::io::Error) -> FileError {
        FileError::Owner {
            path: path.to_path_buf(),
            owner: self.name.clone(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_gives_files_to_anyone_and_others_only_to_themselves() {
        let root = Owner::lookup("root").expect("every system has root");
        assert_eq!((root.uid, root.gid), (0, 0));
        let someone = Owner {
            name: "someone".into(),
            uid: 4242,
            gid: 4242,
        };
        assert!(someone.check_running_as(0).is_ok());
        assert!(someone.check_running_as(4242).is_ok());
        let err = someone.check_running_as(4343).unwrap_err().to_string();
        for words in [
            "option `owner=someone`",
            "needs root",
            "uid 4343",
            "chown -R",
        ] {
            assert!(err.contains(words), "{words:?} missing: {err}");
        }
        assert!(Owner::lookup("no such user, surely").is_none());
        assert!(Owner::lookup("nul\0byte").is_none());
    }
}
