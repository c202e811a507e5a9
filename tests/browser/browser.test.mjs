// The web UI in headless Chromium (Debian's, driven by playwright-core)
// against a real chunkd on the test stack: signing in, a 20 MiB upload
// watched to 100% and found in the documents list with its SHA-256, an
// upload that survives chunkd being killed and restarted, one resumed after
// a reload, and the 401 message. Screenshots go to CHUNKD_SCREENSHOT_DIR.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';

import {
  Chunkd, createUser, makeFile, need, requirePackage, sleep, tidy, tmpDir, waitFor,
} from './harness.mjs';

const { chromium } = requirePackage('playwright-core');

const MiB = 1024 * 1024;
let dir;
let server;
let context;
const shots = process.env.CHUNKD_SCREENSHOT_DIR || 'screenshots';

before(async () => {
  dir = tmpDir('browser');
  // A short lease: after chunkd is killed, the dead connection's lease on
  // the upload lapses quickly (the page waits for it, told by 409 locked).
  server = new Chunkd(dir, ['--lease-ttl-ms=3000']);
  await server.start(0);
  mkdirSync(shots, { recursive: true });
  context = await chromium.launchPersistentContext(join(dir, 'chromium-profile'), {
    executablePath: need('CHUNKD_CHROMIUM'),
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    viewport: { width: 1200, height: 800 },
  });
});

after(async () => {
  if (context) await context.close();
  const r = await server.stop();
  if (!r || r.code !== 0) console.log(`chunkd log:\n${server.log()}`);
  tidy(dir);
  assert.equal(r && r.code, 0, 'chunkd exits 0 on SIGTERM');
});

async function newPage(query = '') {
  const page = await context.newPage();
  page.on('dialog', (d) => d.accept()); // "leave the page?" during a reload
  page.on('pageerror', (e) => console.log(`# page error: ${e.message}`));
  await page.goto(`${server.url}/${query}`);
  return page;
}

async function signIn(page, user) {
  await page.fill('#user-id', String(user.user_id));
  await page.fill('#credential', user.credential);
  await page.click('#signin-button');
  await page.waitForSelector('#view-upload:not([hidden])');
}

// The file card's state, document id and bar value.
function card(page) {
  return page.evaluate(() => {
    const li = document.querySelector('#files .file');
    if (!li) return null;
    return {
      state: li.dataset.state,
      documentId: li.dataset.documentId ? Number(li.dataset.documentId) : null,
      pct: Number(li.querySelector('.bar').getAttribute('aria-valuenow')),
      status: li.querySelector('.file-status').textContent,
    };
  });
}

// Every change of the card, recorded by the page itself from now on:
// polling from here misses values when the machine is busy (a screenshot
// alone can take longer than a paced upload).
function recordCard(page) {
  return page.evaluate(() => {
    window.__cards = [];
    const snap = () => {
      const li = document.querySelector('#files .file');
      if (!li) return;
      window.__cards.push({
        state: li.dataset.state,
        pct: Number(li.querySelector('.bar').getAttribute('aria-valuenow')),
        status: li.querySelector('.file-status').textContent,
      });
    };
    new MutationObserver(snap).observe(document.body,
      { subtree: true, childList: true, attributes: true, characterData: true });
  });
}

// Polls the card until pred holds, recording every state seen.
async function watch(page, pred, timeoutMs, seen = []) {
  return waitFor('the upload card', async () => {
    const c = await card(page);
    if (c) seen.push(c);
    return c && pred(c) ? c : null;
  }, timeoutMs, 100);
}

async function documents(page) {
  await page.waitForSelector('#view-documents:not([hidden])');
  await page.waitForFunction(() => document.querySelectorAll('#documents tbody tr').length > 0);
  return page.$$eval('#documents tbody tr', (rows) => rows.map((r) => ({
    id: Number(r.dataset.documentId),
    status: r.dataset.status,
    name: r.querySelector('.name').textContent,
    sha256: r.querySelector('.sha').textContent,
    cells: [...r.children].map((c) => c.textContent),
  })));
}

test('a wrong credential shows the 401 message', async () => {
  const user = await createUser('web401');
  const page = await newPage();
  await page.fill('#user-id', String(user.user_id));
  await page.fill('#credential', 'not-the-credential');
  await page.click('#signin-button');
  const err = page.locator('#signin-error');
  await err.waitFor({ state: 'visible' });
  assert.match(await err.textContent(), /401/);
  assert.match(await err.textContent(), /credential is wrong/);
  assert.equal(await page.isVisible('#view-upload'), false);
  await page.close();
});

