//! Which client connections a proxy takes, and which it lets go first under pressure.
//!
//! Every accepted connection holds a [`Slot`] until it closes. A slot is idle while no request
//! is being served on it (a TLS handshake, a head being read, a keep-alive wait) and busy
//! while one is. At the connection limit, or past the memory threshold, a new connection
//! takes the place of the connection idle longest: a flood of connections that never send a
//! request (or send it a byte at a time) cannot keep a working client out, as Envoy's overload
//! manager reduces idle timeouts under pressure. When nothing is idle the new connection is
//! closed and counted (`ferry_downstream_connections_refused_total`).
//!
//! The cost on the request path is two atomic operations per request: the idle queue is
//! touched when a connection is accepted, when it turns idle while not queued, and under
//! pressure.

use prometheus::{IntCounter, IntCounterVec, IntGauge};
use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use tokio::task::AbortHandle;

use crate::limits::ConnectionLimits;

const IDLE: u8 = 0;
const BUSY: u8 = 1;
const REAPED: u8 = 2;

/// Why a new connection was closed at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The proxy holds `max_connections` busy connections.
    MaxConnections,
    /// The client's address holds `max_connections_per_client`.
    PerClient,
    /// Past the memory threshold with nothing idle to close.
    Overload,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::MaxConnections => "max_connections",
            Refusal::PerClient => "per_client",
            Refusal::Overload => "overload",
        }
    }

    pub const ALL: [Refusal; 3] = [
        Refusal::MaxConnections,
        Refusal::PerClient,
        Refusal::Overload,
    ];
}

/// The counters admission keeps (registered by crate::metrics).
#[derive(Clone)]
pub struct AdmissionMetrics {
    pub refused: IntCounterVec,
    pub reaped: IntCounter,
    pub overloaded: IntGauge,
}

pub struct Admission {
    limits: ConnectionLimits,
    open: AtomicUsize,
    per_client: Mutex<HashMap<IpAddr, usize>>,
    /// Connections that turned idle, oldest first; entries of connections that closed or
    /// turned busy since are skipped (and compacted away).
    idle: Mutex<VecDeque<Weak<Slot>>>,
    overloaded: AtomicBool,
    metrics: AdmissionMetrics,
}

/// One admitted connection's place.
pub struct Slot {
    state: AtomicU8,
    /// In the idle queue (at most once).
    queued: AtomicBool,
    /// Ends the connection's task when it is reaped.
    abort: OnceLock<AbortHandle>,
    /// The client counted against `max_connections_per_client`: known at accept, or once a
    /// PROXY protocol header named it (`claim_client`).
    client: OnceLock<IpAddr>,
    admission: Arc<Admission>,
}

impl Admission {
    pub fn new(limits: ConnectionLimits, metrics: AdmissionMetrics) -> Arc<Self> {
        for refusal in Refusal::ALL {
            metrics.refused.with_label_values(&[refusal.as_str()]);
        }
        Arc::new(Admission {
            limits,
            open: AtomicUsize::new(0),
            per_client: Mutex::new(HashMap::new()),
            idle: Mutex::new(VecDeque::new()),
            overloaded: AtomicBool::new(false),
            metrics,
        })
    }

    pub fn limits(&self) -> ConnectionLimits {
        self.limits
    }

    /// Connections held now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Past the memory threshold: keep-alive connections close after their response.
    pub fn under_pressure(&self) -> bool {
        self.overloaded.load(Ordering::Relaxed)
    }

    /// A place for a connection from `client`, or why there is none (counted).
    pub fn admit(self: &Arc<Self>, client: Option<IpAddr>) -> Result<Arc<Slot>, Refusal> {
        let result = self.try_admit(client);
        if let Err(refusal) = result {
            self.metrics
                .refused
                .with_label_values(&[refusal.as_str()])
                .inc();
        }
        result
    }

    fn try_admit(self: &Arc<Self>, client: Option<IpAddr>) -> Result<Arc<Slot>, Refusal> {
        let counted_client = self.count_client(client)?;
        let full = self.limits.max_connections > 0 && self.open() >= self.limits.max_connections;
        let overloaded = self.under_pressure();
        if (full || overloaded) && !self.reap_one() {
            if let Some(ip) = counted_client {
                self.uncount_client(ip);
            }
            return Err(match overloaded {
                true => Refusal::Overload,
                false => Refusal::MaxConnections,
            });
        }
        self.open.fetch_add(1, Ordering::Relaxed);
        let slot = Arc::new(Slot {
            state: AtomicU8::new(IDLE),
            queued: AtomicBool::new(false),
            abort: OnceLock::new(),
            client: counted_client.map(OnceLock::from).unwrap_or_default(),
            admission: self.clone(),
        });
        self.queue_idle(&slot);
        Ok(slot)
    }

