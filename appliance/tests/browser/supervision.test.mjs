// Supervision, end to end: the real lookout binary (a debug build, with the
// test-only `--camera fault:<kind>@<frames>` source) and Debian's Chromium.
// For each fault the page keeps its RTCPeerConnection, live video (the
// test pattern's timestamp strip advancing in presented frames) is back
// within 3 s of /healthz turning 503, /healthz returns to 200 and the
// restart is counted. A killed camera peer rejoins and the page plays on.
// A browser killed without closing frees its slot.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { chromium } from 'playwright-core';
import {
  CHROMIUM, CHROMIUM_ARGS, launchBrowser, openViewer, startLookout, waitForVideo,
} from './harness.mjs';

let browser;

before(async () => { browser = await launchBrowser(); });
after(async () => { await browser?.close(); });

/** Records [captureMs from the strip, wall-clock ms] of every presented frame. */
async function recordStrip(page) {
  await page.evaluate(() => {
    window.presented = [];
    const video = document.getElementById('video');
    const canvas = document.createElement('canvas');
    const context = canvas.getContext('2d', { willReadFrequently: true });
    const onFrame = () => {
      canvas.width = video.videoWidth;
      canvas.height = 16;
      context.drawImage(video, 0, 0, video.videoWidth, 16, 0, 0, video.videoWidth, 16);
      const pixels = context.getImageData(0, 0, canvas.width, 16).data;
      let value = 0;
      for (let bit = 0; bit < 48; bit += 1) {
        const offset = (8 * canvas.width + bit * 12 + 6) * 4;
        value = value * 2 + (pixels[offset + 1] > 125 ? 1 : 0);
      }
      window.presented.push([value, Date.now()]);
      video.requestVideoFrameCallback(onFrame);
    };
    video.requestVideoFrameCallback(onFrame);
  });
}

const health = (page) => page.evaluate(async () => {
  const response = await fetch('/healthz', { cache: 'no-store' });
  const text = await response.text();
  return { status: response.status, reason: response.status === 200 ? text.trim() : JSON.parse(text).reason };
});
const info = (page) => page.evaluate(async () => (await fetch('/api/info', { cache: 'no-store' })).json());

async function until(what, check, { timeout = 15000, every = 50 } = {}) {
  const deadline = Date.now() + timeout;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, every));
  }
}

for (const [fault, reason, counter] of [
  ['panic', 'restarting', 'panic'],
  ['error', 'restarting', 'error'],
  ['stall', 'camera-stalled', 'stall'],
]) {
  test(`after a source ${fault}, live video is back on the same connection within 3 s`, async () => {
    // 240 frames: 8 s of health first, time for the viewer to start playing.
    const camera = await startLookout({ camera: `fault:${fault}@240`, args: ['--resolution', '640x480', '--fps', '30'] });
    const page = await openViewer(browser, camera.url());
    try {
      await waitForVideo(page, { width: 640, height: 480 });
      await recordStrip(page);
      await page.evaluate(() => { window.firstPeerConnection = window.lookout.pc; });
      assert.equal((await info(page)).camera.restarts.total, 0, 'the fault came before the video: raise the frame count');

      const bad = await until(`/healthz 503 ${reason}`, async () => {
        const now = await health(page);
        return now.status === 503 ? { ...now, at: Date.now() } : null;
      });
      assert.equal(bad.reason, reason);
      const recovered = await until('a frame captured after the fault', () => page.evaluate(
        (since) => window.presented.find(([captured]) => captured > since) || null, bad.at), { timeout: 10000 });
      const outage = recovered[1] - bad.at;
      console.log(`${fault}: video back ${outage} ms after /healthz said 503 ${reason}`);
      assert.ok(outage < 3000, `video back within 3 s (took ${outage} ms)`);

      await until('/healthz 200', async () => (await health(page)).status === 200, { timeout: 5000 });
      const state = await page.evaluate(() => ({
        samePeerConnection: window.lookout.pc === window.firstPeerConnection,
        reconnects: window.lookout.reconnects,
        phase: window.lookout.phase,
      }));
      assert.deepEqual(state, { samePeerConnection: true, reconnects: 0, phase: 'playing' }, 'no reload, no new connection');
      const status = (await info(page)).camera;
      assert.equal(status.restarts[counter], 1, JSON.stringify(status));
      assert.equal(status.last_restart, counter);
      // Still live a second later: the strip keeps advancing.
      const latest = await page.evaluate(() => window.presented.at(-1)[0]);
      await page.waitForTimeout(1000);
      assert.ok(await page.evaluate(() => window.presented.at(-1)[0]) > latest + 500, 'the strip advances');
    } catch (error) {
      console.log('camera log (end):\n' + camera.log().split('\n').slice(-30).join('\n'));
      throw error;
    } finally {
      await page.context().close();
      await camera.stop();
    }
  });
}

