// Run by lan-test.sh (not by a plain `node --test`: it needs the namespaces) inside the viewer's network namespace: lookout at its
// defaults in another namespace, Chromium at its defaults (addresses hidden
// behind mDNS names), a veth link between them.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { chromium } from 'playwright-core';
import { CHROMIUM, waitForVideo } from './harness.mjs';

test('a browser on the LAN with mDNS-hidden addresses gets live video at default settings', async () => {
  const secret = JSON.parse(readFileSync(join(process.env.LAN_STATE, 'identity.json'), 'utf8')).room_secret;
  // Chromium's own defaults for WebRTC: no loopback, local IPs hidden behind mDNS.
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--ignore-certificate-errors', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--no-first-run', '--autoplay-policy=no-user-gesture-required'],
  });
  try {
    const page = await (await browser.newContext({ ignoreHTTPSErrors: true })).newPage();
    await page.goto(`${process.env.LAN_URL}#room=${secret}`);
    await waitForVideo(page, { width: 1280, height: 720 });
    const pair = await page.evaluate(async () => {
      const stats = await window.lookout.pc.getStats();
      let selected = null;
      stats.forEach((entry) => { if (entry.type === 'candidate-pair' && entry.nominated && entry.state === 'succeeded') selected = entry; });
      const remote = selected && stats.get(selected.remoteCandidateId);
      return remote ? { address: remote.address, type: remote.candidateType } : null;
    });
    assert.deepEqual(pair, { address: '10.99.0.1', type: 'host' }, 'media flows over the LAN link to the camera\'s host candidate');

    // The second camera on the LAN (started by lan-test.sh) is linked, by its mDNS name.
    const neighbour = JSON.parse(readFileSync(join(process.env.LAN_NEIGHBOUR_STATE, 'identity.json'), 'utf8'));
    await page.waitForSelector('#nearby:not([hidden]) a', { timeout: 10000 });
    const links = await page.$$eval('#nearby a', (as) => as.map((a) => [a.textContent, a.getAttribute('href')]));
    assert.deepEqual(links, [[`Lookout ${neighbour.device_id}`, `https://${neighbour.hostname}.local:8444/`]],
      'the page links to the other camera and to no other');
    console.log('timeline', JSON.stringify(await page.evaluate(() => window.lookout.timeline)));
  } finally {
    await browser.close();
  }
});
