//! `/metrics`: the camera's counters in the Prometheus/OpenMetrics text format
//! (`docs/metrics.md`).
//!
//! Nothing here runs on the media path: one [`Collector`] reads, at scrape
//! time, the counters that exist anyway (`CameraStatus`, the fan-out, the
//! network log's totals, the signaling relay, `/proc/self`) and the few the
//! encoder thread keeps for this alone (`media::counters`). The encoding is
//! `prometheus-client`'s.

use std::fmt;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use crate::http::AppState;
use crate::media::pipeline::StatusHandle;
use crate::netlog::NetworkLog;
use crate::signaling::Relay;
use crate::viewers::Transport;

/// The `Content-Type` of the answer.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The text for one scrape.
pub fn render(state: &AppState) -> Result<String, fmt::Error> {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Scrape {
        relay: state.relay.clone(),
        camera: state.camera.clone(),
        log: state.log.clone(),
        started: state.started,
    }));
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry)?;
    Ok(text)
}

/// What one scrape reads.
struct Scrape {
    relay: Relay,
    camera: Option<StatusHandle>,
    log: NetworkLog,
    started: std::time::Instant,
}

impl fmt::Debug for Scrape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("metrics::Scrape")
    }
}

/// Writes one metric family without labels or with one label per sample.
struct Families<'a, 'b> {
    encoder: &'a mut DescriptorEncoder<'b>,
}

impl Families<'_, '_> {
    fn counter(&mut self, name: &str, help: &str, value: u64) -> fmt::Result {
        let counter = ConstCounter::new(value);
        counter.encode(self.encoder.encode_descriptor(name, help, None, counter.metric_type())?)
    }

    fn counter_f64(&mut self, name: &str, help: &str, value: f64) -> fmt::Result {
        let counter = ConstCounter::new(value);
        counter.encode(self.encoder.encode_descriptor(name, help, None, counter.metric_type())?)
    }

    fn gauge(&mut self, name: &str, help: &str, value: i64) -> fmt::Result {
        let gauge = ConstGauge::new(value);
        gauge.encode(self.encoder.encode_descriptor(name, help, None, gauge.metric_type())?)
    }

