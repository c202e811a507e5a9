// The page's incremental SHA-256 (web/sha256.js) against the published test
// vectors and against Node's OpenSSL over random data cut at random places.
// Needs no npm packages: runs with `node --test`.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const source = readFileSync(join(here, '..', '..', 'web', 'sha256.js'), 'utf8');
// Loaded as a module from its text, so no package.json has to declare the
// web folder's files as ES modules.
const { Sha256, sha256Hex, hashBlob } =
  await import('data:text/javascript;base64,' + Buffer.from(source).toString('base64'));

const enc = (s) => new TextEncoder().encode(s);

test('FIPS 180-4 and NIST vectors', () => {
  assert.equal(sha256Hex(enc('')),
    'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855');
  assert.equal(sha256Hex(enc('abc')),
    'ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad');
  assert.equal(sha256Hex(enc('abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq')),
    '248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1');
  assert.equal(sha256Hex(enc('abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmn' +
    'hijklmnoijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu')),
  'cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1');
});

test('one million "a", fed in uneven pieces', () => {
  const h = new Sha256();
  const piece = enc('a'.repeat(997));
  let left = 1000000;
  while (left > 0) {
    const n = Math.min(left, piece.length);
    h.update(piece.subarray(0, n));
    left -= n;
  }
  assert.equal(h.hex(), 'cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0');
});

test('every length around the padding boundaries', () => {
  for (let n = 0; n <= 200; n++) {
    const data = randomBytes(n);
    assert.equal(sha256Hex(data), createHash('sha256').update(data).digest('hex'), `length ${n}`);
  }
});

test('random data cut at random places matches OpenSSL', () => {
  for (let round = 0; round < 20; round++) {
    const data = randomBytes(1 + Math.floor(Math.random() * 300000));
    const h = new Sha256();
    let off = 0;
    while (off < data.length) {
      const n = Math.min(data.length - off, 1 + Math.floor(Math.random() * 5000));
      h.update(data.subarray(off, off + n));
      off += n;
    }
    assert.equal(h.hex(), createHash('sha256').update(data).digest('hex'));
  }
});

test('accepts ArrayBuffer and other views; refuses updates after digest', () => {
  const data = randomBytes(1000);
  const want = createHash('sha256').update(data).digest('hex');
  const ab = data.buffer.slice(data.byteOffset, data.byteOffset + data.length);
  assert.equal(sha256Hex(ab), want);
  assert.equal(sha256Hex(new DataView(ab)), want);
  const h = new Sha256().update(data);
  assert.equal(h.hex(), want);
  assert.equal(h.hex(), want); // digest is stable
  assert.throws(() => h.update(data));
});

test('hashBlob reads a Blob slice by slice', async () => {
  const data = randomBytes(3 * 65536 + 123);
  const seen = [];
  const hex = await hashBlob(new Blob([data]), (done, total) => seen.push([done, total]), null,
    65536);
  assert.equal(hex, createHash('sha256').update(data).digest('hex'));
  assert.deepEqual(seen.map((s) => s[0]), [65536, 131072, 196608, data.length]);
  assert.ok(seen.every((s) => s[1] === data.length));
  assert.equal(await hashBlob(new Blob([])),
    'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855');
});

test('throughput is fit for a 500 MiB file', () => {
  const data = randomBytes(32 << 20);
  const t0 = process.hrtime.bigint();
  sha256Hex(data);
  const secs = Number(process.hrtime.bigint() - t0) / 1e9;
  const mbps = 32 / secs;
  console.log(`# sha256.js: ${mbps.toFixed(0)} MiB/s`);
  // Generous floor (sanitizer builds run beside it): under 10 MiB/s a
  // 500 MiB file would take nearly a minute to check.
  assert.ok(mbps > 10, `${mbps} MiB/s`);
});
