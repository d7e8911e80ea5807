// Latency benchmark (figures, not a test): what a person sees.
//
// 1. Navigation in a fresh browser context (a fresh profile: no cache, no
//    cookies, no storage) to the first presented frame, median of 10, each
//    run after the camera sat idle (nobody watching) for a while, with the
//    time broken down on both sides: the page's navigation timing, the
//    signaling messages and the peer connection's states (recorded by an
//    init script, so the viewer page is measured as shipped), and the
//    camera's own marks from its log (`first-frame` events, debug level).
// 2. Latency over 60 s: every presented frame's capture time is read from
//    the test pattern's timestamp strip (docs/test-pattern.md) at the moment
//    Chromium presents it; printed per second (median/max), with the
//    overall median, p90, creep (median of the last 10 s minus that of
//    seconds 2-10) and presented fps.
//
// At 1280x720@30 and 1920x1080@30. Run through scripts/bench.sh (release
// build, its own network namespace). Environment: BENCH_RUNS (first-frame
// runs, default 10), BENCH_SECONDS (time series, default 60), BENCH_IDLE_MS
// (idle time before each first-frame run, default 2500), BENCH_ONLY
// (`720p` or `1080p`), BENCH_ARGS (more `lookout` options, split at spaces,
// e.g. `--encoder-threads 1`).
import { launchBrowser, startLookout } from './harness.mjs';

const RUNS = Number(process.env.BENCH_RUNS || 10);
const SECONDS = Number(process.env.BENCH_SECONDS || 60);
const IDLE_MS = Number(process.env.BENCH_IDLE_MS || 2500);
const ONLY = process.env.BENCH_ONLY || '';
const EXTRA_ARGS = (process.env.BENCH_ARGS || '').split(' ').filter(Boolean);

function quantile(values, q) {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.round((sorted.length - 1) * q)];
}

const median = (values) => quantile(values, 0.5);
const fmt = (v) => (Number.isFinite(v) ? v.toFixed(0) : '-');
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// Runs in the page before its own scripts: timestamps (ms since navigation
// start) of the signaling and WebRTC milestones, and the first presented
// frame with its strip latency.
function instrument() {
  const marks = {};
  const mark = (name) => { if (!(name in marks)) marks[name] = performance.now(); };
  window.__bench = { marks };
  const NativeWebSocket = window.WebSocket;
  window.WebSocket = class extends NativeWebSocket {
    constructor(...args) {
      super(...args);
      mark('ws-created');
      this.addEventListener('open', () => mark('ws-open'));
      this.addEventListener('message', (event) => {
        try {
          const text = typeof event.data === 'string' ? event.data : new TextDecoder().decode(event.data);
          const message = JSON.parse(text);
          const what = message.type === 'Room/Signal' ? `signal-${message.signal && (message.signal.type || (message.signal.candidate ? 'candidate' : 'other'))}` : message.type;
          mark(`recv-${what}`);
        } catch (_) { /* not ours to judge */ }
      });
      const send = this.send.bind(this);
      this.send = (data) => {
        try {
          const text = typeof data === 'string' ? data : new TextDecoder().decode(data);
          const message = JSON.parse(text);
          const what = message.type === 'Signal' ? `signal-${message.signal && (message.signal.type || (message.signal.candidate ? 'candidate' : 'other'))}` : message.type;
          mark(`send-${what}`);
        } catch (_) { /* ignore */ }
        return send(data);
      };
    }
  };
  const NativePeerConnection = window.RTCPeerConnection;
  window.RTCPeerConnection = class extends NativePeerConnection {
    constructor(...args) {
      super(...args);
      mark('pc-created');
      this.addEventListener('iceconnectionstatechange', () => mark(`ice-${this.iceConnectionState}`));
      this.addEventListener('connectionstatechange', () => mark(`pc-${this.connectionState}`));
      this.addEventListener('track', () => mark('track'));
    }
  };
  document.addEventListener('DOMContentLoaded', () => {
    mark('dom-content-loaded');
    const video = document.getElementById('video');
    if (!video) return;
    video.addEventListener('loadedmetadata', () => mark('video-metadata'));
    video.addEventListener('playing', () => mark('video-playing'));
    video.requestVideoFrameCallback((now, meta) => {
      mark('first-frame');
      window.__bench.firstFrame = {
        now,
        receiveTime: meta.receiveTime,
        presentationTime: meta.presentationTime,
        processingDuration: meta.processingDuration,
      };
      window.__bench.firstFrameWallMs = performance.timeOrigin + now;
    });
  });
}

