// One file's way to the server: hash it, open (or resume) its upload, send
// its chunks with a few in flight, complete it, and start again from the
// server's offset whenever the connection drops.
import { ConnectionLost, ServerError } from './chunkd-client.js';
import { hashBlob } from './sha256.js';
import { fingerprint, loadEntry, removeEntry, saveEntry } from './resume-store.js';

const CHUNK_CAP = 1024 * 1024;   // bytes per chunk at most (the server may allow more)
const WINDOW = 4;                // chunks sent ahead of their answers
const BACKOFF_MS = [500, 1000, 2000, 4000, 8000];
const RATE_WINDOW_MS = 3000;

// Errors of a new upload that the next try may not meet (the server or a
// backend was away for a moment), tried again at most OPEN_RETRIES times:
// an upload whose answer was lost may have left a row that counts against
// the user's uploads in progress until it expires.
const TRANSIENT = new Set(['unavailable', 'shutting_down', 'idle_timeout', 'request_timeout']);
const OPEN_RETRIES = 5;

// Errors after which resuming is the cure: the server's offset is the truth.
const RESUMABLE = new Set([
  'offset_mismatch', 'upload_not_open', 'lease_lost', 'incomplete', 'unavailable',
  'insufficient_storage', 'internal', 'request_timeout', 'idle_timeout', 'shutting_down',
]);

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

class Cancelled extends Error {}

class Retry extends Error {
  constructor(message, afterMs) {
    super(message);
    this.afterMs = afterMs;
  }
}

// Hashes one file at a time in a worker (or here, where workers fail).
export class Hasher {
  constructor() {
    this.queue = Promise.resolve();
    this.worker = null;
    this.seq = 0;
    try {
      this.worker = new Worker(new URL('./hash-worker.js', import.meta.url), { type: 'module' });
    } catch {
      this.worker = null;
    }
  }

  hash(file, onProgress) {
    const run = () => (this.worker ? this.inWorker(file, onProgress) : hashBlob(file, onProgress));
    const p = this.queue.then(run, run);
    this.queue = p.catch(() => {});
    return p;
  }

  inWorker(file, onProgress) {
    const id = ++this.seq;
    return new Promise((resolve, reject) => {
      const onMessage = (ev) => {
        if (ev.data.id !== id) return;
        if (ev.data.done !== undefined) {
          onProgress(ev.data.done, file.size);
          return;
        }
        this.worker.removeEventListener('message', onMessage);
        if (ev.data.error) reject(new Error(ev.data.error));
        else resolve(ev.data.sha256);
      };
      this.worker.addEventListener('message', onMessage);
      this.worker.postMessage({ id, file });
    });
  }
}

// Paces sending for tests that need an upload to last (?throttle_kbps=).
class Throttle {
  constructor(kbps) {
    this.bytesPerMs = kbps > 0 ? (kbps * 1000) / 8 / 1000 : 0;
    this.reset();
  }

  reset() {
    this.start = performance.now();
    this.sent = 0;
  }

  async wait(n) {
    if (!this.bytesPerMs) return;
    this.sent += n;
    const due = this.start + this.sent / this.bytesPerMs;
    const now = performance.now();
    if (due > now) await sleep(due - now);
  }
}

export class UploadJob {
  // onUpdate(job) is called on every change worth showing.
  constructor(file, session, hasher, { throttleKbps = 0, onUpdate = () => {} } = {}) {
    this.file = file;
    this.session = session;
    this.hasher = hasher;
    this.onUpdate = onUpdate;
    this.throttle = new Throttle(throttleKbps);
    this.state = 'queued';  // hashing, ready, offer, uploading, reconnecting, complete, failed, cancelled
    this.message = 'Waiting';
    this.sha256 = null;
    this.fp = null;
    this.documentId = null;
    this.total = file.size;
    this.received = 0;      // bytes the server has acknowledged
    this.hashed = 0;
    this.samples = [];      // [time, received] for the rate
    this.offer = null;      // {documentId, offset} of an unfinished upload of this file
    this.cancelled = false;
    this.serverSha = null;
    this.openRefusals = 0;  // transient refusals of the new upload so far
  }

  set(state, message) {
    if (this.cancelled && state !== 'cancelled') return;
    this.state = state;
    if (message !== undefined) this.message = message;
    this.onUpdate(this);
  }

