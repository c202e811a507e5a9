// Unfinished uploads, remembered in localStorage so that a reload, a crash
// or a closed tab can pick up where the server stands. An entry is keyed by
// the user and a fingerprint of the file (name, size, lastModified and its
// SHA-256): picking the same file again finds it, and a file that changed
// since does not. The entry goes once the server's SHA-256 matches.

const PREFIX = 'chunkd.upload.v1:';

export function fingerprint(userId, file, sha256) {
  return JSON.stringify([userId, file.name, file.size, file.lastModified, sha256]);
}

function storage() {
  try {
    return window.localStorage;
  } catch {
    return null; // storage disabled: uploads still resume within the page
  }
}

export function loadEntry(fp) {
  const s = storage();
  if (!s) return null;
  try {
    const v = JSON.parse(s.getItem(PREFIX + fp));
    return v && Number.isInteger(v.documentId) ? v : null;
  } catch {
    return null;
  }
}

export function saveEntry(fp, entry) {
  const s = storage();
  if (!s) return;
  try {
    s.setItem(PREFIX + fp, JSON.stringify(entry));
  } catch {
    // quota or privacy mode: the upload itself goes on
  }
}

export function removeEntry(fp) {
  const s = storage();
  if (s) s.removeItem(PREFIX + fp);
}

// The unfinished uploads of one user, oldest first.
export function listEntries(userId) {
  const s = storage();
  if (!s) return [];
  const out = [];
  for (let i = 0; i < s.length; i++) {
    const k = s.key(i);
    if (!k || !k.startsWith(PREFIX)) continue;
    const e = loadEntry(k.slice(PREFIX.length));
    if (e && e.userId === userId) out.push(e);
  }
  return out.sort((a, b) => a.startedAt - b.startedAt);
}
