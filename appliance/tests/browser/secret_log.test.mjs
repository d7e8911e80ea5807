// The room secret never reaches the log, whatever the filter: a whole
// Chromium viewer session (page, signaling, WebRTC, video) against the real
// binary at trace level, with directives for the WebSocket frames, and the
// log searched for the secret in any case and as the hex bytes of its text.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { launchBrowser, openViewer, startLookout, waitForVideo } from './harness.mjs';

const FILTERS = ['trace,tungstenite::protocol=trace', 'debug,webrtc=trace,tungstenite=trace,tokio_tungstenite=trace'];

/** Every substring of `text` of length `size`. */
function windows(text, size) {
  const out = [];
  for (let i = 0; i + size <= text.length; i += 1) out.push(text.slice(i, i + size));
  return out;
}

const hexOf = (text) => Buffer.from(text, 'latin1').toString('hex');

for (const filter of FILTERS) {
  test(`a viewer session with --log ${filter} leaves no trace of the secret`, async () => {
    const browser = await launchBrowser();
    const lookout = await startLookout({ args: ['--resolution', '640x480', '--fps', '15', '--log', filter] });
    try {
      const page = await openViewer(browser, lookout.url());
      await waitForVideo(page, { width: 640, height: 480 });
      await page.context().close();
    } finally {
      await browser.close();
      await lookout.stop();
    }
    const log = lookout.log().toLowerCase();
    assert.ok(log.includes('<redacted>'), 'frames holding the secret were logged, and redacted');
    const { secret } = lookout;
    const needles = [
      ...windows(secret, 16),
      ...windows(hexOf(secret), 32),
      ...windows(hexOf(secret.toUpperCase()), 32),
    ];
    for (const needle of needles) {
      const at = log.indexOf(needle);
      assert.equal(at, -1, `the log holds part of the secret (${needle}): ${log.slice(Math.max(0, at - 200), at + 100)}`);
    }
    console.log(`--log ${filter}: ${log.split('\n').length} log lines, no trace of the secret`);
  });
}
