// The page: sign in, pick files, watch them upload, list the documents.
// Views are #signin, #upload and #documents; the signed-in user is kept in
// sessionStorage (this tab only, gone when it closes) so a reload keeps it.
import { ConnectionLost, ServerError, Session } from './chunkd-client.js';
import { listEntries } from './resume-store.js';
import { Hasher, UploadJob } from './upload-job.js';

const $ = (sel) => document.querySelector(sel);
const params = new URLSearchParams(window.location.search);
// Test-only: slows sending to this many kilobits per second, so a test can
// cut the connection in the middle of an upload.
const THROTTLE_KBPS = Math.max(0, Number(params.get('throttle_kbps')) || 0);
const AUTH_KEY = 'chunkd.auth';
const REDIRECT_MS = 1500;

let session = null;
let hasher = null;
const jobs = [];
let running = false;

// ---- formatting -------------------------------------------------------

function formatBytes(n) {
  if (n === null || n === undefined) return '?';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return i === 0 ? `${n} B` : `${v.toFixed(v < 10 ? 2 : 1)} ${units[i]}`;
}

function formatDuration(s) {
  if (!Number.isFinite(s)) return '—';
  s = Math.ceil(s);
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}

function formatDate(iso) {
  if (!iso) return '—';
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso;
  const p = (x) => String(x).padStart(2, '0');
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ` +
    `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
}

function el(tag, props = {}, ...children) {
  const e = document.createElement(tag);
  Object.assign(e, props);
  for (const c of children) e.append(c);
  return e;
}

// ---- views --------------------------------------------------------------

function show(view) {
  for (const v of ['signin', 'upload', 'documents']) $(`#view-${v}`).hidden = v !== view;
  $('#nav').hidden = view === 'signin';
  $('#nav-upload').classList.toggle('active', view === 'upload');
  $('#nav-documents').classList.toggle('active', view === 'documents');
  document.title = `chunkd — ${view === 'documents' ? 'documents' : view === 'upload' ? 'upload' : 'sign in'}`;
  if (view === 'documents') loadDocuments();
  if (view === 'upload') showUnfinished();
}

function route() {
  if (!session) {
    show('signin');
    return;
  }
  show(window.location.hash === '#documents' ? 'documents' : 'upload');
}

// ---- signing in ---------------------------------------------------------

function startSession(userId, credential) {
  session = new Session(userId, credential);
  hasher = hasher || new Hasher();
  $('#whoami').textContent = `user ${userId}`;
}

async function signIn(ev) {
  ev.preventDefault();
  const err = $('#signin-error');
  err.hidden = true;
  const userId = Number($('#user-id').value);
  const credential = $('#credential').value.trim();
  if (!Number.isInteger(userId) || userId < 1 || !credential) {
    err.textContent = 'Enter your user id (a positive number) and your credential.';
    err.hidden = false;
    return;
  }
  $('#signin-button').disabled = true;
  const candidate = new Session(userId, credential);
  try {
    // Any authenticated request proves the credential; list is harmless.
    await candidate.call({ action: 'list', limit: 1, ...candidate.auth() });
    candidate.close();
    sessionStorage.setItem(AUTH_KEY, JSON.stringify({ userId, credential }));
    startSession(userId, credential);
    $('#credential').value = '';
    if (window.location.hash !== '#documents') history.replaceState(null, '', '#upload');
    route();
  } catch (e) {
    candidate.close();
    if (e instanceof ServerError && e.code === 401) {
      err.textContent = 'Sign-in failed (401 unauthorized): the user id or credential is wrong, ' +
        'or the user is disabled.';
    } else if (e instanceof ServerError) {
      err.textContent = `Sign-in failed: ${e.code} ${e.reason} — ${e.message}`;
    } else {
      err.textContent = `Cannot reach the chunkd server (${e.message}). Try again in a moment.`;
    }
    err.hidden = false;
  } finally {
    $('#signin-button').disabled = false;
  }
}

function signOut() {
  for (const j of jobs) if (!['complete', 'failed', 'cancelled'].includes(j.state)) j.cancelled = true;
  if (session) session.close();
  session = null;
  sessionStorage.removeItem(AUTH_KEY);
  jobs.length = 0;
  $('#files').replaceChildren();
  window.location.hash = '';
  route();
}

