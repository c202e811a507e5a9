// chunkd's WebSocket transport and static files, driven by a third-party
// WebSocket client (the `ws` npm package) against a real chunkd on the test
// stack: the handshake, a whole upload with its SHA-256, fragmentation,
// ping/pong, the close handshake, and each protocol error with its close code.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import net from 'node:net';

import { Chunkd, createUser, requirePackage, tidy, tmpDir } from './harness.mjs';

const WebSocket = requirePackage('ws');

let server;
let user;

before(async () => {
  server = new Chunkd(tmpDir('ws-client'));
  await server.start(0);
  user = await createUser('wsclient');
});

after(async () => {
  if (server.proc) await server.stop(); // the last test stops it; this is for a failure
  tidy(server.dir);
});

// A client that keeps every text message as parsed JSON, in order.
function connect(opts = {}) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(server.wsUrl, opts);
    const c = { ws, inbox: [], waiters: [], pongs: [], closed: null };
    c.closedP = new Promise((res) => {
      ws.on('close', (code, reason) => {
        c.closed = { code, reason: reason.toString() };
        for (const w of c.waiters.splice(0)) w(null);
        res(c.closed);
      });
    });
    ws.on('message', (data, isBinary) => {
      assert.equal(isBinary, false, 'the server sends only text messages');
      const text = data.toString();
      assert.ok(!text.endsWith('\n'), 'answers carry no trailing newline');
      const msg = JSON.parse(text);
      const w = c.waiters.shift();
      if (w) w(msg);
      else c.inbox.push(msg);
    });
    ws.on('pong', (data) => c.pongs.push(data.toString()));
    ws.on('open', () => resolve(c));
    ws.on('error', (e) => {
      if (ws.readyState === WebSocket.CONNECTING) reject(e);
    });
  });
}

function next(c, timeoutMs = 10000) {
  if (c.inbox.length) return Promise.resolve(c.inbox.shift());
  if (c.closed) return Promise.resolve(null);
  return new Promise((res, rej) => {
    const t = setTimeout(() => rej(new Error('no answer within the time limit')), timeoutMs);
    c.waiters.push((m) => {
      clearTimeout(t);
      res(m);
    });
  });
}

async function req(c, obj) {
  c.ws.send(JSON.stringify(obj));
  return next(c);
}

function withTimeout(p, ms, what) {
  return Promise.race([p, new Promise((_, rej) => setTimeout(() => rej(new Error(what)), ms))]);
}

const auth = () => ({ user_id: user.user_id, credential: user.credential });

async function signedIn() {
  const c = await connect();
  const a = await req(c, { action: 'list', limit: 1, ...auth() });
  assert.equal(a.status, 'ok');
  return c;
}

async function expectClose(c, code) {
  const closed = await withTimeout(c.closedP, 10000, `no close ${code}`);
  assert.equal(closed.code, code, `closed with ${closed.code} (${closed.reason})`);
  return closed;
}

// Raw HTTP over a socket: fetch() would normalise paths like /../x.
function rawHttp(text) {
  return new Promise((resolve, reject) => {
    // Half-closed after the request: chunkd answers what it got, then closes.
    const s = net.connect(server.port, '127.0.0.1', () => s.end(text, 'latin1'));
    const parts = [];
    s.on('data', (d) => parts.push(d));
    s.on('end', () => resolve(Buffer.concat(parts).toString('latin1')));
    s.on('error', reject);
    s.setTimeout(10000, () => reject(new Error('no HTTP answer')));
  });
}

test('handshake: 101 with the right Sec-WebSocket-Accept', async () => {
  const key = randomBytes(16).toString('base64');
  const ans = await rawHttp(`GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n` +
    `Connection: Upgrade\r\nSec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n\r\n` +
    // a close frame right behind the head: frames may follow it at once
    '\x88\x82\x00\x00\x00\x00\x03\xe8');
  assert.match(ans, /^HTTP\/1\.1 101 Switching Protocols\r\n/);
  const accept = createHash('sha1').update(key + '258EAFA5-E914-47DA-95CA-C5AB0DC85B11')
    .digest('base64');
  assert.ok(ans.includes(`\r\nSec-WebSocket-Accept: ${accept}\r\n`));
  assert.ok(ans.endsWith('\x88\x02\x03\xe8'), 'the close frame is echoed with 1000');
  // ws checks the accept value itself and fails the connection if wrong
  const c = await connect();
  c.ws.close(1000, 'bye');
  await expectClose(c, 1000);
});