  // Hashes the file and looks for an unfinished upload of it.
  async prepare() {
    this.set('hashing', 'Computing SHA-256…');
    try {
      this.sha256 = await this.hasher.hash(this.file, (done) => {
        this.hashed = done;
        this.onUpdate(this);
      });
    } catch (e) {
      this.set('failed', `Cannot read the file: ${e.message}`);
      return;
    }
    this.fp = fingerprint(this.session.userId, this.file, this.sha256);
    const entry = loadEntry(this.fp);
    if (entry) {
      try {
        const a = await this.session.call({
          action: 'status', document_id: entry.documentId, ...this.session.auth(),
        });
        if (a.document.status === 'uploading') {
          this.offer = { documentId: entry.documentId, offset: a.document.offset || 0 };
          this.received = this.offer.offset;
          this.set('offer', 'An earlier upload of this file was not finished.');
          return;
        }
      } catch (e) {
        if (e instanceof ConnectionLost) {
          // Cannot ask now: keep the entry and offer it; resume finds out.
          this.offer = { documentId: entry.documentId, offset: null };
          this.set('offer', 'An earlier upload of this file was not finished.');
          return;
        }
      }
      removeEntry(this.fp); // completed, failed or gone: nothing to resume
    }
    this.set('ready', 'Ready to upload');
  }

  // The user's answer to the offer.
  chooseResume() {
    this.documentId = this.offer.documentId;
    this.offer = null;
    this.set('ready', 'Ready to resume');
  }

  chooseFresh() {
    const old = this.offer.documentId;
    this.offer = null;
    this.received = 0;
    removeEntry(this.fp);
    // The old upload is given up for good; failing to say so only leaves
    // it for the server's expiry sweep.
    this.session.call({ action: 'abort', document_id: old, ...this.session.auth() }).catch(() => {});
    this.set('ready', 'Ready to upload');
  }

  get rate() {
    const s = this.samples;
    if (s.length < 2) return 0;
    const dt = s[s.length - 1][0] - s[0][0];
    return dt >= 300 ? ((s[s.length - 1][1] - s[0][1]) * 1000) / dt : 0;
  }

  noteProgress(received) {
    this.received = received;
    const now = performance.now();
    this.samples.push([now, received]);
    while (this.samples.length > 2 && now - this.samples[0][0] > RATE_WINDOW_MS) this.samples.shift();
    this.onUpdate(this);
  }

  async run() {
    if (this.state === 'offer') this.chooseResume(); // Upload pressed without choosing
    if (this.state !== 'ready') return;
    let attempt = 0;
    let receivedAtFailure = this.received;
    this.set('uploading', 'Uploading');
    for (;;) {
      if (this.cancelled) return;
      try {
        const sock = await this.session.connection();
        await this.open(sock);
        if (this.state !== 'uploading') this.set('uploading', 'Uploading');
        await this.sendChunks(sock);
        await this.complete(sock);
        return;
      } catch (e) {
        if (this.cancelled || e instanceof Cancelled) return;
        if (e instanceof ConnectionLost || e instanceof Retry) {
          // The waits grow while nothing moves (a full disk refuses every
          // chunk, yet each resume succeeds); bytes the server acknowledged
          // since the last failure start them over.
          if (this.received > receivedAtFailure) attempt = 0;
          receivedAtFailure = this.received;
          const delay = e instanceof Retry && e.afterMs !== undefined ? e.afterMs
            : BACKOFF_MS[Math.min(attempt, BACKOFF_MS.length - 1)] * (0.75 + Math.random() / 2);
          attempt++;
          this.samples = [];
          const what = e instanceof Retry ? e.message : 'Connection lost';
          this.set('reconnecting', `${what} — trying again in ${(delay / 1000).toFixed(1)} s`);
          await sleep(delay);
          continue;
        }
        if (e instanceof ServerError && e.code === 401) this.session.unauthorized = true;
        this.set('failed', e instanceof ServerError ? `${e.code} ${e.reason}: ${e.message}`
          : `Failed: ${e.message}`);
        return;
      }
    }
  }

