/**
 * A tiny HTTP server for tests that records what arrives (request head, body bytes, how many body bytes came
 * before the response) and answers as told: like XAPI (200 first, then read to the end), like a plain server
 * (read Content-Length, then 200), with an error status, a redirect, an early close, or a GET body.
 */
import * as net from 'node:net';
import * as tls from 'node:tls';

/** One request as received. */
export interface Recorded {
  method: string;
  target: string;
  headers: Record<string, string>;
  body: Buffer;
  /** Body bytes that had arrived when the response head was sent. */
  bodyBeforeResponse: number;
}

/** How to answer. */
export type Behaviour =
  | { kind: 'xapi' }
  | { kind: 'plain' }
  | { kind: 'status'; status: number; reason: string; html?: string }
  | { kind: 'redirect'; location: string }
  | { kind: 'close-after'; bytes: number }
  | { kind: 'get'; body: Buffer; contentLength: boolean; cutAt?: number };

/** A running recorder. */
export interface Recorder {
  port: number;
  requests: Recorded[];
  behaviour: Behaviour;
  close(): Promise<void>;
}

/** Starts a recorder on `host` (default 127.0.0.1; any 127.x.y.z is another loopback host), TLS when `tlsOptions` is given. */
export async function startRecorder(behaviour: Behaviour, tlsOptions?: tls.TlsOptions, host = '127.0.0.1'): Promise<Recorder> {
  const rec: Recorder = { port: 0, requests: [], behaviour, close: async () => {} };
  const sockets = new Set<net.Socket>();
  const handle = (socket: net.Socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => {});
    let buf = Buffer.alloc(0);
    let req: Recorded | null = null;
    let bodyParts: Buffer[] = [];
    let got = 0;
    let finished = false;
    const finish = (head: string, body: Buffer | string = '') => {
      if (finished) return;
      finished = true;
      socket.end(Buffer.concat([Buffer.from(head), Buffer.from(body)]));
    };
    socket.on('data', (d: Buffer) => {
      if (!req) {
        buf = Buffer.concat([buf, d]);
        const end = buf.indexOf('\r\n\r\n');
        if (end < 0) return;
        const [line, ...lines] = buf.toString('latin1', 0, end).split('\r\n');
        const [method, target] = line.split(' ');
        const headers: Record<string, string> = {};
        for (const l of lines) headers[l.slice(0, l.indexOf(':')).toLowerCase()] = l.slice(l.indexOf(':') + 1).trim();
        req = { method, target, headers, body: Buffer.alloc(0), bodyBeforeResponse: 0 };
        rec.requests.push(req);
        const rest = buf.subarray(end + 4);
        bodyParts = rest.length ? [rest] : [];
        got = rest.length;
        req.bodyBeforeResponse = got;
        respondToHead();
      } else {
        bodyParts.push(d);
        got += d.length;
      }
      req.body = Buffer.concat(bodyParts);
      afterData();
    });
    socket.on('end', () => {
      if (req) req.body = Buffer.concat(bodyParts);
      if (rec.behaviour.kind === 'xapi' || rec.behaviour.kind === 'close-after') finish('');
    });
    const respondToHead = () => {
      const b = rec.behaviour;
      if (b.kind === 'xapi' || b.kind === 'close-after') socket.write('HTTP/1.1 200 OK\r\nConnection: close\r\nCache-Control: no-cache, no-store\r\ntask-id: OpaqueRef:test\r\n\r\n');
      else if (b.kind === 'status') finish(`HTTP/1.1 ${b.status} ${b.reason}\r\nConnection: close\r\nContent-Type: text/html\r\n\r\n`, b.html ?? '');
      else if (b.kind === 'redirect') finish(`HTTP/1.1 302 Found\r\nLocation: ${b.location}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`);
      else if (b.kind === 'get') {
        const body = b.cutAt !== undefined ? b.body.subarray(0, b.cutAt) : b.body;
        const cl = b.contentLength ? `Content-Length: ${b.body.length}\r\n` : '';
        finish(`HTTP/1.1 200 OK\r\nConnection: close\r\n${cl}\r\n`, body);
      }
    };
    const afterData = () => {
      const b = rec.behaviour;
      if (b.kind === 'plain' && req && got >= Number(req.headers['content-length'] ?? 0)) finish('HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n');
      if (b.kind === 'close-after' && got >= b.bytes) {
        finished = true;
        socket.destroy();
      }
    };
  };
  const server = tlsOptions ? tls.createServer(tlsOptions, handle) : net.createServer(handle);
  await new Promise<void>((resolve) => server.listen(0, host, resolve));
  rec.port = (server.address() as net.AddressInfo).port;
  rec.close = () =>
    new Promise<void>((resolve) => {
      for (const s of sockets) s.destroy();
      server.close(() => resolve());
    });
  return rec;
}
