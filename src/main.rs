//! `postgresql importer|exporter`: the plugin executable Plakar starts.

use std::process::ExitCode;
use std::time::Duration;

use plakar_postgresql::server::{self, Role};

const USAGE: &str = "usage: postgresql importer | exporter | physical-importer | physical-exporter | --version | --help";

const HELP: &str = "\
postgresql: the PostgreSQL integration for Plakar.

Plakar starts this program itself and speaks gRPC with it on stdin and stdout;
it is not meant to be run by hand. Install it with `plakar pkg add`, then:

  plakar source add mypg postgres://user:password@host:5432/dbname
  plakar at /var/backups backup @mypg
  plakar destination add mypgdst postgres://user:password@host:5432/dbname
  plakar at /var/backups restore -to @mypgdst <snapshot_id>

Commands:
  importer            serve the backup source (postgres:// in `plakar source add`)
  exporter            serve the restore destination (`plakar destination add`)
  physical-importer   serve the physical backup source (postgres+bin://)
  physical-exporter   serve the physical restore destination (postgres+bin:///dir)
  --version           print the version
  --help              print this text

Logs go to stderr; set PLAKAR_POSTGRESQL_LOG=debug for more detail.
See postgresql(1) and README.md for every option.";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let role = match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["importer"] => Role::Importer,
        ["exporter"] => Role::Exporter,
        ["physical-importer"] => Role::PhysicalImporter,
        ["physical-exporter"] => Role::PhysicalExporter,
        ["--version"] | ["-V"] => {
            println!("postgresql {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        ["--help"] | ["-h"] => {
            println!("{HELP}");
            return ExitCode::SUCCESS;
        }
        _ => {
            eprintln!("postgresql: unexpected arguments {args:?}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    init_logging();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("postgresql: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(server::run(role));
    // Dropping the tasks drops their child processes, which kills them.
    runtime.shutdown_timeout(Duration::from_secs(2));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("PLAKAR_POSTGRESQL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_target(false)
        .without_time()
        .init();
}
