//! Fan-out: encode once, deliver to every viewer.
//!
//! Encoded frames go into one bounded ring (a tokio broadcast channel). Each
//! viewer reads at its own pace through a [`ViewerFeed`]. A viewer that
//! falls a whole ring behind does not slow anyone down: it loses frames, and
//! then skips until the next keyframe (asking for one), because P-frames
//! after a gap would only decode as garbage.
//!
//! Each frame carries its temporal layer; a viewer whose own bandwidth
//! estimate is well below the encoder's target gets only the base layer
//! (`media::rate::viewer_max_layer`): upper-layer frames are non-reference,
//! so skipping them needs no keyframe and every frame it gets decodes.
//!
//! The fan-out is also the way back to the encoder: viewers ask for
//! keyframes (each at most once a second, `media::rate`) and report their
//! bandwidth estimates here, and the encoder thread reads the requests and
//! the fresh estimates.
//!
//! The fan-out carries the one [`ViewerCount`] (written by the signaling
//! hub): [`Fanout::viewer_count`] is what the encoder gate reads. It also
//! carries the viewers' [`SendCounters`] (`/metrics`), since every viewer's
//! send task already holds it.
//!
//! Only the [`Fanout`] holds the channel's sender; feeds hold the shared
//! state without it. [`Fanout::close`] (the pipeline ending for good) drops
//! the sender, so every feed's `next` returns [`FeedClosed`] and no viewer
//! sits on a silent track.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::broadcast;

use super::counters::SendCounters;
use super::encoder::EncodedFrame;
use super::rate::{viewer_max_layer, KeyframeLimiter, ESTIMATE_FRESH};
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
    /// The stream's rate, bits per second, that viewers' layers are
    /// chosen against (0: not encoding yet; `rate::StreamRate`).
    stream_rate: AtomicU64,
    /// Each viewer's latest bandwidth estimate, bits per second, and when.
    estimates: Mutex<HashMap<u64, (u64, Instant)>>,
    /// Viewers holding a slot in the room (the hub writes it).
    viewers: ViewerCount,
    /// Frames viewers lost by falling a whole ring behind, summed (`/metrics`).
    dropped_lagged: AtomicU64,
    /// Frames viewers skipped while waiting for a keyframe, summed.
    dropped_waiting: AtomicU64,
    /// What the viewers' send tasks handed to their tracks (`/metrics`).
    sent: SendCounters,
}

/// Frames not sent to viewers since the start, by cause, summed over viewers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FanoutDrops {
    /// Lost by a viewer a whole ring behind.
    pub lagged: u64,
    /// Skipped while the viewer waited for a keyframe (joining or after a loss).
    pub waiting_for_keyframe: u64,
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
                stream_rate: AtomicU64::new(0),
                estimates: Mutex::new(HashMap::new()),
                viewers: ViewerCount::new(),
                dropped_lagged: AtomicU64::new(0),
                dropped_waiting: AtomicU64::new(0),
                sent: SendCounters::default(),
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

    /// The stream's rate now: the encoder's target or what it wrote,
    /// whichever is higher (the worker calls this per frame); viewers well
    /// below it get the base layer only.
    pub fn set_stream_rate(&self, bits_per_second: u64) {
        self.shared.stream_rate.store(bits_per_second, Ordering::Relaxed);
    }

    /// The viewers' bandwidth estimates reported within [`ESTIMATE_FRESH`]
    /// of `now` (the input of `rate::encoder_target`).
    pub fn fresh_estimates(&self, now: Instant) -> Vec<u64> {
        let estimates = self.shared.estimates.lock().unwrap_or_else(|p| p.into_inner());
        estimates
            .values()
            .filter(|(_, at)| now.saturating_duration_since(*at) < ESTIMATE_FRESH)
            .map(|(bps, _)| *bps)
            .collect()
    }

    /// Frames not sent to viewers since the start, by cause.
    pub fn drops(&self) -> FanoutDrops {
        FanoutDrops {
            lagged: self.shared.dropped_lagged.load(Ordering::Relaxed),
            waiting_for_keyframe: self.shared.dropped_waiting.load(Ordering::Relaxed),
        }
    }

    /// What the viewers' send tasks count: bytes handed to their tracks and
    /// each frame's capture-to-send time.
    pub fn sent(&self) -> &SendCounters {
        &self.shared.sent
    }

    /// A new viewer's feed. Its first frame will be a keyframe.
    pub fn subscribe(&self) -> Result<ViewerFeed, FeedClosed> {
        let receiver = self.shared.sender().as_ref().ok_or(FeedClosed)?.subscribe();
        let id = self.shared.next_viewer.fetch_add(1, Ordering::Relaxed);
        let mut feed = ViewerFeed {
            id,
            receiver,
            shared: self.shared.clone(),
            waiting_for_keyframe: true,
            dropped: 0,
            keyframes: KeyframeLimiter::default(),
            max_layer: test_layer_cap(),
            layer_skipped: 0,
        };
        feed.request_keyframe();
        Ok(feed)
    }
}

