// Browser benchmark (figures, not a test): runs lookout and Chromium on
// loopback and prints medians and p90s. Run through scripts/bench.sh, which
// builds the release binary and isolates the run in a network namespace.
import { readFileSync } from 'node:fs';
import { launchBrowser, measureFps, openViewer, readStrip, startLookout, waitForVideo } from './harness.mjs';

const RUNS = Number(process.env.BENCH_RUNS || 10);

function quantile(values, q) {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.round((sorted.length - 1) * q)];
}

function summary(name, values, unit) {
  const fmt = (v) => (Math.abs(v) >= 100 ? v.toFixed(0) : v.toFixed(1));
  console.log(`${name.padEnd(44)} median ${fmt(quantile(values, 0.5))} ${unit}, p90 ${fmt(quantile(values, 0.9))} ${unit} (n=${values.length})`);
}

/** CPU seconds (user+system) and RSS in MB of a process, from /proc. */
function processUsage(pid) {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const ticks = Number(fields[11]) + Number(fields[12]);
  const rssKb = Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))[1]);
  return { cpuSeconds: ticks / 100, rssMb: rssKb / 1024 };
}

async function cpuOver(pid, ms) {
  const before = processUsage(pid);
  const started = Date.now();
  await new Promise((resolve) => setTimeout(resolve, ms));
  const after = processUsage(pid);
  return { cpuPercent: (100 * (after.cpuSeconds - before.cpuSeconds)) / ((Date.now() - started) / 1000), rssMb: after.rssMb };
}

async function firstFrameTimes(browser, lookout) {
  const times = [];
  for (let run = 0; run < RUNS; run += 1) {
    const context = await browser.newContext({ ignoreHTTPSErrors: true });
    const page = await context.newPage();
    await page.addInitScript(() => {
      window.__firstFrame = new Promise((resolve) => {
        document.addEventListener('DOMContentLoaded', () => {
          const video = document.getElementById('video');
          video.requestVideoFrameCallback((now) => resolve(now));
        });
      });
    });
    await page.goto(lookout.url());
    times.push(await page.evaluate(() => window.__firstFrame));
    await context.close();
  }
  return times;
}

async function latencies(page, samples) {
  const values = [];
  for (let i = 0; i < samples; i += 1) {
    const [captured, shown] = await readStrip(page);
    values.push(shown - captured);
  }
  return values;
}

const browser = await launchBrowser();
try {
  console.log(`lookout browser benchmark (${process.env.LOOKOUT_BIN || 'target/debug/lookout'}), Chromium on loopback`);

  const hd = await startLookout({ args: ['--resolution', '1280x720', '--fps', '30'] });
  try {
    summary('page load -> first decoded frame, 720p30', await firstFrameTimes(browser, hd), 'ms');
    const page = await openViewer(browser, hd.url());
    await waitForVideo(page, { width: 1280, height: 720 });
    summary('capture -> display latency, 720p30', await latencies(page, 150), 'ms');
    const fps = [];
    for (let i = 0; i < 5; i += 1) fps.push(await measureFps(page, 2000));
    summary('presented fps, 720p30 (2 s windows)', fps, 'fps');
    await page.waitForTimeout(2000);
    const one = await cpuOver(hd.child.pid, 10000);
    const more = [];
    for (let i = 0; i < 3; i += 1) {
      const extra = await openViewer(browser, hd.url());
      await waitForVideo(extra, { width: 1280, height: 720 });
      more.push(extra);
    }
    await page.waitForTimeout(2000);
    const four = await cpuOver(hd.child.pid, 10000);
    console.log(`${'lookout CPU and RSS, 720p30, 1 viewer'.padEnd(44)} ${one.cpuPercent.toFixed(1)} % of one core, RSS ${one.rssMb.toFixed(1)} MB`);
    console.log(`${'lookout CPU and RSS, 720p30, 4 viewers'.padEnd(44)} ${four.cpuPercent.toFixed(1)} % of one core, RSS ${four.rssMb.toFixed(1)} MB`);
    console.log(`${'CPU ratio 4 viewers / 1 viewer'.padEnd(44)} ${(four.cpuPercent / one.cpuPercent).toFixed(2)}`);
    for (const extra of more) await extra.context().close();
    await page.context().close();
  } finally {
    await hd.stop();
  }

  const fullHd = await startLookout({ args: ['--resolution', '1920x1080', '--fps', '30', '--bitrate', '4000'] });
  try {
    const page = await openViewer(browser, fullHd.url());
    await waitForVideo(page, { width: 1920, height: 1080 });
    await page.waitForTimeout(2000);
    const fps = [];
    for (let i = 0; i < 10; i += 1) fps.push(await measureFps(page, 2000));
    summary('presented fps, 1080p30 (2 s windows)', fps, 'fps');
    summary('capture -> display latency, 1080p30', await latencies(page, 60), 'ms');
    await page.context().close();
  } finally {
    await fullHd.stop();
  }
} finally {
  await browser.close();
}
