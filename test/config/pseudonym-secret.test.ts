// Weak pseudonym secrets are refused (security review finding 10): besides at least 32
// characters, at least 10 distinct ones and no known placeholder, with a message saying how to
// make one; the secret itself is never echoed. Every secret the tests, fixtures, benches and
// the demo use still passes.
import { describe, expect, it } from 'vitest';
import { loadServiceConfig, pseudonymSecretProblem } from '../../src/config/service.js';
import { SECRET } from '../sync/helpers.js';

function errorOf(env: Record<string, string>): string {
  try {
    loadServiceConfig(env);
  } catch (err) {
    return err instanceof Error ? err.message : String(err);
  }
  throw new Error('expected a config error');
}

describe('pseudonym secret', () => {
  it('when a deployment says its weak-looking secret is already in use, then only the length rule holds (changing it would re-key every visit)', () => {
    const weak = 'test-secret-test-secret-test-secret-0123';
    expect(
      loadServiceConfig({ LHN_PSEUDONYM_SECRET: weak, LHN_PSEUDONYM_SECRET_IN_USE: 'true' })
        .pseudonymSecret,
    ).toBe(weak);
    expect(errorOf({ LHN_PSEUDONYM_SECRET: weak })).toContain('LHN_PSEUDONYM_SECRET_IN_USE=true');
    expect(
      errorOf({
        LHN_PSEUDONYM_SECRET: 'short-but-random-9f3a',
        LHN_PSEUDONYM_SECRET_IN_USE: 'true',
      }),
    ).toMatch(/at least 32 characters/);
  });

  it.each([
    ['a'.repeat(32), /only 1 distinct characters/],
    ['0'.repeat(64), /only 1 distinct characters/],
    ['abababababababababababababababab', /only 2 distinct characters/],
    ['changeme-changeme-changeme-change', /only 8 distinct characters/],
    ['ChangeMe_0123456789_abcdefghijklmnop', /looks like a placeholder/],
    ['secret-0123456789-abcdefghijklmnop', /looks like a placeholder/],
    ['Password123456789-abcdefghijklmnopq', /looks like a placeholder/],
    ['example-0123456789-abcdefghijklmnop', /looks like a placeholder/],
    ['test-secret-test-secret-test-secret-0123', /looks like a placeholder/],
    ['keys-command-placeholder-not-a-secret-0000', /looks like a placeholder/],
    ['short-but-random-9f3a', /at least 32 characters/],
  ])(
    'when LHN_PSEUDONYM_SECRET is %j, then it is refused, saying how to make one, without echoing it',
    (secret, why) => {
      const message = errorOf({ LHN_PSEUDONYM_SECRET: secret });
      expect(message).toMatch(why);
      expect(message).toContain('openssl rand -hex 32');
      expect(message).toContain('set by LHN_PSEUDONYM_SECRET');
      expect(message).not.toContain(secret);
    },
  );

  it('when the secret is random hex or base64, then it is accepted', () => {
    // A fixed seed: the same 2,000 secrets every run (random ones made this test fail about
    // once in 500 runs, when a base64 secret happened to begin with letters such as "xXx").
    const bytes = seededBytes(20261201);
    for (let i = 0; i < 1000; i++) {
      expect(pseudonymSecretProblem(bytes(32).toString('hex'))).toBeUndefined();
      expect(pseudonymSecretProblem(bytes(24).toString('base64'))).toBeUndefined();
    }
  });

  it.each(['xXxq8Jr0vKc2LmN9pQ7sTuWyZ1aB3dEfG', 'TeStk4Zp9Lq2Wm7Rx0Vb5Nc8Hy3Jg6Fd1S'])(
    'when a random-looking secret only begins with the letters of a placeholder word in mixed case (%s), then it is accepted',
    (secret) => {
      expect(pseudonymSecretProblem(secret)).toBeUndefined();
    },
  );

  it.each([
    'secret_key_0123456789abcdefghijklmn',
    'xxx-0123456789-abcdefghijklmnopqrst',
    'secretkeyforlhnbridgeproductionuse',
    'defaultpseudonymsecretforthecentre',
    'examplepseudonymsecretvalue0123456',
    'ChangeMePleaseSoonAsPossible012345',
    'PASSWORDFORTHEBRIDGE0123456789ABCD',
  ])(
    'when a placeholder word is written as a word or ends at a separator or digit (%s), then it is refused',
    (secret) => {
      expect(pseudonymSecretProblem(secret)).toMatch(/looks like a placeholder/);
    },
  );

  it.each([
    SECRET,
    'generator-vs-mapper-test-secret-0123456789',
    'assemble-test-secret-0123456789abcdefgh',
    'map-command-test-secret-0123456789abcdef',
    'submission-schema-test-secret-0123456789',
    'cli-bad-input-test-secret-0123456789abcdef',
    'golden-fixture-secret-not-for-production-use',
    'bench-mapping-secret-0123456789abcdef',
    'unused-for-single-provenance-entries',
  ])(
    'when a secret of the tests, fixtures or benches (%s) is used, then it is accepted',
    (secret) => {
      expect(pseudonymSecretProblem(secret)).toBeUndefined();
    },
  );
});

/** Deterministic pseudo-random bytes (xorshift32), so the secrets above are the same each run. */
function seededBytes(seed: number): (n: number) => Buffer {
  let state = seed >>> 0 || 1;
  return (n) => {
    const out = Buffer.alloc(n);
    for (let i = 0; i < n; i++) {
      state ^= state << 13;
      state >>>= 0;
      state ^= state >>> 17;
      state ^= state << 5;
      state >>>= 0;
      out[i] = state & 0xff;
    }
    return out;
  };
}
