//! A panic inside a connector's call becomes the call's error, so that the
//! user reads "internal error: …, please report it" in Plakar's output
//! instead of Plakar's bare "context canceled" when the task vanishes.

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;

use futures::FutureExt;

/// What the user reads for a panic's payload.
pub fn internal_error(payload: &(dyn Any + Send)) -> String {
    let message = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_string());
    format!("internal error: {message}, please report it")
}

/// Runs `work`, turning a panic into `Err` with [`internal_error`]'s text.
pub async fn guarded<T>(work: impl Future<Output = T>) -> Result<T, String> {
    AssertUnwindSafe(work)
        .catch_unwind()
        .await
        .map_err(|payload| internal_error(&*payload))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panic_becomes_an_internal_error_naming_its_message() {
        let caught = guarded(async { panic!("index out of bounds") }).await;
        assert_eq!(
            caught.unwrap_err(),
            "internal error: index out of bounds, please report it"
        );
        let formatted = guarded(async { panic!("bad value {}", 7) }).await;
        assert!(formatted.unwrap_err().contains("bad value 7"));
        assert_eq!(guarded(async { 3 }).await, Ok(3));
    }
}
