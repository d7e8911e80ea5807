// The settings file's problems on the viewer page: the real lookout binary
// starts with a settings file holding a typo'd key and a bad value; the
// camera still streams (with the defaults for those keys), and the page
// shows a notice naming file, line and key (from /api/info), inside the
// screen of a small phone without sideways scrolling; OK dismisses it.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { launchBrowser, openViewer, startLookout, waitForVideo } from './harness.mjs';

let browser;
let lookout;
let dir;
let file;

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'lookout-settings-'));
  file = join(dir, 'settings.toml');
  writeFileSync(file, '# a camera on a shelf\nmax_viewers = 6\nfps = "fast"\nmax-room-clients = 3\n');
  browser = await launchBrowser();
  lookout = await startLookout({ args: ['--resolution', '640x480', '--config', file] });
});

after(async () => {
  await browser?.close();
  await lookout?.stop();
  rmSync(dir, { recursive: true, force: true });
});

test('a typo in the settings file: the camera streams and the page names file, line and key', async () => {
  const page = await openViewer(browser, lookout.url());
  await waitForVideo(page, { width: 640, height: 480 });
  const notice = page.locator('#settings-notice');
  await notice.waitFor({ state: 'visible', timeout: 10000 });
  const items = await page.locator('#settings-problems li').allTextContents();
  assert.equal(items.length, 2, JSON.stringify(items));
  assert.ok(items[0].startsWith(`${file}:2 max_viewers: unknown setting (did you mean max-viewers?`), items[0]);
  assert.ok(items[1].startsWith(`${file}:3 fps: invalid value 'fast'`), items[1]);
  await page.locator('#btn-settings-notice').click();
  await notice.waitFor({ state: 'hidden', timeout: 2000 });
  await page.context().close();
});

test('the notice fits a 320x568 phone screen without sideways scrolling', async () => {
  const context = await browser.newContext({
    ignoreHTTPSErrors: true, viewport: { width: 320, height: 568 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true,
  });
  const page = await context.newPage();
  await page.goto(lookout.url());
  const notice = page.locator('#settings-notice');
  await notice.waitFor({ state: 'visible', timeout: 10000 });
  const view = await page.evaluate(() => {
    const box = document.getElementById('settings-notice').getBoundingClientRect();
    const button = document.getElementById('btn-settings-notice').getBoundingClientRect();
    return {
      box: { left: box.left, top: box.top, right: box.right, bottom: box.bottom },
      button: { width: button.width, height: button.height },
      scrollWidth: Math.max(document.documentElement.scrollWidth, document.body.scrollWidth),
    };
  });
  assert.ok(view.box.left >= 0 && view.box.right <= 320 && view.box.top >= 0 && view.box.bottom <= 568, JSON.stringify(view));
  assert.ok(view.scrollWidth <= 320, `no sideways scrolling (${view.scrollWidth} px)`);
  assert.ok(view.button.height >= 44, `OK is a 44 px target: ${JSON.stringify(view.button)}`);
  await context.close();
});