/** Reads the timestamp strip of the frame just presented (see harness.readStrip). */
function stripReader() {
  window.__readStrip = (video, canvas) => {
    canvas.width = video.videoWidth;
    canvas.height = 16;
    const context = canvas.getContext('2d', { willReadFrequently: true });
    context.drawImage(video, 0, 0, video.videoWidth, 16, 0, 0, video.videoWidth, 16);
    const pixels = context.getImageData(0, 0, canvas.width, 16).data;
    let value = 0n;
    for (let bit = 0; bit < 48; bit += 1) {
      const offset = (8 * canvas.width + bit * 12 + 6) * 4;
      value = (value << 1n) | (pixels[offset + 1] > 125 ? 1n : 0n);
    }
    return Number(value);
  };
}

/** The camera's own `bench` marks from its log, as wall-clock ms. */
function cameraMarks(log, sinceWallMs) {
  const marks = {};
  for (const line of log.split('\n')) {
    const match = /(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z).*?lookout::bench: bench: (\S+)/.exec(line.replace(/\x1b\[[0-9;]*m/g, ''));
    if (!match) continue;
    const at = Date.parse(match[1]);
    const fraction = /\.(\d+)Z/.exec(match[1])[1];
    const wall = at - (at % 1000) + Number(`0.${fraction}`) * 1000;
    if (wall >= sinceWallMs && !(match[2] in marks)) {
      marks[match[2]] = wall;
      const bytes = / bytes=(\d+)/.exec(line);
      if (bytes) marks[`${match[2]} bytes`] = Number(bytes[1]);
    }
  }
  return marks;
}

async function firstFrames(browser, lookout, label) {
  const runs = [];
  for (let run = 0; run < RUNS; run += 1) {
    await sleep(IDLE_MS); // the camera is idle: nobody watches
    const context = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1280, height: 800 } });
    const page = await context.newPage();
    await page.addInitScript(instrument);
    await page.addInitScript(stripReader);
    await page.goto(lookout.url());
    await page.waitForFunction(() => window.__bench && window.__bench.firstFrame, null, { timeout: 20000, polling: 20 });
    // The first frame's own latency (its strip), read right away.
    const result = await page.evaluate(() => {
      const nav = performance.getEntriesByType('navigation')[0];
      const scripts = performance.getEntriesByType('resource').map((r) => [r.name.replace(/^.*\//, ''), r.startTime, r.responseEnd]);
      return {
        origin: performance.timeOrigin,
        marks: window.__bench.marks,
        first: window.__bench.firstFrame,
        nav: {
          'tcp-connect': nav.connectStart, 'tls-start': nav.secureConnectionStart, 'tls-done': nav.connectEnd,
          'html-request': nav.requestStart, 'html-first-byte': nav.responseStart, 'html-done': nav.responseEnd,
          'dom-interactive': nav.domInteractive,
        },
        resources: scripts,
      };
    });
    const camera = cameraMarks(lookout.log(), result.origin);
    for (const [name, wall] of Object.entries(camera)) {
      if (name.endsWith(' bytes')) result.firstFrameBytes = wall;
      else result.marks[`camera:${name}`] = wall - result.origin;
    }
    runs.push(result);
    await context.close();
  }
  const firsts = runs.map((r) => r.first.now);
  console.log(`${label}: navigation -> first presented frame, fresh context after ${IDLE_MS} ms idle: median ${fmt(median(firsts))} ms, min ${fmt(Math.min(...firsts))}, max ${fmt(Math.max(...firsts))} (n=${runs.length}): ${firsts.map(fmt).join(' ')}`);
  // The breakdown: the median time of each milestone, in order.
  const all = new Map();
  for (const r of runs) {
    const entries = { ...r.nav, ...r.marks };
    for (const [name, startTime, end] of r.resources) {
      entries[`${name}-request`] = startTime;
      entries[`${name}-done`] = end;
    }
    for (const [name, at] of Object.entries(entries)) {
      if (typeof at !== 'number' || at <= 0) continue;
      if (!all.has(name)) all.set(name, []);
      all.get(name).push(at);
    }
  }
  const rows = [...all.entries()].map(([name, values]) => [name, median(values), values.length]).sort((a, b) => a[1] - b[1]);
  console.log(`${label}: first-frame breakdown (median ms since navigation start; camera: = the camera's log, same clock)`);
  let previous = 0;
  for (const [name, at, n] of rows) {
    console.log(`  ${fmt(at).padStart(5)}  (+${fmt(at - previous).padStart(3)})  ${name}${n < runs.length ? ` [${n}/${runs.length} runs]` : ''}`);
    previous = at;
  }
  const sizes = runs.map((r) => r.firstFrameBytes).filter(Boolean);
  if (sizes.length) console.log(`  first frame sent (a keyframe): median ${fmt(median(sizes) / 1000)} kB`);
  return runs;
}

async function timeSeries(browser, lookout, label, seconds) {
  const context = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1280, height: 800 } });
  const page = await context.newPage();
  await page.addInitScript(stripReader);
  await page.goto(lookout.url());
  const { samples, unreadable, presented } = await page.evaluate((duration) => new Promise((resolve) => {
    const canvas = document.createElement('canvas');
    const samples = [];
    const video = document.getElementById('video');
    let startedAt = null;
    // requestVideoFrameCallback runs at most once per page rendering, so a
    // callback can stand for more than one presented frame: the frame rate
    // comes from the browser's own count (presentedFrames), not from the
    // callbacks.
    let presented = null;
    const onFrame = (now, metadata) => {
      const shownAt = Date.now();
      presented ??= { first: metadata.presentedFrames, firstAt: shownAt };
      presented.last = metadata.presentedFrames;
      presented.lastAt = shownAt;
      const captured = window.__readStrip(video, canvas);
      if (startedAt === null) startedAt = shownAt;
      // A strip that does not read as a time within a minute of now (a frame
      // not yet drawable) is counted, not averaged.
      if (Math.abs(shownAt - captured) < 60000) samples.push([shownAt - startedAt, shownAt - captured]);
      else samples.unreadable = (samples.unreadable || 0) + 1;
      if (shownAt - startedAt < duration * 1000) video.requestVideoFrameCallback(onFrame);
      else resolve({ samples, unreadable: samples.unreadable || 0, presented });
    };
    video.requestVideoFrameCallback(onFrame);
  }), seconds);
  await context.close();
  const perSecond = [];
  for (const [t, latency] of samples) {
    const second = Math.floor(t / 1000);
    (perSecond[second] ||= []).push(latency);
  }
  const cells = perSecond.map((values, second) => `${second}s:${fmt(median(values))}/${fmt(Math.max(...values))}`);
  console.log(`${label}: latency per second since the first frame, median/max ms:`);
  for (let i = 0; i < cells.length; i += 10) console.log(`  ${cells.slice(i, i + 10).join(' ')}`);
  const latencies = samples.map(([, latency]) => latency);
  const afterFirst = samples.slice(1).filter(([t]) => t < 1000).map(([, latency]) => latency);
  const early = samples.filter(([t]) => t >= 2000 && t < 10000).map(([, l]) => l);
  const late = samples.filter(([t]) => t >= (seconds - 10) * 1000).map(([, l]) => l);
  const elapsed = samples[samples.length - 1][0] / 1000;
  const fps = (presented.last - presented.first) / ((presented.lastAt - presented.firstAt) / 1000);
  const readFps = (samples.length - 1) / elapsed;
  console.log(`${label}: over ${seconds} s: median ${fmt(median(latencies))} ms, p90 ${fmt(quantile(latencies, 0.9))} ms, max ${fmt(Math.max(...latencies))} ms, presented ${fps.toFixed(1)} fps (strip read on ${readFps.toFixed(1)} a second)`);
  if (unreadable) console.log(`${label}: ${unreadable} presented frames had no readable strip (left out)`);
  console.log(`${label}: first frame ${fmt(samples[0][1])} ms; worst frame after it in the first second ${fmt(Math.max(...afterFirst))} ms (target < 80); creep: last 10 s median ${fmt(median(late))} - seconds 2-10 median ${fmt(median(early))} = ${fmt(median(late) - median(early))} ms (target within 5)`);
}

const configs = [
  { label: '720p30', args: ['--resolution', '1280x720', '--fps', '30'] },
  { label: '1080p30', args: ['--resolution', '1920x1080', '--fps', '30', '--bitrate', '4000'] },
].filter((c) => !ONLY || c.label.startsWith(ONLY));

const browser = await launchBrowser();
try {
  console.log(`lookout latency benchmark (${process.env.LOOKOUT_BIN || 'target/debug/lookout'}), Chromium on loopback`);
  for (const config of configs) {
    const lookout = await startLookout({ args: [...config.args, ...EXTRA_ARGS, '--log', 'info,lookout::bench=debug'] });
    try {
      await firstFrames(browser, lookout, config.label);
      await sleep(IDLE_MS);
      await timeSeries(browser, lookout, config.label, SECONDS);
    } finally {
      await lookout.stop();
    }
  }
} finally {
  await browser.close();
}
