// WHEP with a client nobody here wrote: the `whip-whep` package's
// WHEPClient (by one of the WHEP draft's authors), in Chromium, on a plain
// page served from another loopback origin that knows nothing of Lookout's
// viewer. The camera lets that origin in with --whep-allow-origin; the page
// plays the real binary's test pattern, and the timestamp strip read from
// presented frames advances with the clock. An ICE restart (the client's
// PATCH) keeps the session and the stream. Stopping the client (its
// DELETE) frees the viewer slot. A page from an origin not listed is
// refused by CORS before its token is checked.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { after, before, test } from 'node:test';
import { launchBrowser, measureFps, readStrip, startLookout } from './harness.mjs';

const CLIENT = readFileSync(new URL('./node_modules/whip-whep/whep.js', import.meta.url));
const PAGE = `<!doctype html><title>a WHEP player</title>
<video id="video" autoplay muted playsinline></video>
<script type="module">
import { WHEPClient } from '/whep.js';
window.play = async (url, token) => {
  const pc = new RTCPeerConnection();
  pc.addTransceiver('video', { direction: 'recvonly' });
  pc.ontrack = (event) => { document.getElementById('video').srcObject = new MediaStream([event.track]); };
  const client = new WHEPClient();
  await client.view(pc, url, token);
  window.player = { pc, client };
  return client.resourceURL.pathname;
};
</script>`;

let browser;
let lookout;
let player;

before(async () => {
  player = createServer((request, response) => {
    if (request.url === '/whep.js') {
      response.writeHead(200, { 'content-type': 'text/javascript' });
      response.end(CLIENT);
    } else {
      response.writeHead(200, { 'content-type': 'text/html' });
      response.end(PAGE);
    }
  });
  await new Promise((resolve) => player.listen(0, '127.0.0.1', resolve));
  browser = await launchBrowser();
  lookout = await startLookout({
    args: ['--resolution', '640x480', '--fps', '30',
      '--whep-allow-origin', `http://127.0.0.1:${player.address().port}`],
  });
});

after(async () => {
  await browser?.close();
  await lookout?.stop();
  player?.close();
});

/** The camera's /api/info, read from its own page in `context`. */
async function cameraInfo(context) {
  const own = await context.newPage();
  await own.goto(lookout.url(''));
  const info = await own.evaluate(async () => (await fetch('/api/info')).json());
  await own.close();
  return info;
}

