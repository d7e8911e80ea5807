// /metrics and /snapshot.jpg while a real browser watches: the real lookout
// binary streams its test pattern to Chromium; /metrics (fetched with the
// room secret as a bearer token, parsed by the Prometheus project's
// OpenMetrics parser through ../parse_metrics.py) shows one streaming page
// viewer, the encoder's counters moving, and the bytes sent to that viewer
// and their capture-to-send times; a /snapshot.jpg decodes in
// Chromium at the asked width while the stream plays.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { after, before, test } from 'node:test';
import { launchBrowser, openViewer, startLookout, waitForVideo } from './harness.mjs';

const PARSER = new URL('../parse_metrics.py', import.meta.url).pathname;

let browser;
let lookout;

before(async () => {
  browser = await launchBrowser();
  lookout = await startLookout({ args: ['--resolution', '640x480', '--fps', '30'] });
});

after(async () => {
  await browser?.close();
  await lookout?.stop();
});

/** Scrapes /metrics from the page; returns sample values keyed `name{labels}`. */
async function scrape(page, secret) {
  const text = await page.evaluate(async (token) => {
    const response = await fetch('/metrics', { headers: { Authorization: `Bearer ${token}` } });
    if (response.status !== 200) throw new Error(`/metrics answered ${response.status}`);
    return response.text();
  }, secret);
  const parsed = JSON.parse(execFileSync('/usr/bin/python3', [PARSER], { input: text }));
  const samples = {};
  for (const [name, labels, value] of parsed.samples) {
    const keys = Object.keys(labels).sort().map((k) => `${k}="${labels[k]}"`);
    samples[keys.length ? `${name}{${keys.join(',')}}` : name] = value;
  }
  return samples;
}

test('while Chromium watches, /metrics counts one streaming page viewer and the encoder moves', async () => {
  const page = await openViewer(browser, lookout.url());
  await waitForVideo(page, { width: 640, height: 480 });
  const first = await scrape(page, lookout.secret);
  await new Promise((resolve) => setTimeout(resolve, 2000));
  const second = await scrape(page, lookout.secret);
  console.log(`in 2 s: ${second.lookout_frames_encoded_total - first.lookout_frames_encoded_total} frames, `
    + `${second.lookout_encoded_bytes_total - first.lookout_encoded_bytes_total} bytes encoded`);
  assert.equal(second['lookout_viewers{transport="page"}'], 1);
  assert.equal(second.lookout_viewers_streaming, 1);
  assert.ok(second.lookout_frames_encoded_total >= first.lookout_frames_encoded_total + 30, 'about 60 frames in 2 s');
  assert.ok(second.lookout_encoded_bytes_total > first.lookout_encoded_bytes_total);
  assert.ok(second.lookout_encode_seconds_count > first.lookout_encode_seconds_count);
  assert.ok(second['lookout_keyframes_total{cause="requested"}'] >= 1, 'the viewer started on an asked-for keyframe');
  assert.ok(second.lookout_encoder_target_bits_per_second > 0);
  assert.equal(second.lookout_camera_up, 1);

  // What was handed to this viewer's track: its bytes under `page`, and
  // one capture-to-send time per frame, each well under a second.
  const sent = (m) => m['lookout_sent_bytes_total{transport="page"}'];
  const sends = second.lookout_capture_to_send_seconds_count - first.lookout_capture_to_send_seconds_count;
  const meanMs = 1000 * (second.lookout_capture_to_send_seconds_sum - first.lookout_capture_to_send_seconds_sum) / sends;
  const encodeMs = 1000 * (second.lookout_encode_seconds_sum - first.lookout_encode_seconds_sum)
    / (second.lookout_encode_seconds_count - first.lookout_encode_seconds_count);
  console.log(`in 2 s: ${sent(second) - sent(first)} bytes sent to the page viewer, ${sends} frames, `
    + `capture to send ${meanMs.toFixed(1)} ms on average (of which encoding ${encodeMs.toFixed(1)} ms)`);
  assert.ok(sent(second) > sent(first), 'bytes were sent to the page viewer');
  assert.ok(sent(second) <= second.lookout_encoded_bytes_total, 'one viewer is sent at most what was encoded');
  assert.equal(second['lookout_sent_bytes_total{transport="whep"}'], 0);
  assert.ok(sends >= 30, `about 60 frames sent in 2 s, got ${sends}`);
  assert.ok(meanMs > 0 && meanMs < 1000, `capture to send ${meanMs} ms`);
  assert.equal(second['lookout_capture_to_send_seconds_bucket{le="+Inf"}'], second.lookout_capture_to_send_seconds_count);

  // A snapshot while the stream plays, decoded by Chromium's own JPEG decoder.
  const size = await page.evaluate(async (token) => {
    const response = await fetch('/snapshot.jpg?width=320', { headers: { Authorization: `Bearer ${token}` } });
    const bitmap = await createImageBitmap(await response.blob());
    return [response.status, response.headers.get('content-type'), bitmap.width, bitmap.height];
  }, lookout.secret);
  assert.deepEqual(size, [200, 'image/jpeg', 320, 240]);
  assert.equal(await page.evaluate(() => window.lookout.phase), 'playing', 'the stream plays on');
  await page.context().close();
});
