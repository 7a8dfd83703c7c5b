// The assembler writes canonical JSON by hand into a HashWriter and keys visits with a
// hand-made HMAC: both must match the generic functions byte for byte, including strings
// that need escaping, non-ASCII text and lone surrogates.
import { describe, expect, it } from 'vitest';
import {
  canonicalJson,
  createHmacHex,
  HashWriter,
  pseudonymKey,
  sha256Hex,
} from '../../src/registry/keys.js';
import { createHash, createHmac } from 'node:crypto';

const SAMPLES = [
  '',
  'obs-000001-013',
  '2022-11-12T01:47:00Z',
  'say "hi"',
  'back\\slash',
  'line\nbreak\ttab\r',
  '\u0000\u001f\u007f',
  'é€ü',
  '\u2028\u2029',
  '😀 emoji',
  '\ud800 lone high', // ("lone": not well-formed text)
  'lone low \udc00',
  '</script>',
];

describe('HashWriter', () => {
  it('when strings are written as JSON string literals, then the hash is that of JSON.stringify', () => {
    const w = new HashWriter();
    for (const s of SAMPLES) {
      w.str(s);
      expect(w.sha256Hex()).toBe(sha256Hex(JSON.stringify(s)));
    }
  });

  it('when text, strings and numbers are mixed beyond the initial buffer, then the hash is that of the joined text', () => {
    const w = new HashWriter();
    let expected = '';
    for (let round = 0; round < 400; round++) {
      for (const s of SAMPLES) {
        if (!s.includes('lone')) {
          w.text(s);
          expected += s;
        }
        w.str(s);
        expected += JSON.stringify(s);
      }
      for (const v of [0, -0, 1.5, 158.7, 1e21, Number.NaN, null]) {
        w.num(v);
        expected += JSON.stringify(v);
      }
    }
    expect(expected.length).toBeGreaterThan(16_384);
    expect(w.sha256Hex()).toBe(sha256Hex(expected));
    // After a hash it starts afresh.
    w.text('{}');
    expect(w.sha256Hex()).toBe(sha256Hex('{}'));
    expect(canonicalJson({})).toBe('{}');
  });
});

describe('sha256Hex', () => {
  it('when given text with non-ASCII characters, then it hashes the UTF-8 bytes like createHash', () => {
    for (const s of SAMPLES) {
      expect(sha256Hex(s)).toBe(createHash('sha256').update(s, 'utf8').digest('hex'));
    }
  });
});

describe('createHmacHex and pseudonymKey', () => {
  const secrets = [
    '',
    's',
    'bench-mapping-secret-0123456789abcdef',
    'x'.repeat(64),
    'y'.repeat(65),
    'clé-€-😀'.repeat(12),
  ];
  const messages = ['', 'c|Encounter/enc-1', 'é€😀', 'z'.repeat(300), 'w€'.repeat(500)];

  it('when keyed with any secret (short, block-sized, longer than a block, non-ASCII), then it equals createHmac', () => {
    for (const secret of secrets) {
      const hmac = createHmacHex(secret);
      for (const m of messages) {
        expect(hmac(m)).toBe(createHmac('sha256', secret).update(m, 'utf8').digest('hex'));
      }
    }
  });

  it('when keyed with random secrets and given many random messages (ASCII, non-ASCII, lone surrogates, long), then it equals createHmac', () => {
    // Deterministic pseudo-random generator, so a failure reproduces.
    let state = 0x2545f491;
    const next = (n: number): number => {
      state ^= state << 13;
      state ^= state >>> 17;
      state ^= state << 5;
      return (state >>> 0) % n;
    };
    const alphabet = [
      'a',
      'Z',
      '0',
      '|',
      '/',
      '-',
      ' ',
      '"',
      '\\',
      '\n',
      'é',
      'ß',
      '€',
      '中',
      '😀',
      '\ud800',
      '\udfff',
      '\u0000',
      '\u007f',
      '\u0080',
      '\uffff',
    ];
    const randomText = (max: number): string => {
      const length = next(max + 1);
      let s = '';
      for (let i = 0; i < length; i++) s += alphabet[next(alphabet.length)]!;
      return s;
    };
    for (let k = 0; k < 40; k++) {
      const secret = randomText(k % 4 === 0 ? 200 : 40);
      const hmac = createHmacHex(secret);
      for (let m = 0; m < 60; m++) {
        const message = randomText(m % 10 === 0 ? 1500 : 80);
        expect(hmac(message)).toBe(
          createHmac('sha256', secret).update(message, 'utf8').digest('hex'),
        );
      }
    }
  });

  it('when the secret changes between calls, then pseudonymKey uses the new secret', () => {
    for (const secret of [...secrets, secrets[2]!]) {
      expect(pseudonymKey(secret, 'c1', 'Patient', 'p-1')).toBe(
        createHmac('sha256', secret).update('c1|Patient/p-1').digest('hex'),
      );
    }
  });
});
