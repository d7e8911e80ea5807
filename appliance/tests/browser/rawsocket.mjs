// A raw WebSocket client (RFC 6455) over TLS for the attacks of the hostile
// tests: it writes any frame, well-formed or not (reserved bits and
// opcodes, unmasked frames, stray continuation frames, oversized lengths),
// and reads what the server answers frame by frame. Node's own WebSocket
// cannot send a malformed frame, so the tests use this instead.
import { randomBytes } from 'node:crypto';
import { connect } from 'node:tls';

export const OPCODE = { continuation: 0x0, text: 0x1, binary: 0x2, close: 0x8, ping: 0x9, pong: 0xa };

/** One frame as bytes. `mask: false` makes the unmasked frame a client must not send. */
export function frame(opcode, payload = Buffer.alloc(0), { fin = true, rsv = 0, mask = true, length } = {}) {
  const data = Buffer.isBuffer(payload) ? payload : Buffer.from(payload);
  const declared = length ?? data.length;
  let header;
  if (declared < 126) {
    header = Buffer.from([0, declared]);
  } else if (declared < 65536) {
    header = Buffer.alloc(4);
    header.writeUInt16BE(declared, 2);
    header[1] = 126;
  } else {
    header = Buffer.alloc(10);
    header.writeBigUInt64BE(BigInt(declared), 2);
    header[1] = 127;
  }
  header[0] = (fin ? 0x80 : 0) | ((rsv & 7) << 4) | (opcode & 0xf);
  if (!mask) return Buffer.concat([header, data]);
  header[1] |= 0x80;
  const key = randomBytes(4);
  const masked = Buffer.from(data);
  for (let i = 0; i < masked.length; i += 1) masked[i] ^= key[i % 4];
  return Buffer.concat([header, key, masked]);
}

/**
 * Opens a WebSocket to `/signal` of `address` ("host:port") from
 * `localAddress`. Resolves to a connection once the server answered the
 * upgrade with 101; rejects with the status line otherwise, or after
 * `timeout` ms.
 */
export function openSignaling(address, { localAddress, origin, timeout = 10000 } = {}) {
  const split = address.lastIndexOf(':');
  const host = address.slice(0, split).replace(/^\[|\]$/g, '');
  const port = Number(address.slice(split + 1));
  return new Promise((resolve, reject) => {
    const socket = connect({ host, port, localAddress, rejectUnauthorized: false, ALPNProtocols: ['http/1.1'] });
    let buffer = Buffer.alloc(0);
    let upgraded = false;
    const timer = setTimeout(() => fail(new Error(`no upgrade within ${timeout} ms`)), timeout);
    const fail = (error) => { clearTimeout(timer); if (!upgraded) { socket.destroy(); reject(error); } };
    socket.once('secureConnect', () => {
      socket.write(`GET /signal HTTP/1.1\r\nHost: ${address}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n`
        + `Sec-WebSocket-Key: ${randomBytes(16).toString('base64')}\r\nSec-WebSocket-Version: 13\r\n`
        + `${origin ? `Origin: ${origin}\r\n` : ''}\r\n`);
    });
    socket.on('error', fail);
    socket.on('close', () => fail(new Error('closed before the upgrade')));
    const onData = (chunk) => {
      buffer = Buffer.concat([buffer, chunk]);
      const end = buffer.indexOf('\r\n\r\n');
      if (end < 0) return;
      const status = buffer.subarray(0, buffer.indexOf('\r\n')).toString();
      socket.off('data', onData);
      if (!status.startsWith('HTTP/1.1 101')) { fail(new Error(`upgrade refused: ${status}`)); return; }
      upgraded = true;
      clearTimeout(timer);
      resolve(new RawSignaling(socket, buffer.subarray(end + 4)));
    };
    socket.on('data', onData);
  });
}

/** An upgraded connection: write frames, read the server's frames in order. */
export class RawSignaling {
  constructor(socket, rest) {
    this.socket = socket;
    this.buffer = Buffer.alloc(0);
    this.frames = [];
    this.waiting = null;
    this.ended = false;
    socket.removeAllListeners('error');
    socket.removeAllListeners('close');
    socket.on('data', (chunk) => this.#push(chunk));
    socket.on('error', () => {});
    socket.on('close', () => { this.ended = true; this.#wake(); });
    if (rest.length) this.#push(rest);
  }

  #push(chunk) {
    this.buffer = Buffer.concat([this.buffer, chunk]);
    for (;;) {
      if (this.buffer.length < 2) break;
      let length = this.buffer[1] & 0x7f;
      let offset = 2;
      if (length === 126) {
        if (this.buffer.length < 4) break;
        length = this.buffer.readUInt16BE(2);
        offset = 4;
      } else if (length === 127) {
        if (this.buffer.length < 10) break;
        length = Number(this.buffer.readBigUInt64BE(2));
        offset = 10;
      }
      if (this.buffer.length < offset + length) break;
      this.frames.push({ opcode: this.buffer[0] & 0xf, payload: this.buffer.subarray(offset, offset + length) });
      this.buffer = this.buffer.subarray(offset + length);
    }
    this.#wake();
  }

  #wake() {
    if (this.waiting) { const wake = this.waiting; this.waiting = null; wake(); }
  }

  /** Writes raw bytes (one or more frames). */
  write(bytes) {
    if (!this.socket.destroyed) this.socket.write(bytes);
  }

  /** Sends one masked text frame holding `text`. */
  sendText(text) {
    this.write(frame(OPCODE.text, text));
  }

  /**
   * The next message from the server: `{ json }` for a data frame,
   * `{ close: code, reason }` for a close frame, `{ end: true }` when the TCP
   * connection ended without one, `{ timeout: true }` after `ms`.
   * Pings are answered and skipped.
   */
  async next(ms = 10000) {
    const deadline = Date.now() + ms;
    for (;;) {
      const next = this.frames.shift();
      if (next) {
        if (next.opcode === OPCODE.ping) { this.write(frame(OPCODE.pong, next.payload)); continue; }
        if (next.opcode === OPCODE.close) {
          const code = next.payload.length >= 2 ? next.payload.readUInt16BE(0) : null;
          return { close: code, reason: next.payload.subarray(2).toString() };
        }
        try {
          return { json: JSON.parse(next.payload.toString()) };
        } catch {
          return { invalid: next.payload.toString() };
        }
      }
      if (this.ended) return { end: true };
      const left = deadline - Date.now();
      if (left <= 0) return { timeout: true };
      await new Promise((resolve) => {
        const timer = setTimeout(() => { this.waiting = null; resolve(); }, left);
        this.waiting = () => { clearTimeout(timer); resolve(); };
      });
    }
  }

  /** The next server message that is not a `Room/…` relay or announcement. */
  async nextReply(ms = 10000) {
    for (;;) {
      const message = await this.next(ms);
      if (!(message.json && String(message.json.type).startsWith('Room/'))) return message;
    }
  }

  destroy() {
    this.socket.destroy();
  }
}
