// Capture-clock timing, end to end: a camera that loses every third frame
// (the debug build's `--camera fault:drop@2/3`) streams for a minute to a
// real Chromium viewer, and the viewer's capture-to-display latency stays
// flat. RTP timestamps come from each frame's capture time, so a lost
// frame leaves a gap in the RTP clock instead of slowing it down; with a
// fixed 1/fps per frame the RTP clock would run at 2/3 of real time and
// the browser's playout would drift against the camera.
// Takes about 70 s (LOOKOUT_TIMING_SECONDS, default 60, sets the run).
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { launchBrowser, openViewer, startLookout, waitForVideo } from './harness.mjs';

const SECONDS = Number(process.env.LOOKOUT_TIMING_SECONDS || 60);
const WINDOW_MS = 10000;

let browser;
let lookout;

before(async () => {
  browser = await launchBrowser();
  lookout = await startLookout({ camera: 'fault:drop@2/3', args: ['--resolution', '640x480', '--fps', '30'] });
});

after(async () => {
  await browser?.close();
  await lookout?.stop();
});

function median(values) {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
}

/**
 * Runs in the page for `ms`: on every presented frame, reads the timestamp
 * strip (capture time, Unix ms; docs/test-pattern.md) and the frame's
 * presentation time and RTP timestamp from requestVideoFrameCallback.
 * Returns [[presentedMs, capturedMs, rtpTimestamp, receivedMs], ...].
 */
function recordFrames(ms) {
  return new Promise((resolve) => {
    const video = document.getElementById('video');
    const canvas = document.createElement('canvas');
    canvas.width = video.videoWidth;
    canvas.height = 16;
    const context = canvas.getContext('2d', { willReadFrequently: true });
    const frames = [];
    const start = performance.now();
    // The browser's own delay, every 5 s: jitter buffer wait and decode, ms per frame.
    window.delays = [];
    let previous = null;
    const snapshot = async () => {
      const stats = await window.lookout.pc.getStats();
      stats.forEach((s) => {
        if (s.type !== 'inbound-rtp' || s.kind !== 'video') return;
        if (previous) {
          window.delays.push([
            (1000 * (s.jitterBufferDelay - previous.jitterBufferDelay))
              / (s.jitterBufferEmittedCount - previous.jitterBufferEmittedCount),
            (1000 * (s.totalDecodeTime - previous.totalDecodeTime)) / (s.framesDecoded - previous.framesDecoded),
          ]);
        }
        previous = s;
      });
    };
    snapshot();
    const sample = setInterval(snapshot, 5000);
    const onFrame = (now, metadata) => {
      context.drawImage(video, 0, 0, video.videoWidth, 16, 0, 0, video.videoWidth, 16);
      const pixels = context.getImageData(0, 0, canvas.width, 16).data;
      let captured = 0;
      for (let bit = 0; bit < 48; bit += 1) {
        captured = captured * 2 + (pixels[(8 * canvas.width + bit * 12 + 6) * 4 + 1] > 125 ? 1 : 0);
      }
      frames.push([performance.timeOrigin + metadata.presentationTime, captured, metadata.rtpTimestamp,
        performance.timeOrigin + metadata.receiveTime]);
      if (now - start < ms) video.requestVideoFrameCallback(onFrame);
      else { clearInterval(sample); resolve(frames); }
    };
    video.requestVideoFrameCallback(onFrame);
  });
}

