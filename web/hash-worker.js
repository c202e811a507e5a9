// Hashes files off the page's main thread, so the page stays responsive
// while a large file is read. One request at a time: {id, file}; answers
// {id, done} as slices are hashed, then {id, sha256} or {id, error}.
import { hashBlob } from './sha256.js';

self.onmessage = async (ev) => {
  const { id, file } = ev.data;
  try {
    const sha256 = await hashBlob(file, (done) => self.postMessage({ id, done }));
    self.postMessage({ id, sha256 });
  } catch (e) {
    self.postMessage({ id, error: String(e && e.message ? e.message : e) });
  }
};
