//! The real `plakar` program, run as a user runs it: found the way
//! docs/testing.md says, in a throw-away environment of its own (XDG_* directories,
//! and HOME when run as another system user) with this package installed from
//! the `.ptar` that `make package` builds.
//!
//! Plakar v1.1.0 does not hand `-cachedir` to the background cache process it
//! starts, so the XDG_* variables are what keeps each environment apart.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::OnceLock;

use tempfile::TempDir;

use super::cluster::server_identity;

/// Where the suite looks for plakar, in order, for messages.
pub const LOOKED_IN: &str = "$PLAKAR, `plakar` on $PATH, $(go env GOPATH)/bin/plakar";

/// The plakar binary: `$PLAKAR`, else `plakar` on `$PATH`, else `$(go env GOPATH)/bin/plakar`.
pub fn find() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("PLAKAR").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|d| d.join("plakar"))
            .find(|p| p.is_file())
    });
    if on_path.is_some() {
        return on_path;
    }
    let gopath = Command::new("go").args(["env", "GOPATH"]).output().ok()?;
    let bin = PathBuf::from(String::from_utf8_lossy(&gopath.stdout).trim()).join("bin/plakar");
    bin.is_file().then_some(bin)
}

/// The plakar binary the suite runs; panics when there is none (the suite checks first).
pub fn binary() -> &'static Path {
    static FOUND: OnceLock<Option<PathBuf>> = OnceLock::new();
    FOUND
        .get_or_init(find)
        .as_deref()
        .unwrap_or_else(|| panic!("no plakar found in {LOOKED_IN}"))
}

/// The package file that `make package` builds, built once per run.
pub fn package() -> &'static Path {
    static PTAR: OnceLock<PathBuf> = OnceLock::new();
    PTAR.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let version = format!("v{}", env!("CARGO_PKG_VERSION"));
        let name = format!(
            "postgresql_{version}_linux_{}.ptar",
            match std::env::consts::ARCH {
                "x86_64" => "amd64",
                "aarch64" => "arm64",
                other => other,
            }
        );
        let _ = std::fs::remove_file(root.join(&name));
        // plakar pkg create reads its own configuration: keep it out of the user's.
        let env = TempDir::new().unwrap();
        let mut make = Command::new("make");
        make.current_dir(root)
            .arg("package")
            .arg(format!("PLAKAR={}", binary().display()))
            .stdin(Stdio::null());
        isolate(&mut make, env.path());
        let ran = Ran::of(&mut make);
        assert!(
            ran.status.success(),
            "make package failed:\n{}",
            ran.output()
        );
        let ptar = root.join(&name);
        assert!(
            ptar.is_file(),
            "make package did not write {name}:\n{}",
            ran.output()
        );
        ptar
    })
}

/// Points plakar's configuration, cache and data at `dir`.
fn isolate(cmd: &mut Command, dir: &Path) {
    cmd.env("HOME", dir)
        .env("XDG_CONFIG_HOME", dir.join("config"))
        .env("XDG_CACHE_HOME", dir.join("cache"))
        .env("XDG_DATA_HOME", dir.join("data"))
        .env("XDG_STATE_HOME", dir.join("state"));
}

/// What one plakar command did.
#[derive(Debug)]
pub struct Ran {
    /// Its exit status.
    pub status: ExitStatus,
    /// What it printed on stdout.
    pub stdout: String,
    /// What it printed on stderr (the plugin's log included).
    pub stderr: String,
}

