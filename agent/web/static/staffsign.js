// Signed staff requests (agent/web/signing.py, docs/security.md): the staff token never leaves
// this page. It makes a device key once; each staff call carries X-Staff-Signature, an
// HMAC-SHA256 of its method, path, time, nonce and body, which the kit takes once.
// The till is plain http on the kit's Wi-Fi, where browsers give no crypto.subtle, so SHA-256
// and HMAC are here (FIPS 180-4, RFC 2104; checked against RFC 4231 in tests).
"use strict";

const staffSign = (() => {
  const K = new Uint32Array([
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
  ]);
  const KEY_LABEL = "dropkit staff key 1";
  const SCHEME = "dropkit-staff-1";
  const utf8 = (text) => new TextEncoder().encode(text);
  const hex = (bytes) => [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");
  const fromHex = (text) => new Uint8Array(text.match(/../g).map((h) => parseInt(h, 16)));
  const rotr = (x, n) => (x >>> n) | (x << (32 - n));
  let clockOffsetMs = 0; // the kit's clock minus this device's, learnt from a stale answer

  function sha256(data) {
    const length = data.length;
    const blocks = Math.ceil((length + 9) / 64);
    const padded = new Uint8Array(blocks * 64);
    padded.set(data);
    padded[length] = 0x80;
    const view = new DataView(padded.buffer);
    view.setUint32(padded.length - 8, Math.floor(length / 0x20000000));
    view.setUint32(padded.length - 4, length * 8);
    const h = new Uint32Array([0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
      0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19]);
    const w = new Uint32Array(64);
    for (let block = 0; block < blocks; block++) {
      for (let i = 0; i < 16; i++) w[i] = view.getUint32(block * 64 + i * 4);
      for (let i = 16; i < 64; i++) {
        const s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >>> 3);
        const s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >>> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
      }
      let [a, b, c, d, e, f, g, k] = h;
      for (let i = 0; i < 64; i++) {
        const t1 = k + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + K[i] + w[i];
        const t2 = (rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
        k = g; g = f; f = e; e = (d + t1) >>> 0; d = c; c = b; b = a; a = (t1 + t2) >>> 0;
      }
      [a, b, c, d, e, f, g, k].forEach((x, i) => { h[i] += x; });
    }
    const out = new Uint8Array(32);
    const outView = new DataView(out.buffer);
    h.forEach((x, i) => outView.setUint32(i * 4, x));
    return out;
  }

  function hmac(key, data) {
    const block = new Uint8Array(64);
    block.set(key.length > 64 ? sha256(key) : key);
    const inner = new Uint8Array(64 + data.length);
    const outer = new Uint8Array(64 + 32);
    for (let i = 0; i < 64; i++) { inner[i] = block[i] ^ 0x36; outer[i] = block[i] ^ 0x5c; }
    inner.set(data, 64);
    outer.set(sha256(inner), 64);
    return sha256(outer);
  }

  function nonce() {
    const bytes = crypto.getRandomValues(new Uint8Array(16));
    return btoa(String.fromCharCode(...bytes)).replace(/\+/g, "-").replace(/\//g, "_")
      .replace(/=+$/, "");
  }

  // The header for one request: bodyText is exactly what fetch sends (a string, as UTF-8).
  function header(keyHex, method, path, bodyText, timeMs, once) {
    const url = new URL(path, location.href); // what the browser puts on the request line
    const text = [SCHEME, method.toUpperCase(), url.pathname + url.search, String(timeMs), once,
      hex(sha256(utf8(bodyText)))].join("\n");
    return `t=${timeMs},n=${once},s=${hex(hmac(fromHex(keyHex), utf8(text)))}`;
  }

  // A signed fetch; once, when the kit says its clock differs, learn its time and sign again.
  async function signedFetch(keyHex, method, path, bodyText, headers) {
    let response = null;
    for (let attempt = 0; attempt < 2; attempt++) {
      const signature = header(keyHex, method, path, bodyText || "", Date.now() + clockOffsetMs,
        nonce());
      response = await fetch(path, {
        method, body: bodyText, headers: { ...headers, "X-Staff-Signature": signature },
      });
      if (response.status !== 401) break;
      const refusal = await response.clone().json().catch(() => ({}));
      if (refusal.error !== "stale_signature" || !Number.isFinite(refusal.kit_time_ms)) break;
      clockOffsetMs = refusal.kit_time_ms - Date.now();
    }
    return response;
  }

  return {
    sha256, hmac, hex, fromHex, utf8, header,
    fetch: signedFetch,
    deviceKey: (token) => hex(hmac(utf8(token), utf8(KEY_LABEL))),
  };
})();
