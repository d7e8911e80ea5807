// The attack of hostile.test.mjs, run as its own process (at a lower CPU
// priority: on a real LAN the attacker's CPU is its own device's, here it
// shares the test machine's cores with the camera and the viewer).
//
// Strangers (never join) open a fresh WebSocket for each malformed,
// oversized or out-of-order message and check the error and close code the
// protocol promises (docs/protocol.md); insiders (household devices gone
// bad: they know the secret) join and misbehave. The parent steers it over
// IPC: {type:'open', strangers, insiders} starts an attack window with those
// quotas of messages spread over WINDOW_MS; {type:'close'} ends it and is
// answered with {type:'idle', sent, connections} once nothing is in flight;
// {type:'finish'} is answered with {type:'result', tally} and the exit.
//
// usage (by the test): node hostile-attacker.mjs ADDRESS SECRET WINDOW_MS
import { randomBytes } from 'node:crypto';
import { OPCODE, frame, openSignaling } from './rawsocket.mjs';

const [address, secret, windowArg] = process.argv.slice(2);
const WINDOW_MS = Number(windowArg);
/** Attackers that never join: a fresh connection for each malformed message. */
const STRANGERS = 16;
/** Household devices gone bad: they know the secret, join, then misbehave. */
const INSIDERS = 2;

const sleep = (ms) => new Promise((resolve) => { setTimeout(resolve, ms); });

/**
 * Lets attackers send only inside an attack window, spread evenly over it:
 * `take(n)` resolves to true when `n` more messages are due, false once the
 * attack is over; `done()` after each connection, `idle()` waits for all.
 */
class Pacer {
  constructor() { this.window = null; this.over = false; this.inFlight = 0; }
  open(quota) { this.window = { start: Date.now(), quota, issued: 0 }; }
  close() { this.window = null; }
  finish() { this.over = true; }
  async take(n) {
    for (;;) {
      if (this.over) return false;
      const window = this.window;
      if (window && window.issued < window.quota) {
        const due = window.start + (window.issued / window.quota) * WINDOW_MS;
        if (Date.now() >= due) {
          window.issued += n;
          this.inFlight += 1;
          return true;
        }
        await sleep(Math.min(due - Date.now(), 20));
      } else {
        await sleep(10);
      }
    }
  }
  done() { this.inFlight -= 1; }
  async idle() { while (this.inFlight > 0) await sleep(5); }
}

const hex = (bytes) => randomBytes(bytes).toString('hex');
const nested = (depth) => '['.repeat(depth) + ']'.repeat(depth);

/**
 * What a stranger sends on a fresh connection (after Hello), and the error
 * and close code the protocol promises for it (docs/protocol.md).
 */