impl Ran {
    fn of(cmd: &mut Command) -> Ran {
        let out = cmd
            .output()
            .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
        Ran {
            status: out.status,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Both outputs, as a user sees them in a terminal.
    pub fn output(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }

    /// Panics unless the command exited 0.
    pub fn ok(self) -> Ran {
        assert!(
            self.status.success(),
            "plakar failed ({}):\n{}",
            self.status,
            self.output()
        );
        self
    }

    /// Panics unless the command exited 0 and said every word.
    pub fn ok_saying(self, words: &[&str]) -> Ran {
        self.ok().saying(words)
    }

    /// Panics unless the command failed with a non-zero exit status and said every word.
    pub fn fails_saying(self, words: &[&str]) -> Ran {
        assert!(
            !self.status.success() && self.status.code().is_some(),
            "plakar should have failed, but exited with {}:\n{}",
            self.status,
            self.output()
        );
        self.saying(words)
    }

    /// Panics unless the command's output holds every word.
    fn saying(self, words: &[&str]) -> Ran {
        let said = self.output();
        for w in words {
            assert!(
                said.contains(w),
                "{w:?} missing from plakar's output:\n{said}"
            );
        }
        self
    }
}

/// One user's Plakar: its own configuration, cache and data, with this package installed.
pub struct Plakar {
    dir: TempDir,
    user: Option<(u32, u32)>,
    binary: PathBuf,
}

impl Plakar {
    /// A fresh environment for the user running the tests.
    pub fn new() -> Plakar {
        Plakar::setup(None)
    }

    /// A fresh environment for the `postgres` system user, as most
    /// administrators run backups on the database host itself.
    pub fn as_postgres() -> Plakar {
        let user = server_identity().expect("the tests run as root, to switch to `postgres`");
        Plakar::setup(Some(user))
    }

    fn setup(user: Option<(u32, u32)>) -> Plakar {
        let dir = tempfile::Builder::new()
            .prefix("plakar-env-")
            .tempdir()
            .unwrap();
        let ptar = dir.path().join(package().file_name().expect("a file name"));
        std::fs::copy(package(), &ptar).unwrap();
        let mut binary = self::binary().to_path_buf();
        if let Some((uid, gid)) = user {
            // Where the tests found plakar (root's home) may be closed to another user.
            let copy = dir.path().join("plakar");
            std::fs::copy(&binary, &copy).unwrap();
            binary = copy;
            for path in [dir.path(), &ptar, &binary] {
                std::os::unix::fs::chown(path, Some(uid), Some(gid)).unwrap();
            }
        }
        let plakar = Plakar { dir, user, binary };
        // A first run asks about security checks; answer once, as the docs say.
        plakar.run(&["-disable-security-check"]).ok();
        plakar.run(&["pkg", "add", ptar.to_str().unwrap()]).ok();
        plakar
    }

    /// The environment's own directory, for stores and files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A plakar command in this environment, not yet started.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.binary);
        cmd.args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("LANG", "C.UTF-8")
            .current_dir(self.dir())
            .stdin(Stdio::null());
        isolate(&mut cmd, self.dir());
        if let Some((uid, gid)) = self.user {
            cmd.uid(uid).gid(gid).env("USER", "postgres");
        }
        cmd
    }

    /// Runs a shell script as a user types it, in this environment, with
    /// `plakar` on `$PATH` and the store `$STORE`.
    pub fn shell(&self, store: &Store<'_>, script: &str) -> Ran {
        let bin = self.dir().join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        let link = bin.join("plakar");
        if !link.exists() {
            std::os::unix::fs::symlink(&self.binary, &link).unwrap();
        }
        let path = format!(
            "{}:{}",
            bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut cmd = Command::new("sh");
        cmd.args(["-c", script])
            .env_clear()
            .env("PATH", path)
            .env("LANG", "C.UTF-8")
            .env("STORE", &store.path)
            .current_dir(self.dir())
            .stdin(Stdio::null());
        isolate(&mut cmd, self.dir());
        if let Some((uid, gid)) = self.user {
            cmd.uid(uid).gid(gid).env("USER", "postgres");
        }
        Ran::of(&mut cmd)
    }

    /// Runs plakar with these arguments and waits for it.
    pub fn run(&self, args: &[&str]) -> Ran {
        Ran::of(&mut self.command(args))
    }

    /// `plakar source add NAME LOCATION key=value...`.
    pub fn source(&self, name: &str, location: &str, options: &[&str]) {
        let mut args = vec!["source", "add", name, location];
        args.extend(options);
        self.run(&args).ok();
    }

    /// `plakar destination add NAME LOCATION key=value...`.
    pub fn destination(&self, name: &str, location: &str, options: &[&str]) {
        let mut args = vec!["destination", "add", name, location];
        args.extend(options);
        self.run(&args).ok();
    }

    /// A new store without encryption (`create -plaintext`).
    pub fn store(&self, name: &str) -> Store<'_> {
        let store = Store {
            plakar: self,
            path: self.dir().join(name),
            passphrase: None,
        };
        store.at(&["create", "-plaintext"]).ok();
        store
    }

    /// The plaintext store already made at `path`.
    pub fn existing_store(&self, path: &Path) -> Store<'_> {
        Store {
            plakar: self,
            path: path.to_path_buf(),
            passphrase: None,
        }
    }

    /// A new plaintext store at `path`, a directory of the caller's.
    pub fn store_at(&self, path: &Path) -> Store<'_> {
        let store = Store {
            plakar: self,
            path: path.to_path_buf(),
            passphrase: None,
        };
        store.at(&["create", "-plaintext"]).ok();
        store
    }

    /// A new encrypted store, its passphrase given as `PLAKAR_PASSPHRASE`.
    pub fn encrypted_store(&self, name: &str, passphrase: &str) -> Store<'_> {
        let store = Store {
            plakar: self,
            path: self.dir().join(name),
            passphrase: Some(passphrase.to_string()),
        };
        store.at(&["create"]).ok();
        store
    }
}

/// A Kloset store of one environment.
pub struct Store<'a> {
    plakar: &'a Plakar,
    path: PathBuf,
    passphrase: Option<String>,
}

