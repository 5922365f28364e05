//! Circuit breaking from DestinationRule connectionPool limits.
//!
//! Each request to an HTTP/1.1 upstream needs a connection: with `max_connections` busy it
//! waits as a pending request, and with `max_pending_requests` already waiting it is refused
//! at once (503, overflow). `max_requests` caps requests in flight regardless of connections.

use ferry_model::Limits;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub struct Breaker {
    connections: Option<Arc<Semaphore>>,
    requests: Option<(Arc<Semaphore>, u32)>,
    max_pending: Option<u32>,
    pending: AtomicU32,
}

/// Held for the life of an admitted request; dropping it frees the slots.
pub struct Admission {
    _connection: Option<OwnedSemaphorePermit>,
    _request: Option<OwnedSemaphorePermit>,
}

/// Every connection slot of the cluster is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AtCapacity;

/// Which limit refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overflow {
    MaxRequests(u32),
    MaxPendingRequests(u32),
}

impl std::fmt::Display for Overflow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Overflow::MaxRequests(n) => write!(f, "http2MaxRequests ({n}) reached"),
            Overflow::MaxPendingRequests(n) => write!(f, "http1MaxPendingRequests ({n}) reached"),
        }
    }
}

impl Breaker {
    pub fn new(limits: &Limits) -> Self {
        let semaphore = |n: Option<u32>| n.map(|n| Arc::new(Semaphore::new(n as usize)));
        Breaker {
            connections: semaphore(limits.max_connections),
            requests: limits
                .max_requests
                .map(|n| (Arc::new(Semaphore::new(n as usize)), n)),
            max_pending: limits.max_pending_requests,
            pending: AtomicU32::new(0),
        }
    }

    /// A connection slot for a relayed TCP connection, now or never: over `maxConnections`
    /// a TCP connection is refused (overflow), as Envoy's TCP proxy does, rather than queued.
    pub fn connection_slot_now(&self) -> Result<Option<OwnedSemaphorePermit>, AtCapacity> {
        match &self.connections {
            None => Ok(None),
            Some(slots) => slots
                .clone()
                .try_acquire_owned()
                .map(Some)
                .map_err(|_| AtCapacity),
        }
    }

    /// Admits a request, waiting for a connection slot if the pending queue has room.
    pub async fn admit(&self) -> Result<Admission, Overflow> {
        let request = match &self.requests {
            Some((slots, limit)) => Some(
                slots
                    .clone()
                    .try_acquire_owned()
                    .map_err(|_| Overflow::MaxRequests(*limit))?,
            ),
            None => None,
        };
        let connection = match &self.connections {
            Some(s) => Some(self.connection_slot(s).await?),
            None => None,
        };
        Ok(Admission {
            _connection: connection,
            _request: request,
        })
    }

    async fn connection_slot(
        &self,
        slots: &Arc<Semaphore>,
    ) -> Result<OwnedSemaphorePermit, Overflow> {
        if let Ok(permit) = slots.clone().try_acquire_owned() {
            return Ok(permit);
        }
        let limit = self.max_pending.unwrap_or(u32::MAX);
        let queued = self.pending.fetch_add(1, Ordering::AcqRel);
        let _leave = PendingGuard(&self.pending);
        if queued >= limit {
            return Err(Overflow::MaxPendingRequests(limit));
        }
        slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Overflow::MaxPendingRequests(limit))
    }
}

struct PendingGuard<'a>(&'a AtomicU32);

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_connection_one_pending_then_overflow() {
        let breaker = Arc::new(Breaker::new(&Limits {
            max_connections: Some(1),
            max_pending_requests: Some(1),
            ..Limits::default()
        }));
        let first = breaker.admit().await.expect("first gets the connection");
        let waiting = tokio::spawn({
            let breaker = breaker.clone();
            async move { breaker.admit().await.is_ok() }
        });
        tokio::task::yield_now().await;
        while breaker.pending.load(Ordering::Acquire) == 0 {
            tokio::task::yield_now().await;
        }
        assert_eq!(
            breaker.admit().await.err(),
            Some(Overflow::MaxPendingRequests(1))
        );
        drop(first);
        assert!(
            waiting.await.unwrap(),
            "the pending request proceeds once the slot frees"
        );
    }
}