const STRANGER_MESSAGES = [
  { kind: 'truncated JSON', bytes: () => frame(OPCODE.text, '{"type":"JoinOrCreate",'), code: 'invalid-json', close: 1007 },
  { kind: 'binary non-UTF-8', bytes: () => frame(OPCODE.binary, Buffer.from([0xff, 0xfe, 0x00, 0x7b])), code: 'invalid-json', close: 1007 },
  { kind: 'text frame not UTF-8', bytes: () => frame(OPCODE.text, Buffer.from([0x7b, 0xc3, 0x28, 0x7d])), code: 'invalid-json', close: 1007 },
  { kind: 'not an object', bytes: () => frame(OPCODE.text, '[1,2,3]'), code: 'invalid-message', close: 1008 },
  { kind: 'field missing', bytes: () => frame(OPCODE.text, '{"type":"JoinOrCreate"}'), code: 'invalid-message', close: 1008 },
  { kind: 'room_id nested 30,000 deep', bytes: () => frame(OPCODE.text, `{"type":"JoinOrCreate","room_id":${nested(30000)}}`), code: 'invalid-message', close: 1008 },
  { kind: 'unknown type', bytes: () => frame(OPCODE.text, '{"type":"Subscribe","topic":"*"}'), code: 'unknown-type', close: 1008 },
  { kind: 'server message', bytes: () => frame(OPCODE.text, `{"type":"Joined","room_id":"${hex(32)}","clients":[]}`), code: 'server-message', close: 1008 },
  { kind: 'bad room ID', bytes: () => frame(OPCODE.text, '{"type":"JoinOrCreate","room_id":"../../etc/passwd"}'), code: 'invalid-room-id', close: 1008 },
  { kind: 'Signal before joining', bytes: () => frame(OPCODE.text, '{"type":"Signal","signal":{"type":"offer","sdp":"v=0"}}'), code: 'not-joined', close: 1008 },
  { kind: 'wrong secret', bytes: () => frame(OPCODE.text, `{"type":"JoinOrCreate","room_id":"${hex(32)}"}`), code: ['unknown-room', 'too-many-attempts'], close: [1008, 1013] },
  { kind: '70,000-byte message', bytes: () => frame(OPCODE.text, `{"type":"JoinOrCreate","room_id":"${'a'.repeat(69950)}"}`), code: 'message-too-large', close: 1009 },
  { kind: 'frame declaring 2^40 bytes', bytes: () => frame(OPCODE.binary, Buffer.alloc(0), { length: 2 ** 40 }), code: 'message-too-large', close: 1009 },
  { kind: 'fragments over 64 KiB', bytes: () => Buffer.concat([frame(OPCODE.text, 'x'.repeat(40000), { fin: false }), frame(OPCODE.continuation, 'x'.repeat(40000))]), code: 'message-too-large', close: 1009 },
  { kind: 'reserved opcode', bytes: () => frame(0x3, '{}'), code: 'invalid-frame', close: 1002 },
  { kind: 'reserved bits', bytes: () => frame(OPCODE.text, '{}', { rsv: 4 }), code: 'invalid-frame', close: 1002 },
  { kind: 'unmasked frame', bytes: () => frame(OPCODE.text, '{}', { mask: false }), code: 'invalid-frame', close: 1002 },
  { kind: 'continuation first', bytes: () => frame(OPCODE.continuation, '{}'), code: 'invalid-frame', close: 1002 },
  { kind: 'new message inside a fragmented one', bytes: () => Buffer.concat([frame(OPCODE.text, '{"type":', { fin: false }), frame(OPCODE.text, '{}')]), code: 'invalid-frame', close: 1002 },
  { kind: 'fragmented ping', bytes: () => frame(OPCODE.ping, 'x', { fin: false }), code: 'invalid-frame', close: 1002 },
];

const expected = (value, got) => (Array.isArray(value) ? value.includes(got) : value === got);

/** Counts of what the attack sent and what came back, for the test's output. */
class Tally {
  constructor() { this.sent = 0; this.connections = 0; this.insiderConnections = 0; this.replies = {}; this.wrong = []; }
  reply(label) { this.replies[label] = (this.replies[label] ?? 0) + 1; }
  mismatch(kind, got) { if (this.wrong.length < 20) this.wrong.push(`${kind}: ${JSON.stringify(got)}`); }
}

/** A stranger: a fresh connection for every malformed message; checks the error and the close code. */
async function stranger(address, localAddress, tally, pacer) {
  for (let n = 0; await pacer.take(1); n += 1) {
    const message = STRANGER_MESSAGES[(n * 7 + Number(localAddress.split('.')[3])) % STRANGER_MESSAGES.length];
    let socket;
    try {
      socket = await openSignaling(address, { localAddress });
    } catch (error) {
      tally.mismatch('upgrade', String(error));
      pacer.done();
      continue;
    }
    tally.connections += 1;
    try {
      const hello = await socket.next();
      if (hello.json?.type !== 'Hello') { tally.mismatch(`${message.kind} (Hello)`, hello); continue; }
      socket.write(message.bytes());
      tally.sent += 1;
      const error = await socket.next();
      const closed = await socket.next();
      if (error.json?.type === 'Error' && expected(message.code, error.json.code)
        && expected(message.close, closed.close) && closed.reason === error.json.code) {
        tally.reply(`${error.json.code} ${closed.close}`);
      } else {
        tally.mismatch(message.kind, [error, closed]);
      }
    } finally {
      socket.destroy();
      pacer.done();
    }
  }
}

/**
 * An insider: joins with the secret, then sends non-fatal errors (Signal
 * to nobody, a signal nested too deep), fake offers and candidates to every
 * member (the viewer must trust only the camera), garbage answers and ICE
 * restart requests over and over to the camera, and ends with an
 * out-of-order second JoinOrCreate or a burst over the rate limit.
 */
