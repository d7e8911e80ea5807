//! The one viewer count.
//!
//! A viewer holds a slot from the moment it joins the camera's room until it
//! leaves it (a `leave`, its WebSocket closing, or the hub dropping it; a
//! killed browser's socket closes at once, a vanished one within the
//! signaling keep-alive). A WHEP viewer (`crate::whep`) holds one from its
//! `POST` until its session ends (`DELETE`, or its connection ends); the hub
//! keeps those slots too (`Hub::reserve_whep`). The signaling hub is the
//! only writer: it admits at most `--max-viewers` page and WHEP viewers
//! together against this count and publishes it after every change.
//! Everything else reads the same number: the media worker encodes only
//! while it is above zero, and `/api/info` reports it (`viewers`). How many viewers actually receive frames right now (their
//! connection is up and subscribed to the fan-out) is a different figure,
//! reported as `camera.streaming`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// How a viewer came: the camera's page through the signaling room, or
/// WHEP (`crate::whep`). The `transport` label of `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    Page,
    Whep,
}

impl Transport {
    /// Every transport, in the order `/metrics` lists them.
    pub const ALL: [Transport; 2] = [Transport::Page, Transport::Whep];

    /// This transport's position in [`Transport::ALL`] (for per-transport arrays).
    pub fn index(self) -> usize {
        self as usize
    }

    /// The `transport` label's value.
    pub fn label(self) -> &'static str {
        match self {
            Transport::Page => "page",
            Transport::Whep => "whep",
        }
    }
}

/// Viewers holding a slot in the camera's room. Cheap to clone; clones share.
#[derive(Debug, Clone, Default)]
pub struct ViewerCount(Arc<AtomicUsize>);

impl ViewerCount {
    pub fn new() -> ViewerCount {
        ViewerCount::default()
    }

    pub fn get(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }

    /// Publishes the count (the hub after a join or a leave; tests that
    /// drive the pipeline without a hub).
    pub fn set(&self, viewers: usize) {
        self.0.store(viewers, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::{Transport, ViewerCount};

    #[test]
    fn each_transport_indexes_its_place_in_all() {
        for (position, transport) in Transport::ALL.into_iter().enumerate() {
            assert_eq!(transport.index(), position, "{transport:?}");
        }
    }

    #[test]
    fn clones_share_one_count() {
        let count = ViewerCount::new();
        let reader = count.clone();
        assert_eq!(reader.get(), 0);
        count.set(3);
        assert_eq!(reader.get(), 3);
    }
}