test(`with every third frame lost for ${SECONDS} s, RTP follows capture time and latency stays flat`, async () => {
  const page = await openViewer(browser, lookout.url());
  await waitForVideo(page, { width: 640, height: 480 });
  const frames = await page.evaluate(recordFrames, SECONDS * 1000);
  const delays = await page.evaluate(() => window.delays);
  const started = frames[0][0];
  const at = (from, to) => frames.filter(([presented]) => presented - started >= from && presented - started < to);
  const firstFrames = at(0, WINDOW_MS);
  const lastFrames = at(SECONDS * 1000 - WINDOW_MS, Infinity);
  const displayed = (list) => median(list.map(([presented, captured]) => presented - captured));
  const received = (list) => median(list.map(([, captured, , receivedAt]) => receivedAt - captured));
  const mean = (list) => list.reduce((sum, value) => sum + value, 0) / list.length;
  // Capture -> out of the jitter buffer and decoded: the browser's latency
  // before its compositor, which presents on its own 60 Hz tick.
  const buffered = (list, windowDelays) => received(list) + mean(windowDelays.map(([jitter, decode]) => jitter + decode));
  const firstBuffered = buffered(firstFrames, delays.slice(0, 2));
  const lastBuffered = buffered(lastFrames, delays.slice(-2));

  const perWindow = [];
  for (let from = 0; from < SECONDS * 1000; from += WINDOW_MS / 2) {
    const inWindow = at(from, from + WINDOW_MS / 2);
    if (inWindow.length) perWindow.push(`${received(inWindow).toFixed(0)}/${displayed(inWindow).toFixed(0)}`);
  }
  // The RTP clock against the capture clock: RTP timestamp (90 kHz, unwrapped)
  // minus capture time must stay constant (the strip is in whole ms).
  let unwrapped = 0;
  let previous = frames[0][2];
  const offsets = frames.map(([, captured, rtp]) => {
    unwrapped += ((rtp - previous) >>> 0);
    previous = rtp;
    return unwrapped / 90 - (captured - frames[0][1]);
  });
  const spread = Math.max(...offsets) - Math.min(...offsets);
  const quality = await page.evaluate(() => {
    const { totalVideoFrames, droppedVideoFrames } = document.getElementById('video').getVideoPlaybackQuality();
    return { totalVideoFrames, droppedVideoFrames };
  });
  console.log(`capture -> received / displayed, medians per 5 s: ${perWindow.join(', ')} ms`);
  console.log(`jitter buffer / decode per 5 s: ${delays.map(([j, d]) => `${j.toFixed(0)}/${d.toFixed(1)}`).join(', ')} ms`);
  console.log(`capture -> decoded: first 10 s ${firstBuffered.toFixed(1)} ms, last 10 s ${lastBuffered.toFixed(1)} ms;`
    + ` displayed: ${displayed(firstFrames).toFixed(1)} -> ${displayed(lastFrames).toFixed(1)} ms;`
    + ` RTP vs capture clock spread ${spread.toFixed(1)} ms`
    + ` (${frames.length} frames; ${quality.totalVideoFrames} decoded, ${quality.droppedVideoFrames} dropped by the browser)`);

  assert.ok(firstFrames.length >= 100 && lastFrames.length >= 100, `enough frames (${firstFrames.length}, ${lastFrames.length})`);
  assert.ok(spread <= 2, `RTP timestamps follow capture times (spread ${spread.toFixed(1)} ms over ${SECONDS} s)`);
  assert.ok(Math.abs(lastBuffered - firstBuffered) <= 10,
    `capture -> decoded latency moved from ${firstBuffered.toFixed(1)} to ${lastBuffered.toFixed(1)} ms`);
  // Headless Chromium presents on a 60 Hz tick whose phase against the
  // camera's schedule wanders on a busy machine: displayed latency steps by
  // one tick (16.7 ms) either way while everything before it stays flat. So
  // the displayed figure may move by 10 ms plus one tick.
  const displayedDrift = displayed(lastFrames) - displayed(firstFrames);
  assert.ok(Math.abs(displayedDrift) <= 10 + 1000 / 60,
    `displayed latency moved from ${displayed(firstFrames).toFixed(1)} to ${displayed(lastFrames).toFixed(1)} ms`);
  assert.ok(displayed(firstFrames) >= -5 && displayed(firstFrames) < 1000, 'displayed latency is plausible');
  await page.context().close();
});