/// Test hook (debug builds only): `LOOKOUT_TEST_MAX_LAYER=0` in the
/// environment gives every viewer the base layer only, as a weak link would
/// (`tests/browser/layers.test.mjs`).
#[cfg(debug_assertions)]
fn test_layer_cap() -> u8 {
    std::env::var("LOOKOUT_TEST_MAX_LAYER").ok().and_then(|v| v.parse().ok()).unwrap_or(1)
}

#[cfg(not(debug_assertions))]
fn test_layer_cap() -> u8 {
    1
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
    /// This viewer's keyframe requests: at most one a second.
    keyframes: KeyframeLimiter,
    /// The highest temporal layer this viewer gets (0: base only).
    max_layer: u8,
    layer_skipped: u64,
}

impl ViewerFeed {
    /// The next frame this viewer should send; skips to a keyframe after a gap.
    pub async fn next(&mut self) -> Result<Arc<EncodedFrame>, FeedClosed> {
        loop {
            // A request kept back by the limit goes once its second is over.
            if self.keyframes.poll(Instant::now()) {
                self.shared.request_keyframe();
            }
            match self.receiver.recv().await {
                Ok(frame) => {
                    if frame.layer > self.max_layer {
                        // Non-reference: nothing this viewer gets needs it.
                        self.layer_skipped += 1;
                        continue;
                    }
                    if self.waiting_for_keyframe && !frame.keyframe {
                        self.dropped += 1;
                        self.shared.dropped_waiting.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    self.waiting_for_keyframe = false;
                    return Ok(frame);
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    self.dropped += missed;
                    self.shared.dropped_lagged.fetch_add(missed, Ordering::Relaxed);
                    self.waiting_for_keyframe = true;
                    self.request_keyframe();
                }
                Err(broadcast::error::RecvError::Closed) => return Err(FeedClosed),
            }
        }
    }

    /// Frames this viewer has not been sent (lag, or waiting for a keyframe).
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Reports this viewer's bandwidth estimate to the encoder, and picks
    /// the layers this viewer gets from it.
    pub fn report_estimate(&mut self, bits_per_second: u64) {
        let mut estimates = self.shared.estimates.lock().unwrap_or_else(|p| p.into_inner());
        estimates.insert(self.id, (bits_per_second, Instant::now()));
        drop(estimates);
        let stream_rate = self.shared.stream_rate.load(Ordering::Relaxed);
        if stream_rate > 0 {
            let layer = viewer_max_layer(self.max_layer, bits_per_second, stream_rate).min(test_layer_cap());
            if layer != self.max_layer {
                tracing::debug!(
                    viewer = self.id,
                    layer,
                    estimate = bits_per_second,
                    stream_rate,
                    "viewer layers"
                );
                self.max_layer = layer;
            }
        }
    }

    /// The highest temporal layer this viewer gets (0: the base layer only).
    pub fn max_layer(&self) -> u8 {
        self.max_layer
    }

    /// Upper-layer frames this viewer went without.
    pub fn layer_skipped(&self) -> u64 {
        self.layer_skipped
    }

    /// Asks for a keyframe (the viewer lost a picture: PLI or FIR; or it
    /// lagged). At most one a second reaches the encoder; a request within
    /// the second is kept and goes when it is over.
    pub fn request_keyframe(&mut self) {
        if self.keyframes.request(Instant::now()) {
            self.shared.request_keyframe();
        }
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

    fn layered(sequence: u64, keyframe: bool, layer: u8) -> EncodedFrame {
        EncodedFrame { layer, ..frame(sequence, keyframe) }
    }

    fn frame(sequence: u64, keyframe: bool) -> EncodedFrame {
        EncodedFrame {
            data: bytes::Bytes::from(vec![0; 10]),
            keyframe,
            captured_at: SystemTime::now(),
            captured_mono: std::time::Instant::now(),
            sequence,
            layer: 0,
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
        // Past the second in which joining asked for a keyframe (one a second per viewer).
        tokio::time::sleep(Duration::from_millis(1050)).await;
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
    async fn fresh_estimates_count_and_leave_with_the_viewer() {
        let fanout = Fanout::new();
        let mut a = fanout.subscribe().unwrap();
        let mut b = fanout.subscribe().unwrap();
        assert!(fanout.fresh_estimates(Instant::now()).is_empty());
        a.report_estimate(3_000_000);
        b.report_estimate(800_000);
        let mut fresh = fanout.fresh_estimates(Instant::now());
        fresh.sort_unstable();
        assert_eq!(fresh, [800_000, 3_000_000]);
        // Estimates that stopped coming no longer count.
        assert!(fanout.fresh_estimates(Instant::now() + ESTIMATE_FRESH).is_empty());
        drop(b);
        assert_eq!(fanout.fresh_estimates(Instant::now()), [3_000_000]);
        assert_eq!(fanout.streaming_count(), 1);
    }

    #[tokio::test]
    async fn a_weak_viewer_gets_the_base_layer_while_the_others_get_every_frame() {
        let fanout = Fanout::new();
        let mut strong = fanout.subscribe().unwrap();
        let mut weak = fanout.subscribe().unwrap();
        fanout.take_keyframe_request();
        fanout.set_stream_rate(2_500_000);
        strong.report_estimate(3_000_000);
        weak.report_estimate(600_000);
        assert_eq!((strong.max_layer(), weak.max_layer()), (1, 0));
        for n in 0..8 {
            fanout.publish(layered(n, n == 0, (n % 2) as u8));
        }
        for n in 0..8 {
            assert_eq!(strong.next().await.unwrap().sequence, n);
        }
        for n in [0, 2, 4, 6] {
            assert_eq!(weak.next().await.unwrap().sequence, n, "base layer only, no keyframe asked");
        }
        assert_eq!(weak.layer_skipped(), 3);
        assert_eq!(weak.dropped(), 0);
        assert!(!fanout.take_keyframe_request(), "going down a layer costs nobody a keyframe");
        // Its link recovers: every frame again, at once (7 still queued: it
        // needs only 6, which this viewer has).
        weak.report_estimate(2_400_000);
        fanout.publish(layered(8, false, 0));
        fanout.publish(layered(9, false, 1));
        assert_eq!(weak.next().await.unwrap().sequence, 7);
        assert_eq!(weak.next().await.unwrap().sequence, 8);
        assert_eq!(weak.next().await.unwrap().sequence, 9);
        assert!(!fanout.take_keyframe_request());
    }

    #[tokio::test]
    async fn a_viewer_gets_one_keyframe_request_a_second_through() {
        let fanout = Fanout::new();
        let mut feed = fanout.subscribe().unwrap();
        assert!(fanout.take_keyframe_request(), "joining asks for one");
        // A burst of PLIs right after joining: held back, not passed on.
        for _ in 0..5 {
            feed.request_keyframe();
        }
        assert!(!fanout.take_keyframe_request());
        // Another viewer is not limited by this one.
        let mut other = fanout.subscribe().unwrap();
        assert!(fanout.take_keyframe_request());
        other.request_keyframe();
        assert!(!fanout.take_keyframe_request());
        // The kept request goes with the first frame read after the second.
        tokio::time::sleep(Duration::from_millis(1050)).await;
        fanout.publish(frame(0, true));
        feed.next().await.unwrap();
        assert!(fanout.take_keyframe_request(), "the kept request went after 1 s");
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
