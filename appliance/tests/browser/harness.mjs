// Test harness: runs the real `lookout` binary on 127.0.0.1 and drives
// Debian's Chromium (headless) with playwright-core.
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

export const LOOKOUT_BIN = process.env.LOOKOUT_BIN || new URL('../../../target/debug/lookout', import.meta.url).pathname;
export const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';

export const CHROMIUM_ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--ignore-certificate-errors',
  '--allow-loopback-in-peer-connection', '--disable-features=WebRtcHideLocalIpsWithMdns',
  '--autoplay-policy=no-user-gesture-required', '--disable-background-networking',
  '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-quic',
];

/** A free TCP port on 127.0.0.1. */
export async function freePort() {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/** Starts lookout; resolves once it logs its address. */
export async function startLookout({ stateDir, port = 0, camera = 'test-pattern', args = [] } = {}) {
  const dir = stateDir || mkdtempSync(join(tmpdir(), 'lookout-state-'));
  const child = spawn(LOOKOUT_BIN, [
    '--listen', `127.0.0.1:${port}`, '--state-dir', dir,
    '--camera', camera, '--webrtc-bind', '127.0.0.1', '--no-webrtc-mdns',
    ...args,
  ], { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, NO_COLOR: '1' } });
  let log = '';
  const address = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`lookout did not start:\n${log}`)), 60000);
    child.stderr.on('data', (chunk) => {
      log += chunk;
      const match = /serving HTTPS and signaling.*?addr=(\S+)/.exec(log.replace(/\x1b\[[0-9;]*m/g, ''));
      if (match) { clearTimeout(timer); resolve(match[1]); }
    });
    child.once('exit', (code) => { clearTimeout(timer); reject(new Error(`lookout exited (${code}):\n${log}`)); });
  });
  const identity = JSON.parse(readFileSync(join(dir, 'identity.json'), 'utf8'));
  return {
    child, dir, address, secret: identity.room_secret,
    url: (fragment = `#room=${identity.room_secret}`) => `https://${address}/${fragment}`,
    log: () => log,
    async stop({ keepState = false } = {}) {
      if (child.exitCode === null) {
        const exited = new Promise((resolve) => child.once('exit', resolve));
        child.kill('SIGTERM');
        await exited;
      }
      if (!keepState) rmSync(dir, { recursive: true, force: true });
    },
  };
}

export async function launchBrowser() {
  return chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS, headless: true });
}

/** Opens `url` in a new context; `onPage(page)` runs before the page loads (e.g. to watch its WebSockets). */
export async function openViewer(browser, url, { onPage } = {}) {
  const context = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1280, height: 800 } });
  const page = await context.newPage();
  page.on('console', (message) => { if (message.type() === 'error') console.error('[page]', message.text()); });
  onPage?.(page);
  await page.goto(url);
  return page;
}

/** Waits until the video element shows decoded frames of the given size. */
export async function waitForVideo(page, { width, height, timeout = 20000 }) {
  await page.waitForFunction(([w, h]) => {
    const video = document.getElementById('video');
    return video && video.videoWidth === w && video.videoHeight === h && video.currentTime > 0;
  }, [width, height], { timeout, polling: 100 });
}

/** Counts presented frames over `ms` with requestVideoFrameCallback. */
export async function measureFps(page, ms) {
  return page.evaluate((duration) => new Promise((resolve) => {
    const video = document.getElementById('video');
    let frames = 0;
    const start = performance.now();
    const onFrame = (now) => {
      frames += 1;
      if (now - start < duration) video.requestVideoFrameCallback(onFrame);
      else resolve(frames / ((now - start) / 1000));
    };
    video.requestVideoFrameCallback(onFrame);
  }), ms);
}

/**
 * Reads the test pattern's timestamp strip from the current video frame
 * (48 bits, MSB first, 12x16 px blocks from x=0; see docs/test-pattern.md)
 * and returns [captureMs, nowMs].
 */
export async function readStrip(page) {
  return page.evaluate(() => new Promise((resolve) => {
    const video = document.getElementById('video');
    video.requestVideoFrameCallback(() => {
      const canvas = document.createElement('canvas');
      canvas.width = video.videoWidth;
      canvas.height = 16;
      const context = canvas.getContext('2d', { willReadFrequently: true });
      context.drawImage(video, 0, 0, video.videoWidth, 16, 0, 0, video.videoWidth, 16);
      const pixels = context.getImageData(0, 0, canvas.width, 16).data;
      // The time after the pixels are read: drawImage takes the frame the
      // element shows at that moment, which after a stall of this page's
      // main thread (a loaded machine) is a newer one than the callback's.
      // Read before, the newer frame's capture time came out 60 ms after
      // "now" (a CI run of layers.test.mjs at 15 fps); read after, the
      // figure is an upper bound of the frame's latency, never negative.
      const now = Date.now();
      let value = 0n;
      for (let bit = 0; bit < 48; bit += 1) {
        const offset = (8 * canvas.width + bit * 12 + 6) * 4;
        value = (value << 1n) | (pixels[offset + 1] > 125 ? 1n : 0n);
      }
      resolve([Number(value), now]);
    });
  }));
}

/** The viewer's inbound video RTP statistics (getStats), or null before there are any. */
export async function inboundVideoStats(page) {
  return page.evaluate(async () => {
    let found = null;
    (await window.lookout.pc.getStats()).forEach((s) => {
      if (s.type === 'inbound-rtp' && s.kind === 'video') found = s;
    });
    return found;
  });
}