test('handshake refusals: no upgrade, wrong version, bad key', async () => {
  let ans = await rawHttp('GET /ws HTTP/1.1\r\nHost: x\r\n\r\n');
  assert.match(ans, /^HTTP\/1\.1 426 /);
  assert.match(ans, /\r\nUpgrade: websocket\r\n/);
  ans = await rawHttp('GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: upgrade\r\n' +
    'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n');
  assert.match(ans, /^HTTP\/1\.1 426 /);
  assert.match(ans, /\r\nSec-WebSocket-Version: 13\r\n/);
  ans = await rawHttp('GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: upgrade\r\n' +
    'Sec-WebSocket-Key: short\r\nSec-WebSocket-Version: 13\r\n\r\n');
  assert.match(ans, /^HTTP\/1\.1 400 /);
});

test('static files: the page, types, and nothing outside web_root', async () => {
  const r = await fetch(`${server.url}/`);
  assert.equal(r.status, 200);
  assert.equal(r.headers.get('content-type'), 'text/html; charset=utf-8');
  assert.match(r.headers.get('content-security-policy'), /default-src 'self'/);
  assert.equal(r.headers.get('x-content-type-options'), 'nosniff');
  assert.match(await r.text(), /<title>chunkd/);
  const js = await fetch(`${server.url}/sha256.js`);
  assert.equal(js.headers.get('content-type'), 'text/javascript; charset=utf-8');
  const head = await fetch(`${server.url}/app.css`, { method: 'HEAD' });
  assert.equal(head.status, 200);
  assert.ok(Number(head.headers.get('content-length')) > 0);
  assert.equal((await fetch(`${server.url}/missing.html`)).status, 404);
  for (const path of ['/../CMakeLists.txt', '/../src/main.c', '/..%2fCMakeLists.txt',
    '/.hidden.js', '//etc/passwd']) {
    const ans = await rawHttp(`GET ${path} HTTP/1.1\r\nHost: x\r\n\r\n`);
    assert.match(ans, /^HTTP\/1\.1 404 /, path);
  }
  assert.match(await rawHttp('POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n'),
    /^HTTP\/1\.1 400 |^\{/, 'POST is not HTTP to chunkd: it goes to the line protocol');
  assert.match(await rawHttp('GET / HTTP/1.1\r\n\r\n'), /^HTTP\/1\.1 400 /);
  // The line protocol on the same port is untouched.
  const line = await new Promise((resolve, reject) => {
    const s = net.connect(server.port, '127.0.0.1', () => s.write('{"action":"nope"}\n'));
    s.once('data', (d) => {
      resolve(d.toString());
      s.destroy();
    });
    s.on('error', reject);
  });
  assert.equal(JSON.parse(line).reason, 'unknown_action');
});

test('an answer to HEAD has no body, errors included', async () => {
  for (const [path, status] of [['/missing.js', 404], ['/ws', 405], ['/app.css', 200]]) {
    const ans = await rawHttp(`HEAD ${path} HTTP/1.1\r\nHost: x\r\n\r\n`);
    assert.match(ans, new RegExp(`^HTTP/1\\.1 ${status} `), path);
    const end = ans.indexOf('\r\n\r\n');
    assert.ok(end > 0, `${path}: a whole head`);
    assert.equal(ans.length, end + 4, `${path}: nothing after the head: ${JSON.stringify(ans)}`);
    assert.match(ans, /\r\nContent-Length: [1-9]/, `${path}: the length a GET would get`);
  }
  // bad requests that got as far as their method
  const huge = `HEAD / HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(9000)}\r\n\r\n`;
  for (const [req, status] of [[`HEAD / HTTP/1.1\r\n\r\n`, 400], [huge, 431]]) {
    const ans = await rawHttp(req);
    assert.match(ans, new RegExp(`^HTTP/1\\.1 ${status} `), `${status}`);
    const end = ans.indexOf('\r\n\r\n');
    assert.ok(end > 0, `${status}: a whole head`);
    assert.equal(ans.length, end + 4, `${status}: nothing after the head: ${JSON.stringify(ans)}`);
  }
});

test('an upload over WebSocket, with fragmented messages, ends with the right SHA-256', async () => {
  const size = 3 * 1024 * 1024 + 12345;
  const data = randomBytes(size);
  const sha = createHash('sha256').update(data).digest('hex');
  const c = await connect();
  // A request split over two text frames is one request.
  c.ws.send('{"action":"upload","filename":"ws-upload.bin",', { fin: false });
  c.ws.send(JSON.stringify({ filesize: size, sha256: sha, ...auth() }).replace(/^\{/, ''),
    { fin: true });
  const up = await next(c);
  assert.equal(up.status, 'ok', JSON.stringify(up));
  const id = up.document_id;
  const chunk = up.max_chunk_size;
  let off = 0;
  let n = 0;
  const sent = [];
  // Pipelined: every chunk goes out before any answer is read. The first
  // is sent as a fragmented binary message, the second as two binary
  // messages; the rest as one message each.
  while (off < size) {
    const len = Math.min(chunk, size - off);
    const body = data.subarray(off, off + len);
    c.ws.send(JSON.stringify({ action: 'chunk', document_id: id, offset: off, length: len }));
    if (n === 0) {
      c.ws.send(body.subarray(0, 1000), { binary: true, fin: false });
      c.ws.ping('in-between');
      c.ws.send(body.subarray(1000), { binary: true, fin: true });
    } else if (n === 1) {
      c.ws.send(body.subarray(0, 5), { binary: true });
      c.ws.send(body.subarray(5), { binary: true });
    } else {
      c.ws.send(body, { binary: true });
    }
    off += len;
    n++;
    sent.push(off);
  }
  for (const end of sent) {
    const p = await next(c);
    assert.equal(p.event, 'progress', JSON.stringify(p));
    assert.equal(p.received, end);
    assert.equal(p.total, size);
  }
  const done = await req(c, { action: 'upload_complete', document_id: id });
  assert.equal(done.status, 'SUCCESS', JSON.stringify(done));
  assert.equal(done.sha256, sha);
  const st = await req(c, { action: 'status', document_id: id });
  assert.equal(st.document.status, 'completed');
  assert.equal(st.document.sha256, sha);
  assert.deepEqual(c.pongs, ['in-between']);
  c.ws.close(1000);
  await expectClose(c, 1000);
});

// A masked client frame with a 16-bit length, as a browser sends it.
function maskedFrame(opcode, payload) {
  assert.ok(payload.length >= 126 && payload.length < 65536);
  const mask = randomBytes(4);
  const head = Buffer.from([0x80 | opcode, 0x80 | 126, payload.length >> 8, payload.length & 0xff]);
  const body = Buffer.from(payload);
  for (let i = 0; i < body.length; i++) body[i] ^= mask[i % 4];
  return Buffer.concat([head, mask, body]);
}

const written = (sock, bytes) => new Promise((res) => sock.write(bytes, res));
const sleep = (ms) => new Promise((res) => setTimeout(res, ms));

// While a chunk's bytes stream, chunkd reads them into its worker's buffer
// and keeps only what is left over: here the first bytes of the next
// frame's head, which arrive apart from the rest (written under ws, with
// pauses so that each piece is read on its own).
test('binary frames whose heads arrive in pieces, in the middle of a chunk', async () => {
  const part = 60000;
  const size = 4 * part;
  const data = randomBytes(size);
  const sha = createHash('sha256').update(data).digest('hex');
  const c = await signedIn();
  const up = await req(c, { action: 'upload', filename: 'split-heads.bin', filesize: size, sha256: sha });
  assert.equal(up.status, 'ok', JSON.stringify(up));
  const id = up.document_id;
  await new Promise((res, rej) => c.ws.send(
    JSON.stringify({ action: 'chunk', document_id: id, offset: 0, length: size }),
    (e) => (e ? rej(e) : res())));
  const sock = c.ws._socket;
  sock.setNoDelay(true);
  for (let i = 0; i < 4; i++) {
    const frame = maskedFrame(0x2, data.subarray(i * part, (i + 1) * part));
    // the head is 8 bytes: 1, then 5, then the rest with the payload
    await written(sock, frame.subarray(0, 1));
    await sleep(40);
    await written(sock, frame.subarray(1, 6));
    await sleep(40);
    await written(sock, frame.subarray(6));
  }
  const p = await next(c);
  assert.equal(p.event, 'progress', JSON.stringify(p));
  assert.equal(p.received, size);
  const done = await req(c, { action: 'upload_complete', document_id: id });
  assert.equal(done.status, 'SUCCESS', JSON.stringify(done));
  assert.equal(done.sha256, sha);
  c.ws.close(1000);
  await expectClose(c, 1000);
});

test('the same validation and errors as on TCP, connection kept open', async () => {
  const c = await signedIn();
  let a = await req(c, { action: 'upload', filename: '../x', filesize: 1 });
  assert.equal(a.code, 400);
  assert.equal(a.reason, 'invalid_filename');
  a = await req(c, { action: 'upload', filename: 'big', filesize: 1e12 });
  assert.equal(a.code, 413);
  assert.equal(a.reason, 'file_too_large');
  c.ws.send('not json');
  a = await next(c);
  assert.equal(a.reason, 'malformed_json');
  // A text message of empty fragments is an empty request.
  c.ws.send('', { fin: false });
  c.ws.send('', { fin: true });
  a = await next(c);
  assert.equal(a.reason, 'malformed_json');
  // A chunk for nothing open: its bytes are still taken and dropped.
  c.ws.send(JSON.stringify({ action: 'chunk', document_id: 99999999, offset: 0, length: 3 }));
  c.ws.send(Buffer.from('abc'), { binary: true });
  a = await next(c);
  assert.equal(a.reason, 'upload_not_open');
  a = await req(c, { action: 'list', limit: 1 });
  assert.equal(a.status, 'ok');
  assert.equal(c.closed, null);
  c.ws.close();
  await expectClose(c, 1000);
});

test('a wrong credential: 401, then close 1008', async () => {
  const c = await connect();
  const a = await req(c, { action: 'list', user_id: user.user_id, credential: 'wrong' });
  assert.equal(a.code, 401);
  assert.equal(a.reason, 'unauthorized');
  const closed = await expectClose(c, 1008);
  assert.equal(closed.reason, 'unauthorized');
});

// An upload's credential is checked with the other uploads of its loop
// turn, after the request was parked: the close frame must follow all the
// same, not a bare end of the connection (1006).
test('an upload with a wrong credential: 401, then close 1008', async () => {
  const c = await connect();
  const a = await req(c, {
    action: 'upload', filename: 'x.bin', filesize: 1, user_id: user.user_id, credential: 'wrong',
  });
  assert.equal(a.code, 401);
  assert.equal(a.reason, 'unauthorized');
  const closed = await expectClose(c, 1008);
  assert.equal(closed.reason, 'unauthorized');
});

test('ping is answered with a pong carrying the same payload', async () => {
  const c = await connect();
  c.ws.ping('are you there?');
  c.ws.ping('');
  await withTimeout((async () => {
    while (c.pongs.length < 2) await new Promise((r) => setTimeout(r, 10));
  })(), 5000, 'no pong');
  assert.deepEqual(c.pongs, ['are you there?', '']);
  c.ws.close();
  await expectClose(c, 1000);
});

test('an unmasked client frame: close 1002', async () => {
  const c = await connect();
  // ws always masks; write the frame under it, on its own socket.
  c.ws._socket.write(Buffer.from([0x81, 0x02, 0x7b, 0x7d]));
  await expectClose(c, 1002);
});

test('oversized messages: close 1009', async () => {
  // Before authenticating a text message may hold max_line_unauth bytes.
  let c = await connect();
  c.ws.send(JSON.stringify({ action: 'list', pad: 'x'.repeat(5000) }));
  const a = await next(c);
  assert.equal(a.code, 400);
  assert.equal(a.reason, 'line_too_long');
  await expectClose(c, 1009);
  // After it, max_line (64 KiB).
  c = await signedIn();
  c.ws.send(JSON.stringify({ action: 'list', pad: 'x'.repeat(70000) }));
  assert.equal((await next(c)).reason, 'line_too_long');
  await expectClose(c, 1009);
  // A binary message over max_chunk_size (1 MiB).
  c = await signedIn();
  c.ws.send(Buffer.alloc(1024 * 1024 + 1), { binary: true });
  await expectClose(c, 1009);
});

test('invalid UTF-8 in a text message: close 1007', async () => {
  const c = await connect();
  c.ws.send(Buffer.from([0x7b, 0xff, 0xfe, 0x7d]), { binary: false });
  await expectClose(c, 1007);
});

test('binary messages must match the chunk they follow', async () => {
  // Without a chunk announced: 1003.
  let c = await signedIn();
  c.ws.send(Buffer.from('stray'), { binary: true });
  await expectClose(c, 1003);
  // More bytes than announced: 1002.
  c = await signedIn();
  c.ws.send(JSON.stringify({ action: 'chunk', document_id: 1, offset: 0, length: 4 }));
  c.ws.send(Buffer.from('12345'), { binary: true });
  assert.equal((await next(c)).reason, 'upload_not_open');
  await expectClose(c, 1002);
  // A text message before the announced bytes are complete: 1002.
  c = await signedIn();
  c.ws.send(JSON.stringify({ action: 'chunk', document_id: 1, offset: 0, length: 4 }));
  c.ws.send(Buffer.from('12'), { binary: true });
  c.ws.send(JSON.stringify({ action: 'list' }));
  assert.equal((await next(c)).reason, 'upload_not_open');
  await expectClose(c, 1002);
});

test('reserved bits and unknown opcodes: close 1002', async () => {
  for (const first of [0xc1, 0x83]) {
    const c = await connect();
    c.ws._socket.write(Buffer.from([first, 0x80, 1, 2, 3, 4]));
    await expectClose(c, 1002);
  }
});

// Last: it stops the server.
test('SIGTERM: shutting_down as a text message, then close 1001, and chunkd exits 0', async () => {
  const c = await signedIn();
  const stopped = server.stop('SIGTERM');
  const bye = await next(c);
  assert.equal(bye.code, 503);
  assert.equal(bye.reason, 'shutting_down');
  const closed = await expectClose(c, 1001);
  assert.equal(closed.reason, 'shutting_down');
  const r = await stopped;
  if (r.code !== 0) console.log(`chunkd log:\n${server.log()}`);
  assert.equal(r.code, 0, 'chunkd exits 0 on SIGTERM');
});