test('after the camera peer is killed, it rejoins and the page sees live video again without a reload', async () => {
  // The debug build's hidden hook: the camera peer's task ends as a crash
  // would after 240 frames (8 s: time for the viewer to start playing).
  const camera = await startLookout({ camera: 'fault:kill-peer@240', args: ['--resolution', '640x480', '--fps', '30'] });
  const page = await openViewer(browser, camera.url());
  try {
    await waitForVideo(page, { width: 640, height: 480 });
    await recordStrip(page);
    await page.evaluate(() => { window.notReloaded = true; });
    assert.equal((await info(page)).camera.peer_restarts, 0, 'the kill came before the video: raise the frame count');
    const killedAt = await until('the camera peer restarted', async () => {
      const now = await info(page);
      return now.camera.peer_restarts === 1 ? Date.now() : null;
    }, { timeout: 20000 });
    const recovered = await until('a frame captured after the restart', () => page.evaluate(
      (since) => window.presented.find(([captured]) => captured > since) || null, killedAt), { timeout: 10000 });
    const outage = recovered[1] - killedAt;
    console.log(`kill-peer: video back ${outage} ms after the restart was counted`);
    assert.ok(outage < 3000, `video back within 3 s (took ${outage} ms)`);
    await until('/healthz 200', async () => (await health(page)).status === 200, { timeout: 5000 });
    const state = await page.evaluate(() => ({ notReloaded: window.notReloaded, phase: window.lookout.phase }));
    assert.deepEqual(state, { notReloaded: true, phase: 'playing' }, 'the same page plays on');
    const now = await info(page);
    assert.equal(now.camera_peer_in_room, true);
    assert.equal(now.camera.restarts.total, 0, 'the media pipeline was not restarted');
  } catch (error) {
    console.log('camera log (end):\n' + camera.log().split('\n').slice(-30).join('\n'));
    throw error;
  } finally {
    await page.context().close();
    await camera.stop();
  }
});

test('a viewer whose browser is killed frees its slot within 10 s', async () => {
  const camera = await startLookout({ args: ['--resolution', '640x480', '--fps', '30'] });
  const server = await chromium.launchServer({ executablePath: CHROMIUM, args: CHROMIUM_ARGS, headless: true });
  const watcher = await openViewer(browser, camera.url(''));
  try {
    const doomed = await chromium.connect(server.wsEndpoint());
    const page = await openViewer(doomed, camera.url());
    await waitForVideo(page, { width: 640, height: 480 });
    const before = await info(watcher);
    // One slot (the one viewer count) and one fan-out receiver (streaming).
    assert.deepEqual([before.viewers, before.camera.viewers, before.signaling.viewers, before.camera.streaming], [1, 1, 1, 1]);
    server.process().kill('SIGKILL'); // no goodbye: no close frame, no RTCP BYE
    const killedAt = Date.now();
    await until('the slot and the fan-out receiver freed', async () => {
      const now = await info(watcher);
      return now.viewers === 0 && now.camera.viewers === 0 && now.signaling.viewers === 0 && now.camera.streaming === 0;
    }, { timeout: 10000, every: 200 });
    console.log(`slot freed ${Date.now() - killedAt} ms after the browser was killed`);
  } finally {
    await watcher.context().close();
    await server.close().catch(() => {});
    await camera.stop();
  }
});

test('with no camera the page says so and the server keeps serving', async () => {
  // A build without libcamera support has no camera to find.
  const camera = await startLookout({ camera: 'libcamera', args: ['--resolution', '640x480', '--fps', '30'] });
  const page = await openViewer(browser, camera.url());
  try {
    await page.waitForFunction(() => window.lookout.health === 'camera-missing', null, { timeout: 10000 });
    assert.match(await page.textContent('#state'), /No camera is connected/);
    assert.notEqual(await page.evaluate(() => window.lookout.phase), 'playing');
    const status = (await info(page)).camera;
    assert.equal(status.state, 'missing');
    assert.equal(status.restarts.total, 0, 'absent is degraded, not a restart loop');
  } finally {
    await page.context().close();
    await camera.stop();
  }
});
