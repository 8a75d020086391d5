//! `Open` calls served by `Import` itself, for a source whose content is a
//! stream read once, in its own order (pg_basebackup's tar, the WAL): each
//! `Open` is handed over to the import, which serves the record it has just
//! announced, and fails an `Open` of any other.

use std::sync::Mutex;

use tokio::sync::mpsc;

use super::source::{Content, Ended, ImportRun};

/// An `Open` call waiting for its record's bytes.
struct OpenCall {
    path: String,
    content: Content,
}

/// An `Open` that came after the import that serves it had ended.
#[derive(Debug, thiserror::Error)]
#[error("{path} was asked for after the backup's stream was read to its end")]
pub struct ImportOver {
    pub path: String,
}

/// Both ends, which the source keeps from `Init` on.
pub struct OpenQueue {
    tx: mpsc::Sender<OpenCall>,
    rx: Mutex<Option<mpsc::Receiver<OpenCall>>>,
}

impl Default for OpenQueue {
    fn default() -> Self {
        let (tx, rx) = mpsc::channel(4);
        OpenQueue {
            tx,
            rx: Mutex::new(Some(rx)),
        }
    }
}

impl OpenQueue {
    /// Hands an `Open` call over to the import; refused once the import is over.
    pub async fn hand_over(&self, path: String, content: Content) -> Result<(), ImportOver> {
        self.tx
            .send(OpenCall { path, content })
            .await
            .map_err(|refused| ImportOver {
                path: refused.0.path,
            })
    }

    /// The import's end; None once an import has taken it.
    pub fn take(&self) -> Option<OpenCalls> {
        self.rx.lock().expect("not poisoned").take().map(OpenCalls)
    }
}

/// The import's end: the `Open` calls, in the order Plakar makes them.
pub struct OpenCalls(mpsc::Receiver<OpenCall>);

impl OpenCalls {
    /// Waits until Plakar opens `path`, the record just announced (None when
    /// it stores it unread). An `Open` of another record fails with the words
    /// `out_of_order` gives for its path.
    pub async fn opened(
        &mut self,
        run: &mut ImportRun,
        path: &str,
        out_of_order: impl Fn(&str) -> String,
    ) -> Result<Option<Content>, Ended> {
        loop {
            let call = match run.unless_stored(path, self.0.recv()).await? {
                None => return Ok(None),
                Some(None) => return Err(Ended::Import),
                Some(Some(call)) => call,
            };
            if call.path == path {
                return Ok(Some(call.content));
            }
            call.content.fail(out_of_order(&call.path)).await;
        }
    }
}