test('a 20 MiB upload: the bar runs to 100% and the document is listed with its SHA-256', async () => {
  const user = await createUser('web20');
  const f = makeFile(dir, 'report-20MiB.bin', 20 * MiB);
  // Paced (80 Mbit/s, about two seconds) so that the bar is seen moving.
  const page = await newPage('?throttle_kbps=80000');
  await signIn(page, user);
  await page.setInputFiles('#file-input', f.path);
  await page.waitForSelector('#upload-button:not([disabled])', { timeout: 60000 });
  await recordCard(page);
  await page.click('#upload-button');
  const seen = [];
  // from the page's own record: polling could miss a window this short
  await page.waitForFunction(() => window.__cards.some((c) => c.state === 'uploading' &&
    c.pct >= 20 && c.pct <= 80), null, { timeout: 60000 });
  await page.screenshot({ path: join(shots, 'upload-in-progress.png') });
  const done = await watch(page, (c) => c.state === 'complete', 60000, seen);
  assert.equal(done.pct, 100);
  assert.ok(done.status.includes(f.sha256), done.status);
  const all = seen.concat(await page.evaluate(() => window.__cards));
  const middle = [...new Set(all.filter((c) => c.state === 'uploading' && c.pct > 0 &&
    c.pct < 100).map((c) => c.pct))];
  assert.ok(middle.length >= 2, `the bar moved through ${middle}`);
  const rateShown = all.some((c) => /MiB\/s · .* left/.test(c.status));
  assert.ok(rateShown, 'rate and time left were shown');
  assert.equal(await page.textContent('#upload-done'), 'Upload complete!');
  // Then the page moves to the documents list by itself.
  const docs = await documents(page);
  assert.equal(docs.length, 1);
  assert.equal(docs[0].id, done.documentId);
  assert.equal(docs[0].status, 'completed');
  assert.equal(docs[0].name, 'report-20MiB.bin');
  assert.equal(docs[0].sha256, f.sha256);
  assert.equal(docs[0].cells[1], '20.0 MiB');
  assert.match(docs[0].cells[4], /^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$/);
  await page.screenshot({ path: join(shots, 'documents.png'), fullPage: true });
  assert.equal(await page.evaluate(() => Object.keys(localStorage).length), 0,
    'the resume entry is gone once the SHA-256 matched');
  await page.close();
});

test('chunkd killed and restarted mid-upload: the page resumes by itself and completes', async () => {
  const user = await createUser('webresume');
  const f = makeFile(dir, 'resume-me.bin', 20 * MiB);
  const page = await newPage('?throttle_kbps=24000'); // about 7 s for the whole file
  await signIn(page, user);
  await page.setInputFiles('#file-input', f.path);
  await page.waitForSelector('#upload-button:not([disabled])', { timeout: 60000 });
  await page.click('#upload-button');
  const seen = [];
  const before = await watch(page, (c) => c.state === 'uploading' && c.pct >= 25, 60000, seen);
  assert.ok(before.pct < 100);
  const stopped = await server.stop('SIGKILL');
  assert.equal(stopped.signal, 'SIGKILL');
  await watch(page, (c) => c.state === 'reconnecting', 20000, seen);
  await page.screenshot({ path: join(shots, 'upload-reconnecting.png') });
  await sleep(1500); // a reconnect attempt or two meets a closed port
  await server.start(); // the same port
  const mark = seen.length;
  const done = await watch(page, (c) => c.state === 'complete', 90000, seen);
  assert.equal(done.documentId, before.documentId, 'the same upload was resumed');
  const after = seen.slice(mark).filter((c) => c.state === 'uploading');
  assert.ok(after.length > 0 && after[0].pct > 0,
    `resumed from the server's offset, not from 0 (${after.map((c) => c.pct)})`);
  const docs = await documents(page);
  assert.equal(docs.length, 1, 'no second document was made');
  assert.equal(docs[0].status, 'completed');
  assert.equal(docs[0].sha256, f.sha256);
  await page.close();
});

test('after a reload, picking the same file again offers to resume', async () => {
  const user = await createUser('webreload');
  const f = makeFile(dir, 'reload-me.bin', 12 * MiB);
  const page = await newPage('?throttle_kbps=16000');
  await signIn(page, user);
  await page.setInputFiles('#file-input', f.path);
  await page.waitForSelector('#upload-button:not([disabled])', { timeout: 60000 });
  await page.click('#upload-button');
  const first = await watch(page, (c) => c.state === 'uploading' && c.pct >= 30, 60000);
  await page.reload();
  // Still signed in (this tab's session), and told what is unfinished.
  await page.waitForSelector('#view-upload:not([hidden])');
  const note = page.locator('#unfinished');
  await note.waitFor({ state: 'visible' });
  assert.match(await note.textContent(), /reload-me\.bin/);
  await page.setInputFiles('#file-input', f.path);
  await page.waitForSelector('.resume-offer:not([hidden])', { timeout: 60000 });
  await page.screenshot({ path: join(shots, 'resume-offer.png') });
  assert.match(await page.textContent('.resume-text'), new RegExp(`document ${first.documentId}`));
  await page.click('.resume-offer .resume');
  const done = await watch(page, (c) => c.state === 'complete', 60000);
  assert.equal(done.documentId, first.documentId);
  const docs = await documents(page);
  assert.equal(docs.length, 1);
  assert.equal(docs[0].sha256, f.sha256);
  assert.equal(docs[0].status, 'completed');
  await page.close();
});

test('a cancelled upload is listed as failed with its reason', async () => {
  const user = await createUser('webcancel');
  const f = makeFile(dir, 'cancel-me.bin', 8 * MiB);
  const page = await newPage('?throttle_kbps=8000');
  await signIn(page, user);
  await page.setInputFiles('#file-input', f.path);
  await page.waitForSelector('#upload-button:not([disabled])', { timeout: 60000 });
  await page.click('#upload-button');
  const going = await watch(page, (c) => c.state === 'uploading' && c.pct >= 10, 60000);
  await page.click('#files .file .cancel');
  await watch(page, (c) => c.state === 'cancelled', 10000);
  await page.click('#nav-documents');
  const docs = await waitFor('the aborted row', async () => {
    const d = await documents(page);
    if (d[0].status !== 'failed') await page.click('#refresh');
    return d[0].status === 'failed' ? d : null;
  }, 20000, 300);
  assert.equal(docs.length, 1);
  assert.equal(docs[0].id, going.documentId);
  assert.match(docs[0].cells[2], /^failed\s*aborted$/);
  assert.equal(await page.evaluate(() => Object.keys(localStorage).length), 0);
  await page.close();
});
