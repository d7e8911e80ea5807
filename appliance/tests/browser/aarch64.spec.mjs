// Run by scripts/aarch64.sh (not by a plain `node --test`: it needs the
// emulated aarch64 guest), inside the network namespace that holds the
// guest's tap link: the aarch64 build of lookout, running in
// qemu-system-aarch64, streams its test pattern, encoded by openh264's
// AArch64 NEON code, and Debian's Chromium on the host decodes it.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { launchBrowser, measureFps, openViewer, readStrip, waitForVideo } from './harness.mjs';

const WIDTH = Number(process.env.A64_WIDTH || 640);
const HEIGHT = Number(process.env.A64_HEIGHT || 480);

test('Chromium decodes the aarch64 build\'s H.264 stream and reads its timestamp strip', async () => {
  const secret = JSON.parse(readFileSync(process.env.A64_IDENTITY, 'utf8')).room_secret;
  const browser = await launchBrowser();
  try {
    const page = await openViewer(browser, `${process.env.A64_URL}#room=${secret}`);
    // Emulation is slow: the first keyframe may take a while.
    await waitForVideo(page, { width: WIDTH, height: HEIGHT, timeout: 120000 });
    const codec = await page.evaluate(async () => {
      const stats = await window.lookout.pc.getStats();
      let mime = null;
      stats.forEach((entry) => { if (entry.type === 'codec' && /video/.test(entry.mimeType)) mime = entry.mimeType; });
      return mime;
    });
    assert.equal(codec, 'video/H264', 'the stream is H.264');
    const fps = await measureFps(page, 5000);
    console.log(`presented ${fps.toFixed(1)} fps over 5 s (emulated aarch64 encoder)`);
    assert.ok(fps >= 2, `frames keep coming (got ${fps.toFixed(1)} fps)`);

    // The strip holds the capture time in ms: in successive presented frames
    // it must advance by about the time that passed on the host.
    const first = await readStrip(page);
    await new Promise((resolve) => setTimeout(resolve, 2000));
    const second = await readStrip(page);
    const advanced = second[0] - first[0];
    const elapsed = second[1] - first[1];
    console.log(`strip: ${first[0]} -> ${second[0]} (advanced ${advanced} ms in ${elapsed} ms); `
      + `capture-to-display ${second[1] - second[0]} ms (guest and host clocks may differ)`);
    assert.ok(Math.abs(advanced - elapsed) < 1500,
      `the decoded capture times advance with the host's clock (${advanced} ms vs ${elapsed} ms)`);
    assert.ok(Math.abs(second[1] - second[0]) < 10 * 60 * 1000,
      'the decoded capture time is a recent wall-clock time (the guest clock comes from the host RTC)');
  } finally {
    await browser.close();
  }
});
