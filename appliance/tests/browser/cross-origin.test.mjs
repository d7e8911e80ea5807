// A web page from elsewhere, opened in Chromium on the LAN, cannot drive the
// camera's signaling: the camera refuses `/signal` upgrades whose Origin is
// not its own page. The same script on the camera's own page connects.
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { after, before, test } from 'node:test';
import { launchBrowser, startLookout } from './harness.mjs';

let browser;
let lookout;
let foreign;

before(async () => {
  browser = await launchBrowser();
  lookout = await startLookout({ args: ['--no-camera'] });
  // Another site on the LAN (any origin that is not the camera's).
  foreign = createServer((_, response) => {
    response.writeHead(200, { 'content-type': 'text/html' });
    response.end('<!doctype html><title>elsewhere</title><p>a page from elsewhere</p>');
  });
  await new Promise((resolve) => foreign.listen(0, '127.0.0.1', resolve));
});

after(async () => {
  await browser?.close();
  await lookout?.stop();
  foreign?.close();
});

/** In `page`, opens wss://ADDRESS/signal; resolves to the first message or why it closed. */
function trySignal(page, address) {
  return page.evaluate((address) => new Promise((resolve) => {
    const socket = new WebSocket(`wss://${address}/signal`);
    socket.binaryType = 'arraybuffer';
    socket.onmessage = (event) => {
      resolve({ opened: true, first: new TextDecoder().decode(event.data) });
      socket.close();
    };
    socket.onclose = (event) => resolve({ opened: false, code: event.code });
    setTimeout(() => resolve({ opened: false, code: 'timeout' }), 10000);
  }), address);
}

test('a page from another origin cannot open /signal; the camera page can', async () => {
  const context = await browser.newContext({ ignoreHTTPSErrors: true });
  const elsewhere = await context.newPage();
  await elsewhere.goto(`http://127.0.0.1:${foreign.address().port}/`);
  const refused = await trySignal(elsewhere, lookout.address);
  assert.equal(refused.opened, false, `the foreign page got a signaling connection: ${JSON.stringify(refused)}`);

  const own = await context.newPage();
  await own.goto(lookout.url(''));
  const accepted = await trySignal(own, lookout.address);
  assert.equal(accepted.opened, true, `the camera's own page could not connect: ${JSON.stringify(accepted)}`);
  assert.match(accepted.first, /"type":"Hello"/);
  await context.close();

  await lookout.stop();
  assert.match(lookout.log(), /WebSocket upgrades and WHEP requests refused \(foreign Origin\) from 127\.0\.0\.1/,
    'the camera refused the foreign page by its Origin (not for another reason)');
});
