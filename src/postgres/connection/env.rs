//! The environment of every client tool: the connection's settings and
//! nothing inherited but PATH and TMPDIR.

use std::ffi::OsString;

use super::Connection;

impl Connection {
    /// The environment of a client tool: explicit settings only, so that the
    /// user's own PG* variables, service files and ~/.pgpass change nothing.
    pub fn tool_env(&self) -> Vec<(OsString, OsString)> {
        let mut env: Vec<(OsString, OsString)> = Vec::new();
        let mut set = |k: &str, v: &dyn AsRef<std::ffi::OsStr>| {
            env.push((k.into(), v.as_ref().to_os_string()));
        };
        if let Some(path) = std::env::var_os("PATH") {
            set("PATH", &path);
        }
        if let Some(tmp) = std::env::var_os("TMPDIR") {
            set("TMPDIR", &tmp);
        }
        set("LC_ALL", &"C.UTF-8");
        set("PGHOST", &self.host);
        set("PGPORT", &self.port.to_string());
        set("PGUSER", &self.user);
        set("PGPASSFILE", &self.files.passfile.path());
        set("PGSSLMODE", &self.tls.mode.as_str());
        set(
            "PGCONNECT_TIMEOUT",
            &self.connect_timeout.as_secs().to_string(),
        );
        set("PGAPPNAME", &"plakar-postgresql");
        if let Some(p) = &self.tls.cert {
            set("PGSSLCERT", p);
        }
        if let Some(p) = &self.tls.key {
            set("PGSSLKEY", p);
        }
        if let Some(p) = &self.tls.root_cert {
            set("PGSSLROOTCERT", p);
        }
        env
    }
}
