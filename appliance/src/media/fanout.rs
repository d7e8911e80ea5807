//! Fan-out: encode once, deliver to every viewer.
//!
//! Encoded frames go into one bounded ring (a tokio broadcast channel). Each
//! viewer reads at its own pace through a [`ViewerFeed`]. A viewer that
//! falls a whole ring behind does not slow anyone down: it loses frames, and
//! then skips until the next keyframe (asking for one), because P-frames
//! after a gap would only decode as garbage.
//!
//! The fan-out is also the way back to the encoder: viewers ask for
//! keyframes and report their bandwidth estimates here, and the encoder
//! thread reads the requests and the lowest estimate.
//!
//! The fan-out carries the one [`ViewerCount`] (written by the signaling
//! hub): [`Fanout::viewer_count`] is what the encoder gate reads.
//!
//! Only the [`Fanout`] holds the channel's sender; feeds hold the shared
//! state without it. [`Fanout::close`] (the pipeline ending for good) drops
//! the sender, so every feed's `next` returns [`FeedClosed`] and no viewer
//! sits on a silent track.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::broadcast;

use super::encoder::EncodedFrame;
use crate::viewers::ViewerCount;

/// Frames held for slow viewers (one second at 30 fps).
pub const RING_FRAMES: usize = 30;

/// Shared between the encoder thread and the viewers.
#[derive(Clone)]
pub struct Fanout {
    shared: Arc<Shared>,
}

struct Shared {
    /// `None` once closed. Feeds never hold a clone of it.
    sender: Mutex<Option<broadcast::Sender<Arc<EncodedFrame>>>>,
    keyframe_requested: AtomicBool,
    next_viewer: AtomicU64,
    /// Each viewer's latest bandwidth estimate, bits per second.
    estimates: Mutex<HashMap<u64, u64>>,
    /// Viewers holding a slot in the room (the hub writes it).
    viewers: ViewerCount,
}

/// Why a feed ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the media pipeline stopped")]
pub struct FeedClosed;

impl Default for Fanout {
    fn default() -> Self {
        Fanout::new()
    }
}

impl Fanout {
    pub fn new() -> Fanout {
        let (sender, _) = broadcast::channel(RING_FRAMES);
        Fanout {
            shared: Arc::new(Shared {
                sender: Mutex::new(Some(sender)),
                keyframe_requested: AtomicBool::new(false),
                next_viewer: AtomicU64::new(1),
                estimates: Mutex::new(HashMap::new()),
                viewers: ViewerCount::new(),
            }),
        }
    }

    /// Publishes a frame to every viewer.
    pub fn publish(&self, frame: EncodedFrame) {
        if let Some(sender) = self.shared.sender().as_ref() {
            // No receivers is fine: nobody is watching.
            let _ = sender.send(Arc::new(frame));
        }
    }

    /// The one viewer count (see [`crate::viewers`]): viewers holding a
    /// slot in the room, whether or not their connection is up yet. The
    /// encoder runs while it is above zero. 0 once closed.
    pub fn viewer_count(&self) -> usize {
        if self.is_closed() {
            0
        } else {
            self.shared.viewers.get()
        }
    }

    /// The handle the signaling hub writes the viewer count through.
    pub fn viewers(&self) -> ViewerCount {
        self.shared.viewers.clone()
    }

    /// Viewers whose connection is up and subscribed to the stream now
    /// (`camera.streaming` in `/api/info`; 0 once closed).
    pub fn streaming_count(&self) -> usize {
        self.shared.sender().as_ref().map_or(0, broadcast::Sender::receiver_count)
    }

    /// Ends the stream for good: every feed's `next` returns [`FeedClosed`]
    /// once it has read what is queued, and `subscribe` fails.
    pub fn close(&self) {
        self.shared.sender().take();
    }

    /// Whether [`Fanout::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.shared.sender().is_none()
    }

    /// Asks the encoder for a keyframe (requests coalesce until it makes one).
    pub fn request_keyframe(&self) {
        self.shared.keyframe_requested.store(true, Ordering::Relaxed);
    }

    /// Takes a pending keyframe request (the encoder calls this per frame).
    pub fn take_keyframe_request(&self) -> bool {
        self.shared.keyframe_requested.swap(false, Ordering::Relaxed)
    }

    /// The lowest bandwidth estimate among viewers that reported one.
    pub fn lowest_estimate(&self) -> Option<u64> {
        self.shared.estimates.lock().unwrap_or_else(|p| p.into_inner()).values().copied().min()
    }

    /// A new viewer's feed. Its first frame will be a keyframe.
    pub fn subscribe(&self) -> Result<ViewerFeed, FeedClosed> {
        let receiver = self.shared.sender().as_ref().ok_or(FeedClosed)?.subscribe();
        let id = self.shared.next_viewer.fetch_add(1, Ordering::Relaxed);
        let feed =
            ViewerFeed { id, receiver, shared: self.shared.clone(), waiting_for_keyframe: true, dropped: 0 };
        self.request_keyframe();
        Ok(feed)
    }
}