test('whip-whep in Chromium on another origin plays live frames; stopping it frees the slot', async () => {
  const context = await browser.newContext({ ignoreHTTPSErrors: true });
  const page = await context.newPage();
  page.on('console', (message) => { if (message.type() === 'error') console.error('[page]', message.text()); });
  await page.goto(`http://127.0.0.1:${player.address().port}/`);
  const started = Date.now();
  const location = await page.evaluate(([url, token]) => window.play(url, token),
    [`https://${lookout.address}/whep`, lookout.secret]);
  assert.match(location, /^\/whep\/[0-9a-f]{32}$/);
  await page.waitForFunction(() => {
    const video = document.getElementById('video');
    return video.videoWidth === 640 && video.videoHeight === 480 && video.currentTime > 0;
  }, null, { timeout: 20000, polling: 100 });
  const firstFrameMs = Date.now() - started;

  const [captured1, seen1] = await readStrip(page);
  const fps = await measureFps(page, 2000);
  const [captured2, seen2] = await readStrip(page);
  console.log(`whip-whep: first frame ${firstFrameMs} ms after view(); ${fps.toFixed(1)} fps; `
    + `strip ${captured2 - captured1} ms apart over ${seen2 - seen1} ms; latency ${seen2 - captured2} ms`);
  assert.ok(Math.abs(seen1 - captured1) < 1000, `the strip (${captured1}) is live (${seen1})`);
  assert.ok(captured2 - captured1 >= 1500, 'the strip advances with the clock: these are live frames');
  assert.ok(Math.abs((captured2 - captured1) - (seen2 - seen1)) < 500, 'at the clock\'s pace');
  assert.ok(fps > 20, `about 30 fps presented, got ${fps}`);

  const watching = await cameraInfo(context);
  assert.equal(watching.viewers, 1);
  assert.equal(watching.signaling.whep_viewers, 1);
  assert.equal(watching.camera.streaming, 1, 'the WHEP viewer is subscribed to the fan-out');
  const own = await context.newPage();
  await own.goto(lookout.url(''));
  const metrics = await own.evaluate(async (token) => (await fetch('/metrics', {
    headers: { Authorization: `Bearer ${token}` } })).text(), lookout.secret);
  await own.close();
  assert.match(metrics, /^lookout_viewers\{transport="whep"\} 1$/m);
  assert.match(metrics, /^lookout_viewers\{transport="page"\} 0$/m);
  // What was handed to the WHEP viewer's track counts under `whep`.
  const sentWhep = Number(/^lookout_sent_bytes_total\{transport="whep"\} (\d+)$/m.exec(metrics)?.[1]);
  assert.ok(sentWhep > 10000, `bytes sent to the WHEP viewer: ${sentWhep}`);
  assert.match(metrics, /^lookout_sent_bytes_total\{transport="page"\} 0$/m);
  const sends = Number(/^lookout_capture_to_send_seconds_count (\d+)$/m.exec(metrics)?.[1]);
  assert.ok(sends >= 30, `a capture-to-send time per frame sent: ${sends}`);

  // An ICE restart through the client's own PATCH (new credentials both
  // ways): the session and its slot are kept, and the stream goes on.
  const ufrag = () => page.evaluate(() => /a=ice-ufrag:(.*)\r\n/.exec(window.player.pc.remoteDescription.sdp)[1]);
  const before = await ufrag();
  const restartedAt = Date.now();
  await page.evaluate(() => window.player.client.restart());
  await page.waitForFunction(() => window.player.client.restartIce === null
    && window.player.pc.connectionState === 'connected', null, { timeout: 10000, polling: 50 });
  const after = await ufrag();
  assert.notEqual(after, before, 'the camera answered the restart with new ICE credentials');
  assert.equal(await page.evaluate(() => window.player.client.resourceURL.pathname), location, 'the same session');
  const [captured3, seen3] = await readStrip(page);
  await new Promise((resolve) => setTimeout(resolve, 1000));
  const [captured4, seen4] = await readStrip(page);
  console.log(`ICE restart: connected again ${Date.now() - restartedAt} ms after restart(); `
    + `strip ${captured4 - captured3} ms apart over ${seen4 - seen3} ms; latency ${seen4 - captured4} ms`);
  assert.ok(captured4 - captured3 >= 700 && seen4 - captured4 < 1000, 'live frames after the restart');
  const restarted = await cameraInfo(context);
  assert.equal(restarted.viewers, 1, 'the restart kept the one slot');

  await page.evaluate(() => window.player.client.stop());
  const deadline = Date.now() + 5000;
  let info = await cameraInfo(context);
  while (info.viewers !== 0 && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 200));
    info = await cameraInfo(context);
  }
  assert.equal(info.viewers, 0, 'stop() (DELETE) gave the slot back');
  await context.close();
});

test('a page from an origin not listed cannot use /whep, and spends no guesses', async () => {
  const context = await browser.newContext({ ignoreHTTPSErrors: true });
  const page = await context.newPage();
  // `localhost` is another origin than `127.0.0.1`.
  await page.goto(`http://localhost:${player.address().port}/`);
  const outcome = await page.evaluate(([url]) => window.play(url, '0'.repeat(64)).then(
    () => 'played', (error) => String(error)), [`https://${lookout.address}/whep`]);
  assert.notEqual(outcome, 'played');
  assert.match(outcome, /TypeError|Failed to fetch/, outcome);
  const info = await cameraInfo(context);
  assert.equal(info.viewers, 0);
  await context.close();
  await lookout.stop();
  assert.doesNotMatch(lookout.log(), /wrong room secret|wrong secret/i, 'the preflight stopped it before any token check');
});
