// Shared by the browser and WebSocket client tests: a real chunkd on the test
// stack (CHUNKD_TEST_STACK_ENV), users made with chunkctl, temporary folders
// inside the build folder, and the npm packages ctest installed there.
import { spawn, execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { createRequire } from 'node:module';
import {
  closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, readdirSync, rmSync,
  writeSync,
} from 'node:fs';
import net from 'node:net';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
export const WEB_ROOT = resolve(here, '..', '..', 'web');

export function need(name) {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set (run these tests through ctest)`);
  return v;
}

// The npm packages (ws, playwright-core) live in the build folder, not
// beside these files.
export function requirePackage(name) {
  const req = createRequire(join(need('CHUNKD_NODE_MODULES'), 'package.json'));
  return req(name);
}

export function stackEnv() {
  const env = {};
  for (const line of readFileSync(need('CHUNKD_TEST_STACK_ENV'), 'utf8').split('\n')) {
    const m = /^([A-Z0-9_]+)=(.*)$/.exec(line.trim());
    if (m) env[m[1]] = m[2];
  }
  return env;
}

export function tmpDir(tag) {
  const base = process.env.CHUNKD_WEB_TMPDIR || '/tmp';
  mkdirSync(base, { recursive: true });
  return mkdtempSync(join(base, `${tag}-`));
}

// Removes what a test folder holds (test files, storage, browser profile)
// but the chunkd log, unless CHUNKD_WEB_KEEP is set.
export function tidy(dir) {
  if (process.env.CHUNKD_WEB_KEEP) return;
  for (const name of readdirSync(dir)) {
    if (name !== 'chunkd.log') rmSync(join(dir, name), { recursive: true, force: true });
  }
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export async function waitFor(what, fn, timeoutMs = 20000, everyMs = 50) {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(everyMs);
  }
}

// A free loopback port (for a server that must come back on the same one).
export function freePort() {
  return new Promise((res, rej) => {
    const s = net.createServer();
    s.on('error', rej);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => res(port));
    });
  });
}

// chunkd on 127.0.0.1:port (0: any) with its own storage folder; the log
// goes to dir/chunkd.log and is printed when a test fails.
export class Chunkd {
  constructor(dir, extraArgs = []) {
    this.dir = dir;
    this.extraArgs = extraArgs;
    this.proc = null;
    this.port = 0;
    this.logPath = join(dir, 'chunkd.log');
  }

  async start(port = this.port) {
    const ready = join(this.dir, 'ready');
    rmSync(ready, { force: true });
    const log = openSync(this.logPath, 'a');
    const args = [`--listen=127.0.0.1:${port}`, `--storage-dir=${join(this.dir, 'storage')}`,
      `--ready-file=${ready}`, `--web-root=${WEB_ROOT}`, '--workers=2', ...this.extraArgs];
    this.proc = spawn(need('CHUNKD_BIN'), args, {
      env: { ...process.env, ...stackEnv() },
      stdio: ['ignore', log, log],
    });
    closeSync(log);
    const proc = this.proc;
    let exited = null;
    proc.on('exit', (code, sig) => { exited = `exit ${code} ${sig || ''}`; });
    await waitFor('chunkd to be ready', () => {
      if (exited) throw new Error(`chunkd stopped at start-up (${exited}):\n${this.log()}`);
      return existsSync(ready);
    });
    this.port = Number(readFileSync(ready, 'utf8').trim());
    return this.port;
  }

  get url() {
    return `http://127.0.0.1:${this.port}`;
  }

  get wsUrl() {
    return `ws://127.0.0.1:${this.port}/ws`;
  }

  log() {
    try {
      return readFileSync(this.logPath, 'utf8');
    } catch {
      return '';
    }
  }

  // Sends sig and waits for the exit; returns {code, signal}.
  stop(sig = 'SIGTERM', timeoutMs = 15000) {
    const p = this.proc;
    this.proc = null;
    if (!p || p.exitCode !== null || p.signalCode !== null) {
      return Promise.resolve(p ? { code: p.exitCode, signal: p.signalCode } : null);
    }
    return new Promise((res) => {
      const t = setTimeout(() => p.kill('SIGKILL'), timeoutMs);
      p.once('exit', (code, signal) => {
        clearTimeout(t);
        res({ code, signal });
      });
      p.kill(sig);
    });
  }
}

export function run(bin, args, env = {}) {
  return new Promise((res, rej) => {
    execFile(bin, args, { env: { ...process.env, ...stackEnv(), ...env }, timeout: 30000 },
      (err, stdout, stderr) => {
        if (err) rej(new Error(`${bin} ${args.join(' ')}: ${err.message}\n${stderr}`));
        else res(stdout);
      });
  });
}

// A new user: {user_id, name, credential}.
export async function createUser(tag) {
  const name = `${tag}-${process.pid}-${randomBytes(4).toString('hex')}`;
  return JSON.parse(await run(need('CHUNKCTL_BIN'), ['user', 'add', name, '--json']));
}

// A file of random bytes; returns {path, size, sha256}.
export function makeFile(dir, name, size) {
  const path = join(dir, name);
  const fd = openSync(path, 'w');
  const h = createHash('sha256');
  for (let off = 0; off < size; off += 1 << 20) {
    const b = randomBytes(Math.min(1 << 20, size - off));
    h.update(b);
    writeSync(fd, b);
  }
  closeSync(fd);
  return { path, size, sha256: h.digest('hex') };
}
