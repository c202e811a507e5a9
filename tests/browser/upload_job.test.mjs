// The page's upload loop (web/upload-job.js) against a scripted stand-in
// for the server, in Node: how it waits between attempts. Needs no npm
// packages and no server: runs with `node --test`. (The whole page against
// a real chunkd is browser.test.mjs.)
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { cpSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

// The page's modules, copied beside a package.json that makes them ES
// modules for Node (the web folder itself declares nothing).
const here = dirname(fileURLToPath(import.meta.url));
const copy = mkdtempSync(join(tmpdir(), 'chunkd-web-'));
cpSync(join(here, '..', '..', 'web'), copy, { recursive: true });
writeFileSync(join(copy, 'package.json'), '{"type":"module"}\n');
after(() => rmSync(copy, { recursive: true, force: true }));
const { UploadJob } = await import(pathToFileURL(join(copy, 'upload-job.js')).href);

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// A server that opens and resumes the upload but refuses each chunk with
// `refusal`, and counts the requests.
function refusingSession(refusal) {
  const seen = { upload: 0, resume: 0, chunk: 0 };
  const sock = {
    isOpen: true,
    async request(obj) {
      seen[obj.action] = (seen[obj.action] || 0) + 1;
      return { status: 'ok', action: obj.action, document_id: 7, offset: 0, max_chunk_size: 4096 };
    },
    async chunk() {
      seen.chunk++;
      return { status: 'error', ...refusal };
    },
  };
  const session = {
    userId: 1,
    auth: () => ({ user_id: 1, credential: 'c' }),
    connection: async () => sock,
    call: async () => ({ status: 'ok' }),
  };
  return { session, seen };
}

function readyJob(session) {
  const file = new File([new Uint8Array(10000)], 'x.bin');
  const job = new UploadJob(file, session, null);
  job.sha256 = '0'.repeat(64);
  job.fp = 'fp';
  job.state = 'ready';
  return job;
}

// A disk that stays full refuses every chunk while every resume succeeds:
// the waits grow (0.5, 1, 2 s...) instead of the page resuming and sending
// chunks again at once, forever.
test('a chunk refused again and again is retried after growing waits', async () => {
  const { session, seen } = refusingSession({
    code: 507, reason: 'insufficient_storage', message: 'insufficient storage',
  });
  const job = readyJob(session);
  const states = [];
  job.onUpdate = (j) => {
    if (states[states.length - 1] !== j.message) states.push(j.message);
  };
  const running = job.run();
  await sleep(2500);
  job.cancelled = true;
  await running;
  // 0.5 s, then 1 s (each ±25%): at most 3 resumes in 2.5 s, however slow
  // the machine; without the waits it was thousands.
  assert.ok(seen.resume >= 1 && seen.resume <= 3, `${seen.resume} resumes in 2.5 s`);
  assert.equal(seen.upload, 1);
  const waits = states.map((m) => /insufficient storage — trying again in ([\d.]+) s/.exec(m))
    .filter(Boolean).map((m) => Number(m[1]));
  assert.ok(waits.length >= 2 && waits[1] > waits[0], `waits: ${waits.join(', ')}`);
});
