// A viewer in Chromium still gets in and sees video while 1,000 idle
// WebSocket connections from 16 other addresses try to hold every place
// (the Rust suite tests/hostile_lan.rs has the rest of the attacks).
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { connect } from 'node:tls';
import { after, before, test } from 'node:test';
import { launchBrowser, openViewer, startLookout, waitForVideo } from './harness.mjs';

let browser;
let lookout;
const idle = [];

before(async () => {
  browser = await launchBrowser();
  lookout = await startLookout({ args: ['--resolution', '640x480', '--fps', '15'] });
});

after(async () => {
  for (const socket of idle) socket.destroy();
  await browser?.close();
  await lookout?.stop();
});

/** One idle WebSocket from `localAddress`: upgraded, then silent. Resolves to whether it upgraded. */
function idleWebSocket(address, localAddress) {
  const [host, port] = [address.slice(0, address.lastIndexOf(':')), Number(address.slice(address.lastIndexOf(':') + 1))];
  return new Promise((resolve) => {
    const socket = connect({ host, port, localAddress, rejectUnauthorized: false, ALPNProtocols: ['http/1.1'] }, () => {
      socket.write(`GET /signal HTTP/1.1\r\nHost: ${address}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n`
        + `Sec-WebSocket-Key: ${randomBytes(16).toString('base64')}\r\nSec-WebSocket-Version: 13\r\n\r\n`);
    });
    socket.once('data', (chunk) => resolve(chunk.toString().startsWith('HTTP/1.1 101')));
    socket.on('error', () => resolve(false));
    socket.on('close', () => resolve(false));
    idle.push(socket);
  });
}

test('a viewer joins and sees video while 1,000 idle WebSockets from 16 addresses try to hold every place', async () => {
  let upgraded = 0;
  for (let wave = 0; wave < 10; wave += 1) {
    const results = await Promise.all(Array.from({ length: 100 },
      (_, n) => idleWebSocket(lookout.address, `127.0.1.${((wave * 100 + n) % 16) + 1}`)));
    upgraded += results.filter(Boolean).length;
  }
  console.log(`${upgraded} of 1000 idle WebSockets upgraded`);
  assert.ok(upgraded >= 256, `the attack filled the signaling budget (${upgraded} upgraded)`);

  const started = Date.now();
  const page = await openViewer(browser, lookout.url());
  await waitForVideo(page, { width: 640, height: 480 });
  console.log(`video playing ${Date.now() - started} ms after opening the page, with the idle connections open`);
  await page.context().close();
});
