//! Trust: TLS modes, client certificates, and passwords that never leak.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use common::host;
use common::{items, seed, Cluster, ClusterOptions, PASSWORD};

/// A throw-away certificate authority and the certificates it signs, made with openssl.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Pki {
        let pki = Pki {
            dir: tempfile::tempdir().unwrap(),
        };
        pki.ca("ca");
        pki.ca("other-ca");
        // The server's certificate names localhost only, so 127.0.0.1 is a wrong host name.
        pki.sign("server", "localhost", "subjectAltName=DNS:localhost");
        pki.sign("client", "postgres", "basicConstraints=CA:FALSE");
        pki
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn read(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.path(name)).unwrap()
    }

    fn openssl(&self, args: &[&str]) {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .expect("openssl is installed by scripts/setup.sh");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A new P-256 private key in `key`.
    fn new_key(&self, key: &str) {
        self.openssl(&[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            key,
        ]);
    }

    fn ca(&self, name: &str) {
        let key = format!("{name}.key");
        let crt = format!("{name}.crt");
        self.new_key(&key);
        self.openssl(&[
            "req",
            "-x509",
            "-new",
            "-key",
            &key,
            "-subj",
            &format!("/CN={name}"),
            "-days",
            "2",
            "-out",
            &crt,
        ]);
    }

    fn sign(&self, name: &str, cn: &str, ext: &str) {
        let key = format!("{name}.key");
        let csr = format!("{name}.csr");
        let crt = format!("{name}.crt");
        let extfile = format!("{name}.ext");
        std::fs::write(self.path(&extfile), format!("{ext}\n")).unwrap();
        self.new_key(&key);
        self.openssl(&[
            "req",
            "-new",
            "-key",
            &key,
            "-subj",
            &format!("/CN={cn}"),
            "-out",
            &csr,
        ]);
        self.openssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &extfile,
            "-out",
            &crt,
        ]);
    }

    /// A cluster that accepts TLS connections only, authenticated as `auth`.
    fn cluster(&self, auth: &str) -> Cluster {
        Cluster::start_with(ClusterOptions {
            config: vec![
                "ssl = on".into(),
                "ssl_cert_file = 'server.crt'".into(),
                "ssl_key_file = 'server.key'".into(),
                "ssl_ca_file = 'ca.crt'".into(),
            ],
            hba: vec![
                "local all all scram-sha-256".into(),
                format!("hostssl all all 127.0.0.1/32 {auth}"),
            ],
            files: vec![
                ("server.crt".into(), self.read("server.crt")),
                ("server.key".into(), self.read("server.key")),
                ("ca.crt".into(), self.read("ca.crt")),
            ],
            ..Default::default()
        })
    }
}