impl Store<'_> {
    /// `plakar at STORE <args>`, not yet started.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut all = vec!["at", self.path.to_str().expect("a UTF-8 path")];
        all.extend(args);
        let mut cmd = self.plakar.command(&all);
        if let Some(p) = &self.passphrase {
            cmd.env("PLAKAR_PASSPHRASE", p);
        }
        cmd
    }

    /// Restores a physical snapshot into a new directory with a physical
    /// destination of default options, checks that `pg_verifybackup` passed,
    /// and starts a server on it.
    pub fn restored_and_started(&self, snapshot: &str) -> (TempDir, super::Cluster) {
        let (target, data) = self.restored(snapshot);
        let copy = super::Cluster::adopt(&data);
        (target, copy)
    }

    /// Restores a physical snapshot as [`Store::restored_and_started`]
    /// does, without starting a server: the data directory, as the restore
    /// left it, and the directory that holds it.
    pub fn restored(&self, snapshot: &str) -> (TempDir, std::path::PathBuf) {
        let target = super::cluster::open_dir();
        let data = target.path().join("restored");
        let name = format!("restored-{}", snapshot.get(..8).unwrap_or(snapshot));
        self.plakar
            .destination(&name, &super::cluster::bin_location(&data), &[]);
        self.restore(&name, snapshot)
            .ok_saying(&["matches its backup_manifest"]);
        (target, data)
    }

    /// `plakar at STORE <args>`.
    pub fn at(&self, args: &[&str]) -> Ran {
        Ran::of(&mut self.command(args))
    }

    /// `plakar at STORE backup @SOURCE`.
    pub fn backup(&self, source: &str) -> Ran {
        self.at(&["backup", &format!("@{source}")])
    }

    /// `plakar at STORE backup @SOURCE`, which must succeed; the new snapshot's id.
    pub fn backed_up(&self, source: &str) -> String {
        let before = self.snapshots();
        self.backup(source).ok();
        let after = self.snapshots();
        let new: Vec<_> = after.iter().filter(|s| !before.contains(s)).collect();
        assert_eq!(new.len(), 1, "one new snapshot: {before:?} then {after:?}");
        new[0].clone()
    }

    /// `plakar at STORE restore -to @DESTINATION WHAT` (a snapshot, or `SNAP:/path`).
    pub fn restore(&self, destination: &str, what: &str) -> Ran {
        self.at(&["restore", "-to", &format!("@{destination}"), what])
    }

    /// The snapshot ids `plakar at STORE ls` lists.
    pub fn snapshots(&self) -> Vec<String> {
        self.at(&["ls"])
            .ok()
            .stdout
            .lines()
            .filter_map(|l| l.split_whitespace().nth(1).map(str::to_string))
            .collect()
    }

    /// The file names at the root of a snapshot (`plakar at STORE ls SNAP:/`), sorted.
    pub fn files(&self, snapshot: &str) -> Vec<String> {
        let mut names: Vec<String> = self
            .at(&["ls", &format!("{snapshot}:/")])
            .ok()
            .stdout
            .lines()
            .filter_map(|l| l.split_whitespace().last().map(str::to_string))
            .collect();
        names.sort();
        names
    }

    /// A file of a snapshot (`plakar at STORE cat SNAP:/path`).
    pub fn cat(&self, snapshot: &str, path: &str) -> Vec<u8> {
        let out = self
            .command(&["cat", &format!("{snapshot}:{path}")])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "cat {path}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }
}

/// Runs a file's real-Plakar cases with libtest-mimic. Without a plakar
/// binary every case is reported as ignored, never as passed, and a line in
/// `target/plakar-not-run` says so, which `make test` repeats at its end.
pub fn run_cases(cases: &'static [(&'static str, fn())], what: &str) {
    use libtest_mimic::{Arguments, Failed, Trial};
    let args = Arguments::from_args();
    let found = find();
    // The package (and the release build under it, minutes on a fresh clone)
    // is made before any case starts, so that no case's clock runs during it:
    // a case that keeps pgbench writing for a while would see it end.
    if found.is_some() && !args.list {
        package();
    }
    let trials = cases
        .iter()
        .map(|&(name, case)| {
            Trial::test(name, move || {
                std::panic::catch_unwind(case).map_err(|panic| {
                    let message = panic
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_else(|| "the case panicked".into());
                    Failed::from(message)
                })
            })
            .with_ignored_flag(found.is_none())
        })
        .collect();
    if found.is_none() {
        let line = format!(
            "REAL PLAKAR NOT RUN: {} {what} did not run: no plakar binary in {LOOKED_IN}",
            cases.len()
        );
        eprintln!("{line}");
        let marker = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/plakar-not-run");
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(marker)
            .expect("target/ is writable");
        let _ = std::io::Write::write_all(&mut file, format!("{line}\n").as_bytes());
    }
    libtest_mimic::run(&args, trials).exit();
}
