//! The open connections, and which one gives way when the server is full.
//!
//! `server.max_connections` bounds the sockets (and the memory) a server
//! holds, but a bare limit lets one client lock everyone out: a thousand
//! connections opened and left idle (or sending their headers a byte at a
//! time) took every slot, and for the header timeout's 10 s every new
//! connection was closed on accept, a load balancer's `/health` probe
//! included. So a connection that arrives when every slot is taken evicts
//! the one that has been idle longest, no request in flight (kept alive
//! after its answer, or still sending a request's head); only when every
//! open connection has a request in flight is it refused. A busy request is
//! never cut, and an idle kept-alive connection may be closed at any time
//! under HTTP/1.1 (RFC 9112 §9.8), which clients' pools expect and retry.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio_util::sync::CancellationToken;

/// One open connection as the registry sees it.
#[derive(Debug)]
pub(crate) struct Connection {
    /// Requests dispatched on it and not yet answered.
    in_flight: AtomicUsize,
    /// When it last had nothing in flight (opened, or answered), in
    /// nanoseconds since the registry started.
    idle_since_ns: AtomicU64,
    /// Cancelled to close it (gracefully: an idle one closes at once).
    evict: CancellationToken,
    epoch: Instant,
}

impl Connection {
    /// Cancelled when this connection is chosen to give way.
    pub(crate) fn evicted(&self) -> &CancellationToken {
        &self.evict
    }

    /// Marks a request in flight until the guard drops (when its answer is
    /// ready, or the request is dropped).
    pub(crate) fn request(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(self.clone())
    }

    fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }
}

/// A request in flight on a connection (see [`Connection::request`]).
pub(crate) struct InFlight(Arc<Connection>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.idle_since_ns.store(self.0.now_ns(), Ordering::SeqCst);
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Every open connection, by an id of its own.
#[derive(Debug)]
pub(crate) struct Registry {
    open: Mutex<HashMap<u64, Arc<Connection>>>,
    next: AtomicU64,
    epoch: Instant,
}

impl Default for Registry {
    fn default() -> Self {
        Self { open: Mutex::default(), next: AtomicU64::new(0), epoch: Instant::now() }
    }
}

impl Registry {
    /// Registers a new connection; it leaves the registry when the
    /// returned handle drops.
    pub(crate) fn open(self: &Arc<Self>) -> Registered {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let connection = Arc::new(Connection {
            in_flight: AtomicUsize::new(0),
            idle_since_ns: AtomicU64::new(self.epoch.elapsed().as_nanos() as u64),
            evict: CancellationToken::new(),
            epoch: self.epoch,
        });
        self.open.lock().unwrap_or_else(|e| e.into_inner()).insert(id, connection.clone());
        Registered { registry: self.clone(), id, connection }
    }

    /// Asks the connection idle the longest (nothing in flight, not already
    /// asked) to close; `false` if every open connection is busy.
    pub(crate) fn evict_idlest(&self) -> bool {
        let open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let idlest = open
            .values()
            .filter(|c| c.in_flight.load(Ordering::SeqCst) == 0 && !c.evict.is_cancelled())
            .min_by_key(|c| c.idle_since_ns.load(Ordering::SeqCst));
        match idlest {
            Some(connection) => {
                connection.evict.cancel();
                true
            }
            None => false,
        }
    }
}

/// A connection's place in the registry, given up on drop.
pub(crate) struct Registered {
    registry: Arc<Registry>,
    id: u64,
    connection: Arc<Connection>,
}

impl Registered {
    pub(crate) fn connection(&self) -> &Arc<Connection> {
        &self.connection
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.registry.open.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_idlest_connection_without_a_request_in_flight_gives_way() {
        let registry = Arc::new(Registry::default());
        let pause = || std::thread::sleep(std::time::Duration::from_millis(2));
        let first = registry.open();
        let second = registry.open();
        let third = registry.open();
        pause();
        // The first is busy; the second answered just now; the third has been
        // idle since it opened, before the second's answer.
        let busy = first.connection().request();
        drop(second.connection().request());
        pause();
        assert!(registry.evict_idlest());
        assert!(third.connection().evicted().is_cancelled(), "the idlest gives way");
        assert!(!second.connection().evicted().is_cancelled());
        assert!(registry.evict_idlest());
        assert!(second.connection().evicted().is_cancelled(), "then the next idlest");
        assert!(!registry.evict_idlest(), "the busy one is never chosen");
        assert!(!first.connection().evicted().is_cancelled());
        drop(busy);
        drop(third);
        pause();
        assert!(registry.evict_idlest(), "idle again once answered");
        assert_eq!(registry.open.lock().unwrap().len(), 2, "a dropped handle leaves the registry");
    }
}
