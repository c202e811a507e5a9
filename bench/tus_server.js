// The benchmark's peer: @tus/server with @tus/file-store, as their README
// sets them up, on Node's http server.
//
//   node tus_server.js --dir DIR --ready-file FILE [--host 127.0.0.1] [--port 0]
//
// scripts/bench.sh installs the two npm packages into a scratch folder under
// build-bench/ and copies this file there, so that the packages resolve
// next to it. The server writes the bound port to FILE once it listens.
//
// Fairness: Node's default timeouts would close the benchmark's idle
// connections (keep-alive 5 s, request timeout 300 s); they are raised to
// chunkd's idle timeout so that both servers hold the same connections.
// @tus/file-store never calls fsync: an upload it has acknowledged may still
// be only in the page cache, where chunkd has synced it (docs/PERFORMANCE.md).
'use strict';

const fs = require('node:fs');
const http = require('node:http');

function parseArgs(argv) {
  const opts = { host: '127.0.0.1', port: 0, dir: null, readyFile: null };
  for (let i = 2; i < argv.length; i += 2) {
    const key = argv[i];
    const value = argv[i + 1];
    if (value === undefined) throw new Error(`${key} needs a value`);
    if (key === '--dir') opts.dir = value;
    else if (key === '--ready-file') opts.readyFile = value;
    else if (key === '--host') opts.host = value;
    else if (key === '--port') opts.port = Number.parseInt(value, 10);
    else throw new Error(`unknown option ${key}`);
  }
  if (!opts.dir || !opts.readyFile || !Number.isInteger(opts.port)) {
    throw new Error('usage: node tus_server.js --dir DIR --ready-file FILE [--host H] [--port P]');
  }
  return opts;
}

async function main() {
  const opts = parseArgs(process.argv);
  // Both packages are ES modules; import() loads them from CommonJS.
  const { Server } = await import('@tus/server');
  const { FileStore } = await import('@tus/file-store');
  fs.mkdirSync(opts.dir, { recursive: true });
  const tus = new Server({
    path: '/files',
    datastore: new FileStore({ directory: opts.dir }),
  });
  const server = http.createServer((req, res) => {
    tus.handle(req, res).catch((err) => {
      console.error(`tus_server: ${req.method} ${req.url}: ${err && err.message}`);
      if (!res.headersSent) res.writeHead(500);
      res.end();
    });
  });
  const idleMs = 300000;
  server.keepAliveTimeout = idleMs;
  server.headersTimeout = idleMs + 1000;
  server.requestTimeout = 0;
  server.maxRequestsPerSocket = 0;
  server.on('error', (err) => {
    console.error(`tus_server: ${err.message}`);
    process.exit(1);
  });
  server.listen({ host: opts.host, port: opts.port, backlog: 4096 }, () => {
    const port = server.address().port;
    const tmp = `${opts.readyFile}.tmp`;
    fs.writeFileSync(tmp, `${port}\n`);
    fs.renameSync(tmp, opts.readyFile);
    console.error(`tus_server: listening on ${opts.host}:${port}, files in ${opts.dir}`);
  });
  const stop = () => {
    server.close(() => process.exit(0));
    server.closeAllConnections();
    setTimeout(() => process.exit(0), 2000).unref();
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

main().catch((err) => {
  console.error(`tus_server: ${err.message}`);
  process.exit(1);
});