    fn count_client(&self, client: Option<IpAddr>) -> Result<Option<IpAddr>, Refusal> {
        let (max, Some(ip)) = (self.limits.max_connections_per_client, client) else {
            return Ok(None);
        };
        if max == 0 {
            return Ok(None);
        }
        let mut per_client = self.per_client.lock().expect("admission lock");
        let count = per_client.entry(ip).or_default();
        if *count >= max {
            return Err(Refusal::PerClient);
        }
        *count += 1;
        Ok(Some(ip))
    }

    fn uncount_client(&self, ip: IpAddr) {
        let mut per_client = self.per_client.lock().expect("admission lock");
        if let Some(count) = per_client.get_mut(&ip) {
            *count -= 1;
            if *count == 0 {
                per_client.remove(&ip);
            }
        }
    }

    fn queue_idle(&self, slot: &Arc<Slot>) {
        if slot.queued.swap(true, Ordering::AcqRel) {
            return;
        }
        let mut idle = self.idle.lock().expect("admission lock");
        // Entries of closed or busy connections are dropped when the queue outgrows the
        // connections held, so it stays bounded by them.
        if idle.len() > 2 * self.open() + 64 {
            idle.retain(|weak| weak.upgrade().is_some_and(|s| s.is_idle()));
        }
        idle.push_back(Arc::downgrade(slot));
    }

    /// Closes the connection idle longest; false when none is idle.
    pub fn reap_one(&self) -> bool {
        loop {
            let next = self.idle.lock().expect("admission lock").pop_front();
            let Some(weak) = next else {
                return false;
            };
            let Some(slot) = weak.upgrade() else {
                continue;
            };
            slot.queued.store(false, Ordering::Release);
            if slot.reap() {
                self.open.fetch_sub(1, Ordering::Relaxed);
                self.metrics.reaped.inc();
                return true;
            }
        }
    }

    /// Turns load shedding on or off (the memory watch calls this).
    pub fn set_overloaded(&self, overloaded: bool) {
        self.overloaded.store(overloaded, Ordering::Relaxed);
        self.metrics.overloaded.set(i64::from(overloaded));
    }
}

impl Slot {
    /// Where the connection's task can be ended when the slot is reaped.
    pub fn set_abort(&self, abort: AbortHandle) {
        let _ = self.abort.set(abort);
        // Reaped before the handle was set: the reaper found none to abort.
        if self.state.load(Ordering::Acquire) == REAPED {
            if let Some(abort) = self.abort.get() {
                abort.abort();
            }
        }
    }

    fn is_idle(&self) -> bool {
        self.state.load(Ordering::Acquire) == IDLE
    }

    /// A request starts; false when the connection was reaped (it must close).
    pub fn begin(&self) -> bool {
        self.state
            .compare_exchange(IDLE, BUSY, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// The request is done: the connection waits for the next one, reapable again.
    pub fn end(self: &Arc<Self>) {
        if self
            .state
            .compare_exchange(BUSY, IDLE, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
            && !self.queued.load(Ordering::Acquire)
        {
            self.admission.queue_idle(self);
        }
    }

    /// Counts the connection against `client`'s connections once its address is known past
    /// accept (a PROXY protocol header named it; the slot was admitted without one). Refused
    /// (and counted) when that client holds its limit already: the connection must close.
    pub fn claim_client(&self, client: IpAddr) -> Result<(), Refusal> {
        let admission = &self.admission;
        match admission.count_client(Some(client)) {
            Ok(Some(ip)) => {
                if self.client.set(ip).is_err() {
                    admission.uncount_client(ip); // claimed before: counted once only
                }
                Ok(())
            }
            Ok(None) => Ok(()),
            Err(refusal) => {
                admission
                    .metrics
                    .refused
                    .with_label_values(&[refusal.as_str()])
                    .inc();
                Err(refusal)
            }
        }
    }

    /// The proxy is shedding load: keep-alive connections close after their response.
    pub fn shedding(&self) -> bool {
        self.admission.under_pressure()
    }

    fn reap(&self) -> bool {
        let reaped = self
            .state
            .compare_exchange(IDLE, REAPED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if reaped {
            if let Some(abort) = self.abort.get() {
                abort.abort();
            }
        }
        reaped
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if *self.state.get_mut() != REAPED {
            self.admission.open.fetch_sub(1, Ordering::Relaxed);
        }
        if let Some(ip) = self.client.get() {
            self.admission.uncount_client(*ip);
        }
    }
}

pub mod memory;

#[cfg(test)]
mod tests;
