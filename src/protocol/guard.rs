//! A panic inside a connector's call becomes the call's error, so that the
//! user reads "internal error: …, please report it" in Plakar's output
//! instead of Plakar's bare "context canceled" when the task vanishes.

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;

use futures::FutureExt;

/// A panic caught in a connector's call, with its message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("internal error: {message}, please report it")]
pub struct Panicked {
    pub message: String,
}

impl Panicked {
    fn from_payload(payload: &(dyn Any + Send)) -> Panicked {
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".to_string());
        Panicked { message }
    }
}

/// Runs `work`, turning a panic into `Err`.
pub async fn guarded<T>(work: impl Future<Output = T>) -> Result<T, Panicked> {
    AssertUnwindSafe(work)
        .catch_unwind()
        .await
        .map_err(|payload| Panicked::from_payload(&*payload))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panic_becomes_an_internal_error_naming_its_message() {
        let caught = guarded(async { panic!("index out of bounds") }).await;
        assert_eq!(
            caught.unwrap_err().to_string(),
            "internal error: index out of bounds, please report it"
        );
        let formatted = guarded(async { panic!("bad value {}", 7) }).await;
        assert_eq!(formatted.unwrap_err().message, "bad value 7");
        assert_eq!(guarded(async { 3 }).await, Ok(3));
    }
}
