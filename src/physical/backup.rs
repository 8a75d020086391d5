//! The physical source: `plakar backup @mybin` for `postgres+bin://`.
//!
//! `Init` checks, before anything is copied, what a base backup needs (see
//! `preflight`), and takes a temporary replication slot so that the WAL the
//! copy needs cannot be recycled before it is fetched; with `archive_wal`, it
//! also takes the permanent slot and the runs' state (see [`super::archive`]).
//! `Import` copies the cluster (see [`super::copy`]), `/manifest.json` last,
//! or runs the archiving run, which carries its WAL.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use tokio_postgres::Client;

use super::archive::Archiving;
use super::copy::{BaseBackup, Copy};
use super::direct::{self, DataDir, Served};
use super::options::{CopyMethod, PhysicalSource};
use super::preflight;
use crate::physical::error::Error;
use crate::postgres::connection::{server_major, MAINTENANCE_DB};
use crate::postgres::manifest::{self, Checkpoint, PhysicalFacts, PhysicalOptions};
use crate::postgres::tools::{Kit, Toolbox};
use crate::protocol::in_order::OpenQueue;
use crate::protocol::source::{Content, ImportRun, Source};

/// A physical backup in progress: what `Init` learnt and holds.
pub struct PhysicalBackup {
    /// What the copy is taken with.
    base: BaseBackup,
    /// Holds the temporary replication slot for as long as it lives.
    admin: Client,
    /// With `archive_wal`: the slot, the state, what the run carries.
    archiving: Option<Archiving>,
    /// The `Open` calls, served by the copy in `import`.
    opens: OpenQueue,
}

impl std::fmt::Debug for PhysicalBackup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PhysicalBackup")
            .field("target", &self.base.config.conn.target())
            .finish()
    }
}

async fn prepare(config: PhysicalSource) -> Result<PhysicalBackup, Error> {
    let conn = &config.conn;
    let admin = conn.connect(MAINTENANCE_DB).await?;
    let major = server_major(&admin).await?;
    let toolbox = Toolbox::locate(conn, major, Kit::PHYSICAL_BACKUP).await?;
    tracing::info!(
        "physical backup of {} with {}",
        conn.target(),
        toolbox.version
    );
    let system = preflight::check(&admin, conn).await?;
    let archiving = match config.archive.clone() {
        Some(archive) => Some(Archiving::prepare(&config, archive, &admin, system.clone()).await?),
        None => None,
    };
    let tablespaces = preflight::tablespaces(&admin).await?;
    let direct = match config.copy {
        CopyMethod::Stream => None,
        method => direct::find(
            &admin,
            conn,
            config.data_dir.as_deref(),
            method == CopyMethod::Direct,
            major,
            &system.system_identifier,
            config.verify_checksums,
        )
        .await?
        .map(|dir| DataDir {
            checksums: config
                .state_dir
                .as_ref()
                .map(|state| state.join(format!("direct-{}.crc", system.system_identifier))),
            ..dir
        }),
    };
    // On a standby too: a temporary physical slot can be made there, and
    // keeps the WAL the copy needs from its restartpoints.
    let slot = preflight::reserve_wal(&admin).await?;
    let backup = PhysicalFacts {
        options: PhysicalOptions {
            checkpoint: if config.fast_checkpoint {
                Checkpoint::Fast
            } else {
                Checkpoint::Spread
            },
            max_rate: config.max_rate.clone(),
            verify_checksums: config.verify_checksums,
            ssl_mode: conn.tls.mode.as_str().into(),
        },
        pg_basebackup_version: toolbox.version.clone(),
        replication_slot: slot.as_str().to_string(),
        data_directory: direct.as_ref().map(|d| d.path.display().to_string()),
    };
    let mut manifest = manifest::physical(conn, &admin, backup).await;
    manifest.server.timeline = Some(system.timeline);
    if manifest.server.in_recovery == Some(true) {
        tracing::info!(
            "{} is a standby replaying timeline {}: the copy is taken from it, and its WAL range is the standby's replay",
            conn.target(),
            system.timeline
        );
    }
    Ok(PhysicalBackup {
        base: BaseBackup {
            config,
            toolbox,
            manifest,
            started: SystemTime::now(),
            tablespaces,
            direct,
            served: Served::default(),
        },
        admin,
        archiving,
        opens: OpenQueue::default(),
    })
}

#[tonic::async_trait]
impl Source for PhysicalBackup {
    type Error = Error;

    async fn init(config: &HashMap<String, String>) -> Result<PhysicalBackup, Error> {
        prepare(PhysicalSource::parse(config)?).await
    }

    fn origin(&self) -> String {
        self.base.config.conn.target()
    }

    async fn ping(&self) -> Result<(), Error> {
        Ok(self.base.config.conn.ping(MAINTENANCE_DB).await?)
    }

    async fn import(self: Arc<Self>, run: &mut ImportRun) -> Result<(), Error> {
        let opens = self.opens.take().ok_or(Error::ImportedTwice)?;
        let mut copy = Copy {
            run,
            opens,
            base: String::new(),
            kept: Vec::new(),
        };
        let done = match &self.archiving {
            Some(archiving) => {
                super::archive::run(&mut copy, &self.base, &self.admin, archiving).await
            }
            None => copy.backup(&self.base).await,
        };
        done.inspect_err(|why| tracing::error!("physical backup failed: {why}"))
    }

    fn failure(&self) -> Option<String> {
        self.archiving.as_ref().and_then(Archiving::failure)
    }

    async fn open(self: Arc<Self>, path: String, content: Content) -> Result<(), Error> {
        if let Some(why) = self.archiving.as_ref().and_then(|a| a.refuse(&path)) {
            tracing::error!("{why}");
            content.fail(why).await;
            return Ok(());
        }
        // A file of a direct copy is read here, as many at once as Plakar asks.
        if self.base.served.holds(&path) {
            self.base.served.serve(&path, content).await;
            return Ok(());
        }
        // The copy in `import` serves it, in the order of pg_basebackup's stream.
        self.opens
            .hand_over(path, content)
            .await
            .map_err(Error::from)
    }
}