    fn labelled_counter(
        &mut self,
        name: &str,
        help: &str,
        label: &str,
        samples: &[(&str, u64)],
    ) -> fmt::Result {
        let mut family = self.encoder.encode_descriptor(
            name,
            help,
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?;
        for (value, count) in samples {
            let labels = [(label, *value)];
            ConstCounter::new(*count).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }

    fn labelled_gauge(
        &mut self,
        name: &str,
        help: &str,
        label: &str,
        samples: &[(&str, i64)],
    ) -> fmt::Result {
        let mut family = self.encoder.encode_descriptor(
            name,
            help,
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for (value, level) in samples {
            let labels = [(label, *value)];
            ConstGauge::new(*level).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

fn gauge_value(n: impl TryInto<i64>) -> i64 {
    n.try_into().unwrap_or(i64::MAX)
}

impl Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let mut out = Families { encoder: &mut encoder };
        let signaling = self.relay.stats();
        out.gauge(
            "lookout_uptime_seconds",
            "Seconds since the server started.",
            gauge_value(self.started.elapsed().as_secs()),
        )?;
        out.gauge(
            "lookout_signaling_connections",
            "Signaling (WebSocket) clients connected now.",
            gauge_value(signaling.clients),
        )?;
        // One count (crate::viewers), split by how the viewer came.
        out.labelled_gauge(
            "lookout_viewers",
            "Viewers holding a slot now, by transport.",
            "transport",
            &[
                (
                    Transport::Page.label(),
                    gauge_value(signaling.viewers.saturating_sub(signaling.whep_viewers)),
                ),
                (Transport::Whep.label(), gauge_value(signaling.whep_viewers)),
            ],
        )?;
        let totals = self.log.totals();
        let refused: Vec<(&str, u64)> = totals.iter().map(|(event, n)| (event.label(), *n)).collect();
        out.labelled_counter(
            "lookout_refused",
            "Connections and attempts refused or closed, by reason (the counts the log summarises).",
            "reason",
            &refused,
        )?;
        if let Some(camera) = &self.camera {
            self.encode_camera(&mut out, camera)?;
        }
        if let Some(process) = ProcessStats::read() {
            out.gauge(
                "process_resident_memory_bytes",
                "Resident memory of the process.",
                gauge_value(process.rss_bytes),
            )?;
            out.counter_f64(
                "process_cpu_seconds",
                "User and system CPU time of the process.",
                process.cpu_seconds,
            )?;
        }
        Ok(())
    }
}

impl Scrape {
    fn encode_camera(&self, out: &mut Families<'_, '_>, camera: &StatusHandle) -> fmt::Result {
        let status = camera.snapshot();
        let counts = camera.counters().counts();
        let drops = camera.fanout().drops();
        let link = camera.fanout().sent().link_counts();
        out.counter(
            "lookout_frames_captured",
            "Frames delivered by the camera source.",
            status.frames_captured,
        )?;
        out.counter(
            "lookout_frames_encoded",
            "Frames encoded to H.264 (only while someone watches).",
            status.frames_encoded,
        )?;
        out.labelled_counter(
            "lookout_frames_dropped",
            "Frames not encoded or not sent to a viewer, by cause (summed over viewers).",
            "cause",
            &[
                ("encode_error", counts.encode_errors),
                ("viewer_lagged", drops.lagged),
                ("waiting_for_keyframe", drops.waiting_for_keyframe),
                ("link_backlog", link.backlog_skipped),
            ],
        )?;
        out.labelled_counter(
            "lookout_retransmissions_dropped",
            "Retransmissions (answers to NACKs) not sent, by cause: late (behind 300 ms of others) or duplicate (a copy queued or on its way); summed over viewers.",
            "cause",
            &[("late", link.retransmissions_late), ("duplicate", link.retransmissions_duplicate)],
        )?;
        out.counter(
            "lookout_link_overuses",
            "Feedback reports after which a viewer's link was overused (its queue growing, so its estimate fell); summed over viewers.",
            link.overuses,
        )?;
        out.labelled_counter(
            "lookout_keyframes",
            "Keyframes encoded, by cause: asked for (a viewer joined, a PLI, a loss, a restart) or the encoder's own period.",
            "cause",
            &[("requested", counts.keyframes_requested), ("encoder", counts.keyframes_encoder)],
        )?;
        let histogram = camera.counters().encode_seconds();
        histogram.encode(out.encoder.encode_descriptor(
            "lookout_encode_seconds",
            "Time per H.264 encode call.",
            None,
            histogram.metric_type(),
        )?)?;
        out.counter(
            "lookout_encoded_bytes",
            "Bytes of H.264 handed to the viewers' fan-out (once, however many watch).",
            counts.encoded_bytes,
        )?;
        let sent = camera.fanout().sent();
        let sent_bytes: Vec<(&str, u64)> = sent.sent_bytes().iter().map(|(t, n)| (t.label(), *n)).collect();
        out.labelled_counter(
            "lookout_sent_bytes",
            "Bytes of H.264 handed to the viewers' tracks, by transport (summed over viewers: two watching, twice the bytes).",
            "transport",
            &sent_bytes,
        )?;
        let latency = sent.capture_to_send_seconds();
        latency.encode(out.encoder.encode_descriptor(
            "lookout_capture_to_send_seconds",
            "Time from a frame's capture to its hand-over to a viewer's track, once per frame per viewer.",
            None,
            latency.metric_type(),
        )?)?;
        out.gauge(
            "lookout_encoder_target_bits_per_second",
            "The encoder's bitrate target now.",
            i64::from(status.bitrate),
        )?;
        let estimates = camera.fanout().fresh_estimates(std::time::Instant::now());
        out.gauge(
            "lookout_viewer_estimate_min_bits_per_second",
            "The lowest fresh bandwidth estimate among the viewers (0: none).",
            gauge_value(estimates.iter().copied().min().unwrap_or(0)),
        )?;
        out.gauge(
            "lookout_viewers_streaming",
            "Viewers whose connection is up and receiving frames now.",
            gauge_value(status.streaming),
        )?;
        out.gauge(
            "lookout_camera_up",
            "1 while the camera delivers frames (what /healthz says), else 0.",
            i64::from(camera.health().is_ok()),
        )?;
        let restarts = status.restarts;
        out.labelled_counter(
            "lookout_camera_restarts",
            "Restarts of the capture/encode worker by the supervisor, by cause.",
            "cause",
            &[
                ("panic", restarts.panic),
                ("error", restarts.error),
                ("stall", restarts.stall),
                ("encoder", restarts.encoder),
            ],
        )?;
        out.counter(
            "lookout_camera_peer_restarts",
            "Restarts of the camera's signaling client.",
            status.peer_restarts,
        )?;
        Ok(())
    }
}

/// The process's own figures, from `/proc/self`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcessStats {
    pub rss_bytes: u64,
    pub cpu_seconds: f64,
}

impl ProcessStats {
    /// `None` where `/proc` is not there (the metrics are then left out).
    pub fn read() -> Option<ProcessStats> {
        let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // SAFETY: sysconf only reads configuration values.
        let (page, ticks) = unsafe { (libc::sysconf(libc::_SC_PAGESIZE), libc::sysconf(libc::_SC_CLK_TCK)) };
        Self::parse(&statm, &stat, u64::try_from(page).ok()?, u64::try_from(ticks).ok()?)
    }

    /// Resident pages are statm's second field; utime and stime are stat's
    /// 14th and 15th, counted after the `(comm)` field, which may hold spaces.
    fn parse(statm: &str, stat: &str, page_size: u64, ticks_per_second: u64) -> Option<ProcessStats> {
        let resident: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
        let after_comm = &stat[stat.rfind(')')? + 1..];
        let mut fields = after_comm.split_whitespace().skip(11);
        let utime: u64 = fields.next()?.parse().ok()?;
        let stime: u64 = fields.next()?.parse().ok()?;
        if ticks_per_second == 0 {
            return None;
        }
        Some(ProcessStats {
            rss_bytes: resident.saturating_mul(page_size),
            cpu_seconds: (utime + stime) as f64 / ticks_per_second as f64,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_fields_are_read_after_a_command_name_with_spaces() {
        let stat = "42 (tokio rt) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 9 0 100 1000 300";
        let stats = ProcessStats::parse("1000 300 50 1 0 80 0", stat, 4096, 100).unwrap();
        assert_eq!(stats, ProcessStats { rss_bytes: 300 * 4096, cpu_seconds: 3.0 });
    }

    #[test]
    fn this_process_has_memory_and_a_cpu_time() {
        let stats = ProcessStats::read().unwrap();
        assert!(stats.rss_bytes > 1 << 20);
        assert!(stats.cpu_seconds >= 0.0);
    }
}
