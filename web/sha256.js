// Incremental SHA-256 (FIPS 180-4). WebCrypto's digest() needs the whole
// input in one buffer; this one takes a file a slice at a time, so a 500 MiB
// upload is never held in memory to be hashed.

const K = new Int32Array([
  0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
  0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
  0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
  0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
  0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
  0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
  0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
  0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
]);

const IV = [
  0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
];

export class Sha256 {
  constructor() {
    this.h = new Int32Array(IV);
    this.w = new Int32Array(64);
    this.block = new Uint8Array(64); // a partial block carried between updates
    this.blockLen = 0;
    this.bytes = 0; // total length; exact up to 2^53 bytes
    this.finished = false;
  }

  // data: Uint8Array, ArrayBuffer or a typed array view.
  update(data) {
    if (this.finished) throw new Error('sha256: update after digest');
    const d = data instanceof Uint8Array ? data
      : ArrayBuffer.isView(data) ? new Uint8Array(data.buffer, data.byteOffset, data.byteLength)
        : new Uint8Array(data);
    let i = 0;
    const n = d.length;
    this.bytes += n;
    if (this.blockLen > 0) {
      const take = Math.min(64 - this.blockLen, n);
      this.block.set(d.subarray(0, take), this.blockLen);
      this.blockLen += take;
      i = take;
      if (this.blockLen < 64) return this;
      this.compress(this.block, 0);
      this.blockLen = 0;
    }
    const whole = i + Math.floor((n - i) / 64) * 64;
    if (whole > i) this.compress(d, i, whole);
    i = whole;
    if (i < n) {
      this.block.set(d.subarray(i), 0);
      this.blockLen = n - i;
    }
    return this;
  }

  // Returns the 32-byte digest; the object cannot be updated afterwards.
  digest() {
    if (!this.finished) {
      const bits = this.bytes * 8;
      const pad = new Uint8Array((this.blockLen < 56 ? 64 : 128) - this.blockLen);
      pad[0] = 0x80;
      const hi = Math.floor(bits / 0x100000000);
      const lo = bits >>> 0;
      const t = pad.length - 8;
      pad[t] = hi >>> 24; pad[t + 1] = hi >>> 16; pad[t + 2] = hi >>> 8; pad[t + 3] = hi;
      pad[t + 4] = lo >>> 24; pad[t + 5] = lo >>> 16; pad[t + 6] = lo >>> 8; pad[t + 7] = lo;
      const bytes = this.bytes;
      this.update(pad);
      this.bytes = bytes;
      this.finished = true;
    }
    const out = new Uint8Array(32);
    for (let j = 0; j < 8; j++) {
      const v = this.h[j];
      out[4 * j] = v >>> 24; out[4 * j + 1] = v >>> 16; out[4 * j + 2] = v >>> 8; out[4 * j + 3] = v;
    }
    return out;
  }

  hex() {
    let s = '';
    for (const b of this.digest()) s += (b < 16 ? '0' : '') + b.toString(16);
    return s;
  }

  // Runs the compression function over d[off..end), a whole number of
  // 64-byte blocks, keeping the state in locals across blocks.
  compress(d, off, end = off + 64) {
    const w = this.w;
    const h = this.h;
    let h0 = h[0], h1 = h[1], h2 = h[2], h3 = h[3], h4 = h[4], h5 = h[5], h6 = h[6], h7 = h[7];
    for (; off < end; off += 64) {
      for (let j = 0, p = off; j < 16; j++, p += 4) {
        w[j] = (d[p] << 24) | (d[p + 1] << 16) | (d[p + 2] << 8) | d[p + 3];
      }
      for (let j = 16; j < 64; j++) {
        const x = w[j - 15], y = w[j - 2];
        const s0 = ((x >>> 7) | (x << 25)) ^ ((x >>> 18) | (x << 14)) ^ (x >>> 3);
        const s1 = ((y >>> 17) | (y << 15)) ^ ((y >>> 19) | (y << 13)) ^ (y >>> 10);
        w[j] = (w[j - 16] + s0 + w[j - 7] + s1) | 0;
      }
      let a = h0, b = h1, c = h2, dd = h3, e = h4, f = h5, g = h6, hh = h7;
      for (let j = 0; j < 64; j++) {
        const S1 = ((e >>> 6) | (e << 26)) ^ ((e >>> 11) | (e << 21)) ^ ((e >>> 25) | (e << 7));
        const ch = (e & f) ^ (~e & g);
        const t1 = (hh + S1 + ch + K[j] + w[j]) | 0;
        const S0 = ((a >>> 2) | (a << 30)) ^ ((a >>> 13) | (a << 19)) ^ ((a >>> 22) | (a << 10));
        const maj = (a & b) ^ (a & c) ^ (b & c);
        hh = g; g = f; f = e; e = (dd + t1) | 0;
        dd = c; c = b; b = a; a = (t1 + S0 + maj) | 0;
      }
      h0 = (h0 + a) | 0; h1 = (h1 + b) | 0; h2 = (h2 + c) | 0; h3 = (h3 + dd) | 0;
      h4 = (h4 + e) | 0; h5 = (h5 + f) | 0; h6 = (h6 + g) | 0; h7 = (h7 + hh) | 0;
    }
    h[0] = h0; h[1] = h1; h[2] = h2; h[3] = h3; h[4] = h4; h[5] = h5; h[6] = h6; h[7] = h7;
  }
}

export function sha256Hex(data) {
  return new Sha256().update(data).hex();
}

export const HASH_SLICE = 4 * 1024 * 1024;

// Hashes a Blob (a File) slice by slice: at most one slice is in memory.
// onProgress(bytesHashed, total) is called after each slice; signal (an
// AbortSignal) stops it.
export async function hashBlob(blob, onProgress, signal, sliceSize = HASH_SLICE) {
  const h = new Sha256();
  for (let off = 0; off < blob.size; off += sliceSize) {
    if (signal && signal.aborted) throw new DOMException('hashing stopped', 'AbortError');
    const end = Math.min(off + sliceSize, blob.size);
    h.update(new Uint8Array(await blob.slice(off, end).arrayBuffer()));
    if (onProgress) onProgress(end, blob.size);
  }
  return h.hex();
}
