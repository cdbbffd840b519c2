#!/usr/bin/env node
// A TCP proxy on loopback that delays every byte by DELAY_MS in each direction, keeping order: a stand-in for a
// slow link between a client and a server in benchmarks (bench/smb-latency.js). Not a bandwidth limit.
// Usage: node scripts/latency-proxy.js TARGET_PORT DELAY_MS   (prints "listening PORT" once ready; stops on SIGTERM)
//
// It also reads the SMB2 traffic it forwards (direct TCP framing, [MS-SMB2] 2.1) and, when a client's connection
// ends, prints one JSON line `{"requests": {...}, "waits": {...}, "waited": N}` on stdout:
//   requests: frames the client sent, by command chain ("CREATE+QUERY_INFO+CLOSE" for a compound);
//   waits: of those, the ones sent while no earlier request was still unanswered, by command chain: each such frame
//     starts a round trip nobody overlapped with it, so `waited` x (2 x DELAY_MS) is the latency the link added.
// Encrypted frames (transform header) show as "encrypted"; their replies cannot be matched, so count them apart.
import * as net from 'node:net';

const [targetPort, delayMs] = process.argv.slice(2).map(Number);
if (!targetPort || !(delayMs >= 0)) {
  console.error('usage: latency-proxy.js TARGET_PORT DELAY_MS');
  process.exit(2);
}

const NAMES = ['NEGOTIATE', 'SESSION_SETUP', 'LOGOFF', 'TREE_CONNECT', 'TREE_DISCONNECT', 'CREATE', 'CLOSE', 'FLUSH', 'READ', 'WRITE', 'LOCK', 'IOCTL', 'CANCEL', 'ECHO', 'QUERY_DIRECTORY', 'CHANGE_NOTIFY', 'QUERY_INFO', 'SET_INFO', 'OPLOCK_BREAK'];
const STATUS_PENDING = 0x103;
const FLAG_ASYNC = 0x2;

/** Calls `onFrame` with each whole direct-TCP frame (without its 4-byte length) found in the chunks pushed. */
function framer(onFrame) {
  let held = Buffer.alloc(0);
  return (chunk) => {
    held = held.length ? Buffer.concat([held, chunk]) : chunk;
    while (held.length >= 4) {
      const len = held.readUInt32BE(0) & 0xffffff;
      if (held.length < 4 + len) break;
      onFrame(held.subarray(4, 4 + len));
      held = held.subarray(4 + len);
    }
  };
}

/** The SMB2 headers of a plain frame, in chain order: command, status, flags; null for an encrypted frame. */
function headers(frame) {
  if (frame.length >= 4 && frame.readUInt32LE(0) === 0x424d53fd) return null;
  const out = [];
  for (let off = 0; off + 64 <= frame.length; ) {
    out.push({ command: frame.readUInt16LE(off + 12), status: frame.readUInt32LE(off + 8), flags: frame.readUInt32LE(off + 16) });
    const next = frame.readUInt32LE(off + 20);
    if (!next) break;
    off += next;
  }
  return out;
}

/** Counts one client connection's requests, and the ones that waited alone, as described at the top. */
function counter() {
  const requests = {};
  const waits = {};
  let outstanding = 0;
  let waited = 0;
  const add = (m, k) => (m[k] = (m[k] ?? 0) + 1);
  return {
    request(frame) {
      const hs = headers(frame);
      const key = hs ? hs.map((h) => NAMES[h.command] ?? `0x${h.command.toString(16)}`).join('+') : 'encrypted';
      add(requests, key);
      if (!hs) return;
      if (outstanding === 0) {
        add(waits, key);
        waited++;
      }
      outstanding += hs.length;
    },
    reply(frame) {
      // Interim replies (STATUS_PENDING, async) announce a final reply still to come.
      for (const h of headers(frame) ?? []) if (!(h.status === STATUS_PENDING && h.flags & FLAG_ASYNC)) outstanding = Math.max(0, outstanding - 1);
    },
    report: () => JSON.stringify({ requests, waits, waited }),
  };
}

/**
 * Forwards `from` to `to`, each chunk DELAY_MS after it arrived, never reordered; `arrived`/`delivered` see each chunk.
 * The chunks wait in one queue drained by one timer: a timer per chunk may fire out of order (Node orders timers of
 * different durations due at the same moment as it likes), and a reordered byte stream stalled the SMB connection.
 */
function delayed(from, to, { arrived = () => {}, delivered = () => {} } = {}) {
  const queue = [];
  let timer = null;
  let ended = false;
  const drain = () => {
    timer = null;
    const now = performance.now();
    while (queue.length && queue[0].due <= now) {
      const { chunk } = queue.shift();
      delivered(chunk);
      to.write(chunk);
    }
    if (queue.length) timer = setTimeout(drain, queue[0].due - now);
    else if (ended) to.end();
  };
  from.on('data', (chunk) => {
    arrived(chunk);
    queue.push({ due: performance.now() + delayMs, chunk });
    timer ??= setTimeout(drain, delayMs);
  });
  from.on('end', () => {
    ended = true;
    timer ??= setTimeout(drain, 0);
  });
  from.on('error', () => to.destroy());
}

const server = net.createServer({ noDelay: true }, (client) => {
  const upstream = net.connect({ host: '127.0.0.1', port: targetPort, noDelay: true });
  const count = counter();
  // Requests count as they leave the client and replies as they reach it: the client's own view of the link.
  delayed(client, upstream, { arrived: framer((f) => count.request(f)) });
  delayed(upstream, client, { delivered: framer((f) => count.reply(f)) });
  let reported = false;
  const report = () => {
    if (!reported) console.log(count.report());
    reported = true;
  };
  upstream.on('close', () => {
    report();
    client.destroy();
  });
  client.on('close', () => {
    report();
    upstream.destroy();
  });
});
server.listen(0, '127.0.0.1', () => console.log(`listening ${server.address().port}`));
process.on('SIGTERM', () => process.exit(0));
