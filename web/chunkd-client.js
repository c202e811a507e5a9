// The chunkd protocol over WebSocket (docs/PROTOCOL.md, "WebSocket
// transport"): one JSON request per text message, a chunk's bytes as the
// binary message after its header, and exactly one answer per request, in
// order. So a queue of waiting requests is all the matching there is: every
// message the server sends answers the oldest request still waiting (a
// chunk's answer is its progress event or its error).

export class ConnectionLost extends Error {
  constructor(message, code) {
    super(message);
    this.name = 'ConnectionLost';
    this.code = code; // the close code, when the server sent one
  }
}

// An error answer: {code, reason, message} as the server sent it.
export class ServerError extends Error {
  constructor(answer) {
    super(answer.message || answer.reason || 'error');
    this.name = 'ServerError';
    this.answer = answer;
    this.code = answer.code;
    this.reason = answer.reason;
  }
}

export function wsUrl(loc = window.location) {
  return (loc.protocol === 'https:' ? 'wss://' : 'ws://') + loc.host + '/ws';
}

export class ChunkdSocket {
  constructor(url) {
    this.url = url;
    this.ws = null;
    this.waiting = []; // {resolve, reject} per request sent, oldest first
    this.closed = false;
    this.goodbye = null; // an error the server sent with nothing waiting (idle, shutdown)
    this.onclose = null;
  }

  open(timeoutMs = 10000) {
    return new Promise((resolve, reject) => {
      let ws;
      try {
        ws = new WebSocket(this.url);
      } catch (e) {
        reject(new ConnectionLost(`cannot open ${this.url}: ${e.message}`));
        return;
      }
      this.ws = ws;
      let opened = false;
      const timer = setTimeout(() => {
        if (!opened) ws.close();
      }, timeoutMs);
      ws.onopen = () => {
        opened = true;
        clearTimeout(timer);
        resolve(this);
      };
      ws.onmessage = (ev) => this.received(ev.data);
      ws.onclose = (ev) => {
        clearTimeout(timer);
        this.lost(ev.code, ev.reason);
        if (!opened) reject(new ConnectionLost('cannot reach the server', ev.code));
      };
      ws.onerror = () => {}; // onclose follows with the details
    });
  }

  received(data) {
    let msg;
    try {
      msg = JSON.parse(data);
    } catch {
      this.close();
      return;
    }
    const w = this.waiting.shift();
    if (w) w.resolve(msg);
    else this.goodbye = msg;
  }

  lost(code, reason) {
    if (this.closed) return;
    this.closed = true;
    const why = this.goodbye && this.goodbye.reason ? this.goodbye.reason
      : reason || `connection closed (${code})`;
    const err = new ConnectionLost(why, code);
    for (const w of this.waiting.splice(0)) w.reject(err);
    if (this.onclose) this.onclose(err);
  }

  get isOpen() {
    return !this.closed && this.ws && this.ws.readyState === WebSocket.OPEN;
  }

  // Sends one request; resolves with its answer (errors included).
  request(obj) {
    return new Promise((resolve, reject) => {
      if (!this.isOpen) {
        reject(new ConnectionLost('not connected'));
        return;
      }
      this.waiting.push({ resolve, reject });
      this.ws.send(JSON.stringify(obj));
    });
  }

  // A chunk: its header, then its bytes as one binary message. The Blob is
  // read by the browser as it sends, so a file is never loaded whole.
  chunk(documentId, offset, blob) {
    return new Promise((resolve, reject) => {
      if (!this.isOpen) {
        reject(new ConnectionLost('not connected'));
        return;
      }
      this.waiting.push({ resolve, reject });
      this.ws.send(JSON.stringify({
        action: 'chunk', document_id: documentId, offset, length: blob.size,
      }));
      this.ws.send(blob);
    });
  }

  get buffered() {
    return this.ws ? this.ws.bufferedAmount : 0;
  }

  close() {
    if (this.ws && this.ws.readyState <= WebSocket.OPEN) this.ws.close(1000, 'done');
  }
}

// Signed-in state and the one connection it uses, opened again on demand.
export class Session {
  constructor(userId, credential, url = wsUrl()) {
    this.userId = userId;
    this.credential = credential;
    this.url = url;
    this.sock = null;
    this.opening = null; // the promise of a connection being opened
    this.generation = 0; // close() moves it on: a connection opening then is dropped
  }

  auth() {
    return { user_id: this.userId, credential: this.credential };
  }

  connection() {
    if (this.sock && this.sock.isOpen) return Promise.resolve(this.sock);
    this.sock = null;
    // One connection at a time: callers that come while it opens (the
    // upload and the documents list, say) share it.
    if (!this.opening) {
      const s = new ChunkdSocket(this.url);
      const generation = this.generation;
      const opening = s.open()
        .then(() => {
          if (generation !== this.generation) {
            // closed (signed out) while it opened: not the session's any more
            s.close();
            throw new ConnectionLost('the session was closed');
          }
          this.sock = s;
          return s;
        })
        .finally(() => {
          if (this.opening === opening) this.opening = null;
        });
      this.opening = opening;
    }
    return this.opening;
  }

  // A request on the current connection; throws ServerError for an error
  // answer and ConnectionLost when the connection goes.
  async call(obj) {
    const s = await this.connection();
    const answer = await s.request(obj);
    if (answer.status === 'error') throw new ServerError(answer);
    return answer;
  }

  close() {
    if (this.sock) this.sock.close();
    this.sock = null;
    this.opening = null;
    this.generation++;
  }
}