// ---- uploading ------------------------------------------------------------

function renderJob(job) {
  const li = job.card;
  li.dataset.state = job.state;
  if (job.documentId !== null) li.dataset.documentId = job.documentId;
  const bar = li.querySelector('.bar');
  const fill = li.querySelector('.bar-fill');
  const status = li.querySelector('.file-status');
  let pct;
  let text;
  if (job.state === 'hashing') {
    pct = job.total ? (job.hashed / job.total) * 100 : 100;
    text = `Computing SHA-256… ${Math.floor(pct)}%`;
  } else {
    pct = job.total ? (job.received / job.total) * 100 : (job.state === 'complete' ? 100 : 0);
    const rate = job.rate;
    const parts = [`${formatBytes(job.received)} of ${formatBytes(job.total)}`,
      `${Math.floor(pct)}%`];
    if (job.state === 'uploading') {
      parts.push(rate > 0 ? `${formatBytes(rate)}/s` : '— /s');
      parts.push(rate > 0 ? `${formatDuration((job.total - job.received) / rate)} left` : 'estimating…');
    }
    text = parts.join(' · ');
    if (job.state !== 'uploading' && job.state !== 'ready') text = `${job.message} — ${text}`;
    if (job.state === 'complete') text = `Upload complete! SHA-256 ${job.serverSha}`;
    if (job.state === 'offer') text = 'Resume where it stopped, or start over?';
  }
  fill.style.width = `${Math.min(100, pct)}%`;
  bar.setAttribute('aria-valuenow', String(Math.floor(pct)));
  status.textContent = text;
  const offer = li.querySelector('.resume-offer');
  offer.hidden = job.state !== 'offer';
  if (job.state === 'offer') {
    const at = job.offer.offset === null ? 'part of it' : `${formatBytes(job.offer.offset)} of ${formatBytes(job.total)}`;
    li.querySelector('.resume-text').textContent =
      `This file was partly uploaded before (document ${job.offer.documentId}, ${at} on the server).`;
  }
  li.querySelector('.cancel').hidden = ['complete', 'failed', 'cancelled'].includes(job.state);
  if (job.state === 'offer' || job.state === 'complete') showUnfinished();
  updateSummary();
}

function updateSummary() {
  const pending = jobs.filter((j) => ['hashing', 'ready', 'offer', 'queued'].includes(j.state));
  $('#upload-button').disabled = running || pending.length === 0 ||
    pending.some((j) => j.state === 'hashing' || j.state === 'queued');
  const done = jobs.filter((j) => j.state === 'complete').length;
  $('#upload-summary').textContent = jobs.length ? `${done} of ${jobs.length} uploaded` : '';
}

function addFiles(files) {
  if (!session) return;
  $('#upload-done').hidden = true;
  for (const file of files) {
    const card = $('#file-card').content.firstElementChild.cloneNode(true);
    card.querySelector('.file-name').textContent = file.name;
    card.querySelector('.file-size').textContent = formatBytes(file.size);
    const job = new UploadJob(file, session, hasher, { throttleKbps: THROTTLE_KBPS, onUpdate: renderJob });
    job.card = card;
    card.querySelector('.cancel').addEventListener('click', () => job.cancel());
    card.querySelector('.resume').addEventListener('click', () => {
      job.chooseResume();
      startUploads();
    });
    card.querySelector('.restart').addEventListener('click', () => job.chooseFresh());
    jobs.push(job);
    $('#files').append(card);
    renderJob(job);
    job.prepare().then(updateSummary);
  }
}

async function startUploads() {
  if (running) return;
  running = true;
  updateSummary();
  let ran = false;
  for (;;) {
    const job = jobs.find((j) => j.state === 'ready' || j.state === 'offer');
    if (!job) break;
    ran = true;
    await job.run();
    if (job.session.unauthorized) break;
  }
  running = false;
  updateSummary();
  const batch = jobs.filter((j) => j.state !== 'cancelled');
  if (ran && batch.length && batch.every((j) => j.state === 'complete')) {
    $('#upload-done').hidden = false;
    setTimeout(() => {
      if (!running && session) window.location.hash = '#documents';
    }, REDIRECT_MS);
  }
  showUnfinished();
}

