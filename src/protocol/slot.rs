//! What `Init` leaves for the calls that follow it, in any connector.

use std::sync::{Arc, Mutex};

use tonic::Status;

/// The state of one initialised connector, shared by its concurrent calls.
#[derive(Debug)]
pub struct Slot<T> {
    current: Mutex<Option<Arc<T>>>,
}

impl<T> Default for Slot<T> {
    fn default() -> Self {
        Slot {
            current: Mutex::new(None),
        }
    }
}

impl<T> Slot<T> {
    /// Keeps what `Init` prepared.
    pub fn set(&self, value: T) {
        *self.current.lock().expect("not poisoned") = Some(Arc::new(value));
    }

    /// What `Init` prepared, or the error Plakar gets when it was not called.
    pub fn get(&self) -> Result<Arc<T>, Status> {
        self.current
            .lock()
            .expect("not poisoned")
            .clone()
            .ok_or_else(|| Status::failed_precondition("the connector was not initialised"))
    }

    /// Forgets it (`Close`); calls still running keep their own reference.
    pub fn clear(&self) {
        self.current.lock().expect("not poisoned").take();
    }
}