fn path_str(p: &Path) -> String {
    p.to_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_modes_reach_the_verdicts_libpq_would() {
    let pki = Pki::new();
    let cluster = pki.cluster("scram-sha-256");
    seed(&cluster, "app", 50);
    let by_name = format!("postgres://postgres@localhost:{}/app", cluster.port);
    let by_ip = format!("postgres://postgres@127.0.0.1:{}/app", cluster.port);
    let ca = path_str(&pki.path("ca.crt"));
    let other_ca = path_str(&pki.path("other-ca.crt"));

    let ok = |run: &host::BackupRun| {
        assert!(run.committed().files["/app.dump"].starts_with(b"PGDMP"));
    };
    ok(&host::backup(&[
        ("location", &by_ip),
        ("password", PASSWORD),
        ("ssl_mode", "require"),
    ])
    .await);
    ok(&host::backup(&[
        ("location", &by_name),
        ("password", PASSWORD),
        ("ssl_mode", "verify-full"),
        ("ssl_root_cert", &ca),
    ])
    .await);
    // verify-ca checks the signature, not the name.
    ok(&host::backup(&[
        ("location", &by_ip),
        ("password", PASSWORD),
        ("ssl_mode", "verify-ca"),
        ("ssl_root_cert", &ca),
    ])
    .await);
    // The CA given inline instead of as a file.
    let ca_pem = String::from_utf8(pki.read("ca.crt")).unwrap();
    ok(&host::backup(&[
        ("location", &by_name),
        ("password", PASSWORD),
        ("ssl_mode", "verify-full"),
        ("ssl_root_cert_data", &ca_pem),
    ])
    .await);

    let err = host::backup(&[
        ("location", &by_ip),
        ("password", PASSWORD),
        ("ssl_mode", "verify-full"),
        ("ssl_root_cert", &ca),
    ])
    .await
    .snapshot
    .unwrap_err();
    assert!(
        err.contains("cannot connect") && err.to_lowercase().contains("certificate"),
        "wrong host name: {err}"
    );
    assert!(
        err.contains("IP address mismatch")
            || err.contains("hostname mismatch")
            || err.contains("verify"),
        "{err}"
    );

    let err = host::backup(&[
        ("location", &by_name),
        ("password", PASSWORD),
        ("ssl_mode", "verify-full"),
        ("ssl_root_cert", &other_ca),
    ])
    .await
    .snapshot
    .unwrap_err();
    assert!(
        err.contains("cannot connect") && err.contains("certificate verify failed"),
        "wrong CA: {err}"
    );

    let err = host::backup(&[
        ("location", &by_ip),
        ("password", PASSWORD),
        ("ssl_mode", "disable"),
    ])
    .await
    .snapshot
    .unwrap_err();
    assert!(
        err.contains("no encryption"),
        "disable against a TLS-only server: {err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn client_certificates_authenticate_backup_and_restore() {
    let pki = Pki::new();
    let cluster = pki.cluster("cert");
    // `cert` authentication is for TCP only; the harness seeds over the socket with a password.
    seed(&cluster, "app", 100);
    let location = format!("postgres://postgres@localhost:{}/app", cluster.port);
    let (cert, key, ca) = (
        path_str(&pki.path("client.crt")),
        path_str(&pki.path("client.key")),
        path_str(&pki.path("ca.crt")),
    );
    let tls = [
        ("location", location.as_str()),
        ("ssl_mode", "verify-full"),
        ("ssl_root_cert", ca.as_str()),
        ("ssl_cert", cert.as_str()),
        ("ssl_key", key.as_str()),
    ];
    let run = host::backup(&tls).await;
    let snapshot = run.committed();

    cluster.sql("postgres", "CREATE DATABASE copy");
    let target = format!("postgres://postgres@localhost:{}/copy", cluster.port);
    let cert_pem = String::from_utf8(pki.read("client.crt")).unwrap();
    let key_pem = String::from_utf8(pki.read("client.key")).unwrap();
    let inline = [
        ("location", target.as_str()),
        ("ssl_mode", "verify-full"),
        ("ssl_root_cert", ca.as_str()),
        ("ssl_cert_data", cert_pem.as_str()),
        ("ssl_key_data", key_pem.as_str()),
    ];
    let restored = host::restore(&inline, &snapshot).await;
    restored.assert_ok();
    assert_eq!(items(&cluster, "copy"), items(&cluster, "app"));

    // Without the certificate the server refuses, and both sides say so.
    let err = host::backup(&[("location", location.as_str()), ("ssl_mode", "require")])
        .await
        .snapshot
        .unwrap_err();
    assert!(err.contains("cannot connect"), "{err}");
}

/// Every process started with the plugin's application name, seen while `busy` is set.
fn watch_children(
    busy: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<(String, String)>>>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        while busy.load(Ordering::SeqCst) {
            for entry in std::fs::read_dir("/proc").unwrap().flatten() {
                let dir = entry.path();
                let Ok(environ) = std::fs::read(dir.join("environ")) else {
                    continue;
                };
                if !environ
                    .windows(24)
                    .any(|w| w == b"PGAPPNAME=plakar-postgre")
                {
                    continue;
                }
                let cmdline = std::fs::read(dir.join("cmdline")).unwrap_or_default();
                seen.lock().unwrap().push((
                    String::from_utf8_lossy(&cmdline).into_owned(),
                    String::from_utf8_lossy(&environ).into_owned(),
                ));
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn passwords_never_leak_into_argv_environment_snapshot_or_logs() {
    const TRICKY: &str = "p@ss:w/rd%#?&= é";
    let src = Cluster::start();
    src.sql(
        "postgres",
        &format!("CREATE ROLE backup_admin LOGIN SUPERUSER PASSWORD '{TRICKY}'"),
    );
    src.sql("postgres", "CREATE DATABASE app");
    // Big enough that pg_dump and pg_restore live long enough to be watched.
    src.sql(
        "app",
        "CREATE TABLE big AS SELECT i, md5(i::text) AS h FROM generate_series(1, 400000) i",
    );

    let busy = Arc::new(AtomicBool::new(true));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let watcher = watch_children(busy.clone(), seen.clone());

    let in_uri = format!(
        "postgres://backup_admin:{}@127.0.0.1:{}/app",
        common::cluster::encode(TRICKY),
        src.port
    );
    let run = host::backup(&[("location", &in_uri)]).await;
    let snapshot = run.committed();
    let as_option = src.uri_without_password("backup_admin", "app");
    let run2 = host::backup(&[("location", &as_option), ("password", TRICKY)]).await;
    assert!(run2.snapshot.is_ok(), "{:?}", run2.snapshot.err());

    let dst = Cluster::start();
    dst.sql("postgres", "CREATE DATABASE app");
    let restored = host::restore(&[("location", &dst.uri("app"))], &snapshot).await;
    restored.assert_ok();
    busy.store(false, Ordering::SeqCst);
    watcher.join().unwrap();
    assert_eq!(
        dst.rows("app", "SELECT count(*), sum(i) FROM big"),
        src.rows("app", "SELECT count(*), sum(i) FROM big")
    );

    let seen = std::mem::take(&mut *seen.lock().unwrap());
    let tools: Vec<&str> = ["pg_dump", "pg_dumpall", "pg_restore"]
        .into_iter()
        .filter(|t| {
            seen.iter()
                .any(|(cmd, _)| cmd.split('\0').next().unwrap_or("").ends_with(t))
        })
        .collect();
    assert!(
        tools.contains(&"pg_dump") && tools.contains(&"pg_restore"),
        "watched too little: {tools:?}"
    );
    for (cmdline, environ) in seen.iter() {
        for secret in [TRICKY, PASSWORD] {
            assert!(!cmdline.contains(secret), "password in argv: {cmdline:?}");
            assert!(
                !environ.contains(secret),
                "password in the environment of {cmdline:?}"
            );
        }
        assert!(
            !environ.contains("PGPASSWORD="),
            "PGPASSWORD set for {cmdline:?}"
        );
    }
    for (path, bytes) in &snapshot.files {
        let text = String::from_utf8_lossy(bytes);
        assert!(!text.contains(TRICKY), "password in {path}");
    }
    for log in [&run.stderr, &run2.stderr, &restored.stderr] {
        assert!(
            !log.contains(TRICKY) && !log.contains(PASSWORD),
            "password in the plugin's output"
        );
    }
    // A failing login shows the user, never the password.
    let wrong = format!(
        "postgres://backup_admin:{}x@127.0.0.1:{}/app",
        common::cluster::encode(TRICKY),
        src.port
    );
    let failed = host::backup(&[("location", &wrong)]).await;
    let err = failed.snapshot.unwrap_err();
    assert!(
        err.contains("password authentication failed for user \"backup_admin\""),
        "{err}"
    );
    assert!(!err.contains(TRICKY) && !failed.stderr.contains(TRICKY));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_mute_server_times_out_instead_of_hanging() {
    // Accepts connections and never says a word.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let held = std::thread::spawn(move || {
        let mut open = Vec::new();
        for stream in listener.incoming().take(2) {
            open.push(stream);
        }
        std::thread::sleep(std::time::Duration::from_secs(8));
    });
    let location = format!("postgres://postgres:pw@127.0.0.1:{port}/app");
    let started = std::time::Instant::now();
    let run = host::backup(&[("location", &location), ("connect_timeout", "2")]).await;
    let err = run.snapshot.unwrap_err();
    assert!(
        err.contains("did not answer within 2 s (connect_timeout)"),
        "{err}"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(6),
        "took {:?}",
        started.elapsed()
    );
    let restored = host::restore(
        &[("location", &location), ("connect_timeout", "2")],
        &Default::default(),
    )
    .await;
    assert!(restored.error.unwrap().contains("connect_timeout"));
    drop(held);
}

#[tokio::test(flavor = "multi_thread")]
async fn md5_password_servers_work_too() {
    const MD5_PASSWORD: &str = "md5 p@ss:w/rd%#?&= é";
    let cluster = Cluster::with_md5_role("old_app", MD5_PASSWORD, "SUPERUSER", "all");
    assert!(cluster
        .sql(
            "postgres",
            "SELECT rolpassword FROM pg_authid WHERE rolname = 'old_app'"
        )
        .starts_with("md5"));
    seed(&cluster, "app", 50);
    let location = format!(
        "postgres://old_app:{}@127.0.0.1:{}/app",
        common::cluster::encode(MD5_PASSWORD),
        cluster.port
    );
    let run = host::backup(&[("location", &location)]).await;
    let snapshot = run.committed();
    cluster.sql("postgres", "CREATE DATABASE copy");
    let target = format!("postgres://old_app@127.0.0.1:{}/copy", cluster.port);
    let restored = host::restore(
        &[("location", &target), ("password", MD5_PASSWORD)],
        &snapshot,
    )
    .await;
    restored.assert_ok();
    assert_eq!(items(&cluster, "copy"), items(&cluster, "app"));
    assert!(!run.stderr.contains(MD5_PASSWORD) && !restored.stderr.contains(MD5_PASSWORD));
}

#[tokio::test(flavor = "multi_thread")]
async fn dumps_give_up_on_a_server_that_goes_mute() {
    let cluster = Cluster::start();
    seed(&cluster, "app", 10);
    let postmaster: i32 = std::fs::read_to_string(cluster.data_dir().join("postmaster.pid"))
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let started = std::time::Instant::now();
    // After Init, the server stops answering: new connections queue unanswered.
    // SAFETY (both blocks): signals to the cluster's own postmaster.
    let run = host::backup_with_pause(
        &[("location", &cluster.uri("app")), ("connect_timeout", "2")],
        || unsafe {
            libc::kill(postmaster, libc::SIGSTOP);
        },
    )
    .await;
    // Resumed so that the cluster can be shut down.
    unsafe {
        libc::kill(postmaster, libc::SIGCONT);
    }
    let err = run
        .snapshot
        .expect_err("a dump that cannot connect must fail the backup");
    assert!(err.contains("timeout expired"), "{err}");
    assert!(err.contains("was not committed"), "{err}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(30),
        "took {:?}",
        started.elapsed()
    );
}
