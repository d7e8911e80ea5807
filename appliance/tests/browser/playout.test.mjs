// No playout delay: the camera asks the browser to show each frame as soon
// as it is decoded (the playout-delay RTP header extension, minimum and
// maximum 0, on every video packet; peer::video_track::PLAYOUT_DELAY).
// Chromium negotiates the extension in its answer, holds frames in its
// jitter buffer for next to nothing and shows them at once: without the
// extension it schedules each frame a smoothing delay after its arrival, a
// compositor interval or more, which grew over a session (docs/performance.md,
// "The first second and the minute after"). About 20 s.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { inboundVideoStats, launchBrowser, openViewer, readStrip, startLookout, waitForVideo } from './harness.mjs';

const PLAYOUT_DELAY_URI = 'http://www.webrtc.org/experiments/rtp-hdrext/playout-delay';
// Bounds, from this test on the shared 2-core machine with and without the
// extension (2026-12-03): a frame waited 0.6 against 7.9 ms in the jitter
// buffer, and was shown a median 7 against 41 ms after its capture.
const MAX_JITTER_BUFFER_MS = 4;
const MAX_MEDIAN_LATENCY_MS = 25;

let browser;
let lookout;

before(async () => {
  browser = await launchBrowser();
  lookout = await startLookout({ args: ['--resolution', '1280x720', '--fps', '30'] });
});

after(async () => {
  await browser?.close();
  await lookout?.stop();
});

test('the browser negotiates no playout delay and shows frames without buffering them', async () => {
  const page = await openViewer(browser, lookout.url());
  await waitForVideo(page, { width: 1280, height: 720 });
  const sdp = await page.evaluate(() => ({
    offer: window.lookout.pc.remoteDescription.sdp,
    answer: window.lookout.pc.localDescription.sdp,
  }));
  assert.ok(sdp.offer.includes(PLAYOUT_DELAY_URI), 'the camera offers the playout-delay extension');
  assert.ok(sdp.answer.includes(PLAYOUT_DELAY_URI), 'Chromium accepts the playout-delay extension');

  await page.waitForTimeout(2000);
  const first = await inboundVideoStats(page);
  const latencies = [];
  const until = Date.now() + 10000;
  while (Date.now() < until) {
    const [captured, shown] = await readStrip(page);
    latencies.push(shown - captured);
    await page.waitForTimeout(200);
  }
  const last = await inboundVideoStats(page);
  const frames = last.jitterBufferEmittedCount - first.jitterBufferEmittedCount;
  const waitMs = (1000 * (last.jitterBufferDelay - first.jitterBufferDelay)) / frames;
  latencies.sort((a, b) => a - b);
  const medianLatency = latencies[Math.floor(latencies.length / 2)];
  console.log(`jitter buffer: ${waitMs.toFixed(1)} ms per frame over ${frames} frames;`
    + ` capture -> shown (strip, ${latencies.length} reads): median ${medianLatency} ms`);
  assert.ok(frames >= 200, `frames went through the jitter buffer (${frames} in 10 s)`);
  assert.ok(waitMs <= MAX_JITTER_BUFFER_MS,
    `a frame waits ${waitMs.toFixed(1)} ms in the jitter buffer (at most ${MAX_JITTER_BUFFER_MS})`);
  assert.ok(medianLatency >= 0 && medianLatency <= MAX_MEDIAN_LATENCY_MS,
    `frames are shown a median ${medianLatency} ms after capture (at most ${MAX_MEDIAN_LATENCY_MS})`);
  await page.context().close();
});
