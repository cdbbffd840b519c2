#!/usr/bin/env node
// A TCP proxy on loopback that delays every byte by DELAY_MS in each direction, keeping order: a stand-in for a
// slow link between a client and a server in benchmarks (bench/smb-latency.js). Not a bandwidth limit.
// Usage: node scripts/latency-proxy.js TARGET_PORT DELAY_MS   (prints "listening PORT" once ready; stops on SIGTERM)
import * as net from 'node:net';

const [targetPort, delayMs] = process.argv.slice(2).map(Number);
if (!targetPort || !(delayMs >= 0)) {
  console.error('usage: latency-proxy.js TARGET_PORT DELAY_MS');
  process.exit(2);
}

/** Forwards `from` to `to`, each chunk DELAY_MS after it arrived, never reordered. */
function delayed(from, to) {
  let last = 0;
  from.on('data', (chunk) => {
    const due = Math.max(Date.now() + delayMs, last);
    last = due;
    setTimeout(() => to.write(chunk), due - Date.now());
  });
  from.on('end', () => setTimeout(() => to.end(), Math.max(0, last - Date.now()) + 1));
  from.on('error', () => to.destroy());
}

const server = net.createServer({ noDelay: true }, (client) => {
  const upstream = net.connect({ host: '127.0.0.1', port: targetPort, noDelay: true });
  delayed(client, upstream);
  delayed(upstream, client);
  upstream.on('close', () => client.destroy());
  client.on('close', () => upstream.destroy());
});
server.listen(0, '127.0.0.1', () => console.log(`listening ${server.address().port}`));
process.on('SIGTERM', () => process.exit(0));