  // upload (first time) or resume (after a drop, a reload or an error).
  async open(sock) {
    const auth = this.session.auth();
    if (this.documentId === null) {
      const a = await sock.request({
        action: 'upload', filename: this.file.name, filesize: this.file.size,
        sha256: this.sha256, ...auth,
      });
      if (a.status === 'error') {
        if (TRANSIENT.has(a.reason) && ++this.openRefusals <= OPEN_RETRIES) {
          throw new Retry(a.message);
        }
        throw new ServerError(a);
      }
      this.documentId = a.document_id;
      this.maxChunk = a.max_chunk_size;
      saveEntry(this.fp, {
        documentId: a.document_id, userId: this.session.userId, name: this.file.name,
        size: this.file.size, lastModified: this.file.lastModified, sha256: this.sha256,
        startedAt: Date.now(),
      });
      this.noteProgress(a.offset);
      return;
    }
    const a = await sock.request({ action: 'resume', document_id: this.documentId, ...auth });
    if (a.status === 'error') {
      if (a.reason === 'locked') {
        // The connection that dropped still holds the upload for a moment.
        throw new Retry('The server still holds the previous connection', a.retry_after_ms);
      }
      if (a.reason === 'not_resumable' && a.document_status === 'completed') {
        const s = await sock.request({ action: 'status', document_id: this.documentId, ...auth });
        if (s.status === 'ok' && s.document.sha256 === this.sha256) {
          this.finish(s.document.sha256);
          throw new Cancelled();
        }
      }
      if (a.reason === 'not_resumable' || a.reason === 'not_found' || a.reason === 'forbidden') {
        // Nothing left to resume (failed or expired): start this file anew.
        removeEntry(this.fp);
        this.documentId = null;
        this.noteProgress(0);
        return this.open(sock);
      }
      if (RESUMABLE.has(a.reason)) throw new Retry(a.message);
      throw new ServerError(a);
    }
    this.maxChunk = a.max_chunk_size;
    this.throttle.reset();
    this.noteProgress(a.offset);
  }

  async sendChunks(sock) {
    const size = Math.max(1, Math.min(this.maxChunk || CHUNK_CAP, CHUNK_CAP));
    const inflight = [];
    let sent = this.received;
    let failed = null;
    while (this.received < this.total) {
      while (!failed && sent < this.total && inflight.length < WINDOW) {
        const len = Math.min(size, this.total - sent);
        await this.throttle.wait(len);
        if (this.cancelled) throw new Cancelled();
        const p = sock.chunk(this.documentId, sent, this.file.slice(sent, sent + len));
        p.catch(() => {}); // a drop rejects them all; the oldest one reports it
        inflight.push(p);
        sent += len;
      }
      if (inflight.length === 0) break;
      const a = await inflight.shift();
      if (a.event === 'progress') this.noteProgress(a.received);
      else if (!failed) failed = a;
      if (failed && inflight.length === 0) {
        // The chunks sent after it were refused too: resume from the truth.
        if (RESUMABLE.has(failed.reason)) throw new Retry(failed.message);
        throw new ServerError(failed);
      }
    }
  }

  async complete(sock) {
    const a = await sock.request({ action: 'upload_complete', document_id: this.documentId });
    if (a.status === 'SUCCESS') {
      if (a.sha256 !== this.sha256) {
        throw new ServerError({ code: 422, reason: 'checksum_mismatch',
          message: `the server stored SHA-256 ${a.sha256}, this file has ${this.sha256}` });
      }
      this.finish(a.sha256);
      return;
    }
    if (RESUMABLE.has(a.reason)) {
      if (a.expected_offset !== undefined) this.noteProgress(a.expected_offset);
      throw new Retry(a.message); // resume and send the rest, after a wait
    }
    removeEntry(this.fp);
    throw new ServerError(a);
  }

  finish(serverSha) {
    this.serverSha = serverSha;
    removeEntry(this.fp);
    this.noteProgress(this.total);
    this.set('complete', 'Upload complete!');
  }

  async cancel() {
    this.cancelled = true;
    this.offer = null;
    const id = this.documentId;
    if (this.fp) removeEntry(this.fp);
    this.set('cancelled', 'Cancelled');
    if (id !== null) {
      try {
        await this.session.call({ action: 'abort', document_id: id, ...this.session.auth() });
      } catch {
        // already finished, or the server will expire it
      }
    }
  }
}