function showUnfinished() {
  const box = $('#unfinished');
  if (!session) return;
  // Uploads with a card here (or an offer on one) are not listed again.
  const open = new Set(jobs.flatMap((j) => [j.documentId, j.offer && j.offer.documentId]));
  const left = listEntries(session.userId).filter((e) => !open.has(e.documentId));
  box.hidden = left.length === 0;
  if (left.length) {
    box.replaceChildren(
      el('strong', { textContent: 'Unfinished uploads: ' }),
      left.map((e) => `${e.name} (${formatBytes(e.size)})`).join(', '),
      '. Pick the same file again to resume where it stopped.');
  }
}

// ---- documents ------------------------------------------------------------

async function loadDocuments() {
  const tbody = $('#documents tbody');
  const err = $('#documents-error');
  err.hidden = true;
  try {
    const a = await session.call({ action: 'list', limit: 1000, ...session.auth() });
    tbody.replaceChildren(...a.documents.map(documentRow));
    $('#documents-empty').hidden = a.documents.length > 0;
  } catch (e) {
    err.textContent = e instanceof ServerError ? `Cannot list documents: ${e.code} ${e.reason} — ${e.message}`
      : e instanceof ConnectionLost ? `Cannot reach the chunkd server (${e.message}).`
        : `Cannot list documents: ${e.message}`;
    err.hidden = false;
  }
}

function documentRow(d) {
  const status = el('td', {}, el('span', { className: `badge ${d.status}`, textContent: d.status }));
  if (d.status === 'failed' && d.failure_reason) {
    status.append(el('span', { className: 'reason', textContent: d.failure_reason }));
  }
  if (d.status === 'uploading' && d.offset !== undefined && d.offset !== null) {
    status.append(el('span', { className: 'muted reason', textContent: `${formatBytes(d.offset)} received` }));
  }
  const tr = el('tr', {},
    el('td', { className: 'name', textContent: d.filename }),
    el('td', { className: 'num', textContent: formatBytes(d.filesize), title: `${d.filesize} bytes` }),
    status,
    el('td', { className: 'sha' }, d.sha256 ? el('code', { textContent: d.sha256 }) : '—'),
    el('td', { className: 'date', textContent: formatDate(d.created_at) }),
    el('td', { className: 'date', textContent: formatDate(d.updated_at) }),
    el('td', { className: 'date', textContent: formatDate(d.completed_at) }));
  tr.dataset.documentId = d.document_id;
  tr.dataset.status = d.status;
  return tr;
}

// ---- wiring ----------------------------------------------------------------

function init() {
  $('#signin-form').addEventListener('submit', signIn);
  $('#sign-out').addEventListener('click', signOut);
  $('#refresh').addEventListener('click', loadDocuments);
  $('#upload-button').addEventListener('click', startUploads);
  $('#file-input').addEventListener('change', (ev) => {
    addFiles([...ev.target.files]);
    ev.target.value = '';
  });
  const drop = $('#drop');
  drop.addEventListener('dragover', (ev) => {
    ev.preventDefault();
    drop.classList.add('over');
  });
  drop.addEventListener('dragleave', () => drop.classList.remove('over'));
  drop.addEventListener('drop', (ev) => {
    ev.preventDefault();
    drop.classList.remove('over');
    addFiles([...ev.dataTransfer.files]);
  });
  drop.addEventListener('keydown', (ev) => {
    if (ev.key === 'Enter' || ev.key === ' ') {
      ev.preventDefault();
      $('#file-input').click();
    }
  });
  window.addEventListener('hashchange', route);
  window.addEventListener('beforeunload', (ev) => {
    if (running) ev.preventDefault(); // an upload is going: ask before leaving
  });
  try {
    const saved = JSON.parse(sessionStorage.getItem(AUTH_KEY));
    if (saved && Number.isInteger(saved.userId) && saved.credential) {
      startSession(saved.userId, saved.credential);
    }
  } catch {
    sessionStorage.removeItem(AUTH_KEY);
  }
  route();
}

init();