impl Shared {
    fn sender(&self) -> std::sync::MutexGuard<'_, Option<broadcast::Sender<Arc<EncodedFrame>>>> {
        self.sender.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn request_keyframe(&self) {
        self.keyframe_requested.store(true, Ordering::Relaxed);
    }
}

/// One viewer's view of the stream.
pub struct ViewerFeed {
    id: u64,
    receiver: broadcast::Receiver<Arc<EncodedFrame>>,
    /// The shared state, without the sender: a feed never keeps the channel open.
    shared: Arc<Shared>,
    waiting_for_keyframe: bool,
    dropped: u64,
}

impl ViewerFeed {
    /// The next frame this viewer should send; skips to a keyframe after a gap.
    pub async fn next(&mut self) -> Result<Arc<EncodedFrame>, FeedClosed> {
        loop {
            match self.receiver.recv().await {
                Ok(frame) => {
                    if self.waiting_for_keyframe && !frame.keyframe {
                        self.dropped += 1;
                        continue;
                    }
                    self.waiting_for_keyframe = false;
                    return Ok(frame);
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    self.dropped += missed;
                    self.waiting_for_keyframe = true;
                    self.shared.request_keyframe();
                }
                Err(broadcast::error::RecvError::Closed) => return Err(FeedClosed),
            }
        }
    }

    /// Frames this viewer has not been sent (lag, or waiting for a keyframe).
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Reports this viewer's bandwidth estimate to the encoder.
    pub fn report_estimate(&self, bits_per_second: u64) {
        self.shared.estimates.lock().unwrap_or_else(|p| p.into_inner()).insert(self.id, bits_per_second);
    }

    /// Asks for a keyframe (the viewer lost a picture: PLI or FIR).
    pub fn request_keyframe(&self) {
        self.shared.request_keyframe();
    }
}

impl Drop for ViewerFeed {
    fn drop(&mut self) {
        self.shared.estimates.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime};

    fn frame(sequence: u64, keyframe: bool) -> EncodedFrame {
        EncodedFrame {
            data: bytes::Bytes::from(vec![0; 10]),
            keyframe,
            captured_at: SystemTime::now(),
            sequence,
            duration: Duration::from_millis(33),
        }
    }

    #[tokio::test]
    async fn a_new_viewer_starts_on_a_keyframe_and_asks_for_one() {
        let fanout = Fanout::new();
        let mut feed = fanout.subscribe().unwrap();
        assert!(fanout.take_keyframe_request());
        fanout.publish(frame(0, false));
        fanout.publish(frame(1, true));
        fanout.publish(frame(2, false));
        assert_eq!(feed.next().await.unwrap().sequence, 1);
        assert_eq!(feed.next().await.unwrap().sequence, 2);
        assert_eq!(feed.dropped(), 1);
    }

    #[tokio::test]
    async fn a_slow_viewer_skips_to_the_next_keyframe_without_holding_up_others() {
        let fanout = Fanout::new();
        let mut slow = fanout.subscribe().unwrap();
        let mut fast = fanout.subscribe().unwrap();
        fanout.take_keyframe_request();
        fanout.publish(frame(0, true));
        assert_eq!(fast.next().await.unwrap().sequence, 0);
        assert_eq!(slow.next().await.unwrap().sequence, 0);
        // The fast viewer keeps up with 100 frames; the slow one reads none.
        for n in 1..=100 {
            fanout.publish(frame(n, n == 95));
            assert_eq!(fast.next().await.unwrap().sequence, n);
        }
        // The slow one lost the ring's overflow, asked for a keyframe, and resumes at 95.
        assert_eq!(slow.next().await.unwrap().sequence, 95);
        assert!(fanout.take_keyframe_request());
        assert!(slow.dropped() >= 70);
    }

    #[tokio::test]
    async fn estimates_report_the_lowest_and_leave_with_the_viewer() {
        let fanout = Fanout::new();
        let a = fanout.subscribe().unwrap();
        let b = fanout.subscribe().unwrap();
        assert_eq!(fanout.lowest_estimate(), None);
        a.report_estimate(3_000_000);
        b.report_estimate(800_000);
        assert_eq!(fanout.lowest_estimate(), Some(800_000));
        drop(b);
        assert_eq!(fanout.lowest_estimate(), Some(3_000_000));
        assert_eq!(fanout.streaming_count(), 1);
    }

    #[tokio::test]
    async fn closing_ends_every_feed_even_though_feeds_are_alive() {
        let fanout = Fanout::new();
        let mut a = fanout.subscribe().unwrap();
        let mut b = fanout.subscribe().unwrap();
        fanout.take_keyframe_request();
        fanout.publish(frame(0, true));
        fanout.close();
        // What was queued is still delivered, then the end.
        assert_eq!(a.next().await.unwrap().sequence, 0);
        assert_eq!(a.next().await.unwrap_err(), FeedClosed);
        let ended = tokio::time::timeout(Duration::from_secs(1), b.next()).await.expect("b ends at once");
        assert_eq!(ended.unwrap().sequence, 0);
        assert_eq!(b.next().await.unwrap_err(), FeedClosed);
        assert!(fanout.is_closed());
        assert_eq!(fanout.streaming_count(), 0);
        assert!(fanout.subscribe().is_err(), "no new viewers after the end");
    }
}
