// Soak benchmark (not part of scripts/test.sh): 4 viewers join and leave
// every 10 s while the camera's source stalls every 5 minutes (the debug
// build's `--camera fault:stall@N/N`). At the end, the lookout process's
// RSS, thread count and open file descriptors are compared with where they
// were after the first minute (within 5 % passes), and every round must
// have seen video. Samples are taken away from restarts (15 s after) and
// with nobody watching (see settle()). Figures in docs/performance.md.
//
//   node soak.mjs [--minutes 30] [--fault-every-s 300] [--resolution 1280x720] [--fps 30]
//
// Run it in a network namespace with only loopback, as the browser tests:
//   unshare -n sh -c 'ip link set lo up && ip route add default dev lo && node soak.mjs'
import { readdirSync, readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { launchBrowser, openViewer, startLookout, waitForVideo } from './harness.mjs';

const { values } = parseArgs({
  options: {
    minutes: { type: 'string', default: '30' },
    'fault-every-s': { type: 'string', default: '300' },
    resolution: { type: 'string', default: '1280x720' },
    fps: { type: 'string', default: '30' },
  },
});
const minutes = Number(values.minutes);
const fps = Number(values.fps);
const [width, height] = values.resolution.split('x').map(Number);
const faultFrames = Number(values['fault-every-s']) * fps;
const VIEWERS = 4;
const ROUND_MS = 10000;

function sample(pid) {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const field = (name) => Number(new RegExp(`^${name}:\\s+(\\d+)`, 'm').exec(status)[1]);
  return {
    rssKiB: field('VmRSS'), anonKiB: field('RssAnon'), fileKiB: field('RssFile'),
    threads: field('Threads'), fds: readdirSync(`/proc/${pid}/fd`).length,
  };
}

const camera = await startLookout({
  camera: `fault:stall@${faultFrames}/${faultFrames}`,
  args: ['--resolution', values.resolution, '--fps', values.fps, '--max-viewers', String(VIEWERS)],
});
const browser = await launchBrowser();
const api = await browser.newContext({ ignoreHTTPSErrors: true });
const infoUrl = camera.url('').replace(/\/$/, '') + '/api/info';
// A keep-alive connection the server closes just as a request goes out is
// reset (an ordinary HTTP/1.1 race): a GET is retried, up to 3 times.
const getInfo = async () => {
  for (let attempt = 1; ; attempt += 1) {
    try {
      return JSON.parse(await (await api.request.get(infoUrl)).text());
    } catch (error) {
      if (attempt >= 3) throw error;
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
  }
};
const pid = camera.child.pid;
// Samples are taken only 15 s or more after the latest restart: an
// abandoned worker keeps its encoder for the 10 s its call hangs.
const QUIET_MS = 15000;
let restartsSeen = 0;
let lastRestartAt = 0;
async function quiet() {
  const total = (await getInfo()).camera.restarts.total;
  if (total !== restartsSeen) { restartsSeen = total; lastRestartAt = Date.now(); }
  return Date.now() - lastRestartAt >= QUIET_MS;
}
// Samples are comparable only at the same point of a round: after the
// viewers left and their connections closed (viewers and streaming both 0
// in /api/info), and after the camera's idle trim (1 s of nobody watching).
const SETTLE_MS = 1500;
async function settle() {
  const deadline = Date.now() + 10000;
  for (;;) {
    const info = await getInfo();
    if ((info.viewers === 0 && info.camera.streaming === 0) || Date.now() > deadline) break;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  await new Promise((resolve) => setTimeout(resolve, SETTLE_MS));
}
const started = Date.now();
let baseline = null;
const rounds = [];
const perMinute = []; // [minute, rssKiB, anonKiB, fileKiB, threads, fds]
try {
  while (Date.now() - started < minutes * 60000) {
    const roundStart = Date.now();
    const pages = await Promise.all(Array.from({ length: VIEWERS }, () => openViewer(browser, camera.url())));
    const results = await Promise.all(pages.map(async (page) => {
      try {
        await waitForVideo(page, { width, height, timeout: ROUND_MS - 1500 });
        return true;
      } catch (_) {
        return false;
      }
    }));
    await Promise.all(pages.map((page) => page.context().close()));
    rounds.push({ at: Math.round((roundStart - started) / 1000), sawVideo: results.filter(Boolean).length });
    const calm = await quiet();
    const minute = Math.floor((Date.now() - started) / 60000);
    const wantBaseline = !baseline && Date.now() - started >= 60000;
    if (calm && (wantBaseline || minute >= perMinute.length)) {
      await settle();
      const now = sample(pid);
      if (wantBaseline) baseline = now;
      perMinute.push([minute, now.rssKiB, now.anonKiB, now.fileKiB, now.threads, now.fds]);
    }
    const left = ROUND_MS - (Date.now() - roundStart);
    if (left > 0) await new Promise((resolve) => setTimeout(resolve, left));
  }
  // Let the last leaves settle, and any restart pass, before the final sample.
  await new Promise((resolve) => setTimeout(resolve, 3000));
  while (!(await quiet())) await new Promise((resolve) => setTimeout(resolve, 1000));
  await settle();
  const end = sample(pid);
  baseline ||= end;
  const info = await getInfo();
  const ratio = (key) => end[key] / baseline[key];
  const failed = rounds.filter((round) => round.sawVideo < VIEWERS);
  const summary = {
    minutes, resolution: values.resolution, fps, viewersPerRound: VIEWERS, rounds: rounds.length,
    roundsWithoutVideoForEveryViewer: failed, baselineAfter1Min: baseline, end,
    ratios: {
      rss: ratio('rssKiB').toFixed(3), anon: ratio('anonKiB').toFixed(3), file: ratio('fileKiB').toFixed(3),
      threads: ratio('threads').toFixed(3), fds: ratio('fds').toFixed(3),
    },
    restarts: info.camera.restarts, viewersAtEnd: { viewers: info.viewers, streaming: info.camera.streaming },
    perMinute: perMinute.map((row) => row.join(' ')),
  };
  console.log(JSON.stringify(summary, null, 2));
  const within = ['rssKiB', 'threads', 'fds'].every((key) => ratio(key) <= 1.05);
  console.log(within && failed.length === 0 ? 'soak: PASS' : 'soak: FAIL');
  process.exitCode = within && failed.length === 0 ? 0 : 1;
} finally {
  await browser.close();
  await camera.stop();
}