async function insider(address, localAddress, secret, tally, pacer) {
  for (let n = 0; await pacer.take(100); n += 1) {
    let socket;
    try {
      socket = await openSignaling(address, { localAddress });
    } catch (error) {
      tally.mismatch('upgrade', String(error));
      pacer.done();
      continue;
    }
    tally.connections += 1;
    tally.insiderConnections += 1;
    try {
      await socket.next(); // Hello
      socket.sendText(`{"type":"JoinOrCreate","room_id":"${secret}"}`);
      tally.sent += 1;
      const joined = await socket.nextReply();
      if (joined.json?.type !== 'Joined') { tally.mismatch('insider join', joined); continue; }
      const expectedErrors = [];
      for (let i = 0; i < 95; i += 1) {
        switch (i % 6) {
          case 0:
            socket.sendText(`{"type":"Signal","to":"${hex(16)}","signal":{"candidate":"candidate:1 1 udp 1 10.0.0.1 9 typ host"}}`);
            expectedErrors.push('unknown-peer');
            break;
          case 1:
            socket.sendText(`{"type":"Signal","signal":${i % 3 ? nested(40) : nested(30000)}}`);
            expectedErrors.push('signal-too-deep');
            break;
          case 2: // To every member: the viewer must ignore it (only the camera is trusted).
            socket.sendText('{"type":"Signal","signal":{"type":"offer","sdp":"v=0\\r\\no=- 0 0 IN IP4 0.0.0.0\\r\\n"}}');
            break;
          case 3:
            socket.sendText(`{"type":"Signal","signal":{"candidate":"candidate:1 1 udp 2122260223 127.0.0.1 ${1024 + i} typ host","sdpMid":"0","sdpMLineIndex":0}}`);
            break;
          case 4:
            socket.sendText(`{"type":"Signal","signal":{"type":"answer","sdp":"${'garbage '.repeat(50)}"}}`);
            break;
          default: // Over and over: the camera restarts ICE at most once a second.
            socket.sendText(`{"type":"Signal","to":"${joined.json.camera}","signal":{"type":"restart-ice"}}`);
        }
        tally.sent += 1;
      }
      for (const code of expectedErrors) {
        const reply = await socket.nextReply();
        if (reply.json?.type === 'Error' && reply.json.code === code) tally.reply(`${code} (not fatal)`);
        else tally.mismatch(`insider ${code}`, reply);
      }
      let code;
      if (n % 2 === 0) {
        socket.sendText(`{"type":"JoinOrCreate","room_id":"${secret}"}`);
        tally.sent += 1;
        code = 'already-joined';
      } else {
        // Over the burst of 100: the messages after it are not read.
        const burst = Array.from({ length: 20 }, () => frame(OPCODE.text, '{"type":"Signal","signal":{}}'));
        socket.write(Buffer.concat(burst));
        tally.sent += burst.length;
        code = 'rate-limited';
      }
      const error = await socket.nextReply();
      const closed = await socket.nextReply();
      if (error.json?.code === code && closed.close === 1008 && closed.reason === code) tally.reply(`${code} 1008`);
      else tally.mismatch(`insider ${code}`, [error, closed]);
    } finally {
      socket.destroy();
      pacer.done();
    }
  }
}

const tally = new Tally();
const [strangers, insiders] = [new Pacer(), new Pacer()];
const attackers = Promise.all([
  ...Array.from({ length: STRANGERS }, (_, n) => stranger(address, `127.0.3.${n + 1}`, tally, strangers)),
  ...Array.from({ length: INSIDERS }, (_, n) => insider(address, `127.0.4.${n + 1}`, secret, tally, insiders)),
]);

// The test ended (or failed) without 'finish': stop with it.
process.on('disconnect', () => process.exit(0));

process.on('message', async (command) => {
  if (command.type === 'open') {
    strangers.open(command.strangers);
    insiders.open(command.insiders);
  } else if (command.type === 'close') {
    strangers.close();
    insiders.close();
    await Promise.all([strangers.idle(), insiders.idle()]);
    process.send({ type: 'idle', sent: tally.sent, connections: tally.connections });
  } else if (command.type === 'finish') {
    strangers.finish();
    insiders.finish();
    await attackers;
    process.send({ type: 'result', tally: { ...tally, strangers: STRANGERS, insiders: INSIDERS } }, () => process.exit(0));
  }
});
