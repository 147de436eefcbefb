// Compact JWEs made by a second independent implementation (Node's `jose`, installed by
// scripts/install-test-deps.sh into target/test-node) for tests/jwe.rs. Prints the same
// JSON document as jwe_mint.py: {"keys": {...}, "tokens": [{alg, enc, key, token, plaintext}]}
// with a token for every alg x enc pair of SPEC section 10, fresh keys every run.
'use strict';

let jose;
try {
  jose = require('jose');
} catch (e) {
  process.stderr.write('jose is missing: run scripts/install-test-deps.sh\n');
  process.exit(1);
}
const crypto = require('node:crypto');

const ALGS = ['dir', 'A128KW', 'A256KW', 'RSA-OAEP', 'RSA-OAEP-256', 'ECDH-ES', 'ECDH-ES+A128KW', 'ECDH-ES+A256KW'];
const ENCS = { 'A128CBC-HS256': 32, 'A256CBC-HS512': 64, A128GCM: 16, A256GCM: 32 };

async function main() {
  const secret = (n) => new Uint8Array(crypto.randomBytes(n));
  const oct = { oct16: secret(16), oct32: secret(32), oct64: secret(64) };
  const ec = await jose.generateKeyPair('ECDH-ES', { crv: 'P-256', extractable: true });
  const x25519 = await jose.generateKeyPair('ECDH-ES', { crv: 'X25519', extractable: true });
  const rsa = await jose.generateKeyPair('RSA-OAEP-256', { modulusLength: 2048, extractable: true });
  const publicOf = { ec: ec.publicKey, x25519: x25519.publicKey, rsa: rsa.publicKey };
  const dirKey = { 16: 'oct16', 32: 'oct32', 64: 'oct64' };

  const tokens = [];
  for (const alg of ALGS) {
    for (const [enc, size] of Object.entries(ENCS)) {
      let names;
      if (alg === 'dir') names = [dirKey[size]];
      else if (alg === 'A128KW') names = ['oct16'];
      else if (alg === 'A256KW') names = ['oct32'];
      else if (alg.startsWith('RSA')) names = ['rsa'];
      else names = ['ec', 'x25519'];
      for (const name of names) {
        const plaintext = `${alg} ${enc} ${name}: attack at dawn (jose)`;
        const key = oct[name] || publicOf[name];
        const token = await new jose.CompactEncrypt(new TextEncoder().encode(plaintext))
          .setProtectedHeader({ alg, enc, kid: name })
          .encrypt(key);
        tokens.push({ alg, enc, key: name, token, plaintext });
      }
    }
  }
  const b64 = (u) => Buffer.from(u).toString('base64url');
  const keys = {
    oct16: { kty: 'oct', k: b64(oct.oct16) },
    oct32: { kty: 'oct', k: b64(oct.oct32) },
    oct64: { kty: 'oct', k: b64(oct.oct64) },
    ec: await jose.exportJWK(ec.privateKey),
    x25519: await jose.exportJWK(x25519.privateKey),
    rsa_pkcs8_pem: await jose.exportPKCS8(rsa.privateKey),
  };
  process.stdout.write(JSON.stringify({ keys, tokens }));
}

main().catch((e) => {
  process.stderr.write(`${e.stack || e}\n`);
  process.exit(1);
});
