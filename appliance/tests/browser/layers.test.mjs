// Temporal layers, end to end: a viewer held to the base layer (the debug
// build's test hook LOOKOUT_TEST_MAX_LAYER=0, as the fan-out does for a
// viewer whose link is well below the encoder's rate) gets every other
// frame, and every frame it gets decodes: about 15 fps from a 30 fps
// camera, no freezes, no keyframe requests, the picture live. About 25 s.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { inboundVideoStats, launchBrowser, openViewer, readStrip, startLookout, waitForVideo } from './harness.mjs';

let browser;
let lookout;

before(async () => {
  browser = await launchBrowser();
  process.env.LOOKOUT_TEST_MAX_LAYER = '0';
  try {
    lookout = await startLookout({ args: ['--resolution', '640x480', '--fps', '30'] });
  } finally {
    delete process.env.LOOKOUT_TEST_MAX_LAYER;
  }
});

after(async () => {
  await browser?.close();
  await lookout?.stop();
});

test('a viewer given only the base layer decodes every frame it gets, at half the rate', async () => {
  const page = await openViewer(browser, lookout.url());
  await waitForVideo(page, { width: 640, height: 480 });
  await page.waitForTimeout(2000);
  const before = await inboundVideoStats(page);
  await page.waitForTimeout(10000);
  const after = await inboundVideoStats(page);
  const seconds = (after.timestamp - before.timestamp) / 1000;
  const fps = (after.framesDecoded - before.framesDecoded) / seconds;
  const received = after.framesReceived - before.framesReceived;
  const decoded = after.framesDecoded - before.framesDecoded;
  console.log(`base layer only: ${fps.toFixed(1)} fps decoded over ${seconds.toFixed(1)} s; received ${received},`
    + ` decoded ${decoded}, dropped ${after.framesDropped - before.framesDropped}, freezes ${after.freezeCount},`
    + ` PLI ${after.pliCount}, NACK ${after.nackCount}, keyframes decoded ${after.keyFramesDecoded}`);
  assert.ok(fps >= 13 && fps <= 17, `about 15 fps from the 30 fps camera (got ${fps.toFixed(1)})`);
  assert.ok(decoded >= received - 2, `every frame received is decoded (${received} received, ${decoded} decoded)`);
  assert.equal(after.freezeCount, 0, 'no freezes');
  assert.equal(after.pliCount, 0, 'the decoder never asked for a keyframe');
  const [captured, shown] = await readStrip(page);
  assert.ok(shown - captured >= -5 && shown - captured < 1000, `the picture is live (${shown - captured} ms)`);
  await page.context().close();
});
