// The assembler writes canonical JSON with its own string and number printers and keys
// visits with a hand-made HMAC: each must match the generic function (JSON.stringify,
// createHash, createHmac) byte for byte, including strings that need escaping, non-ASCII
// text and lone surrogates.
import { describe, expect, it } from 'vitest';
import { xorshift } from '../support/xorshift.js';
import {
  canonicalJson,
  createHmacHex,
  jsonDecimal,
  jsonString,
  pseudonymKey,
  sha256Hex,
} from '../../src/registry/keys.js';
import { createHash, createHmac } from 'node:crypto';
import { roundTo } from '../../src/mapping/units.js';

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

describe('jsonString', () => {
  it('when given any text (escapes, non-ASCII, lone surrogates), then it is JSON.stringify', () => {
    const next = xorshift(0x51f15e).int;
    const alphabet = [
      'a',
      '~',
      ' ',
      '!',
      '#',
      '[',
      ']',
      '"',
      '\\',
      '\n',
      '\u001f',
      '\u007f',
      'é',
      '€',
      '😀',
      '\ud800',
      '\udc00',
    ];
    const texts = [...SAMPLES];
    for (let i = 0; i < 5000; i++) {
      let s = '';
      const length = next(12);
      for (let j = 0; j < length; j++) s += alphabet[next(i % 3 === 0 ? alphabet.length : 6)]!;
      texts.push(s);
    }
    const wrong = texts.filter((s) => jsonString(s) !== JSON.stringify(s));
    expect(wrong).toEqual([]);
    expect(canonicalJson({ b: texts[3], a: texts[9] })).toBe(
      `{"a":${jsonString(texts[9]!)},"b":${jsonString(texts[3]!)}}`,
    );
  });
});

describe('jsonDecimal', () => {
  it('when given rounded values (as the vitals are), then it writes what JSON.stringify writes', () => {
    const next = xorshift(0x9e3779b9).unit;
    const wrong: string[] = [];
    for (let i = 0; i < 200_000; i++) {
      const decimals = i % 8; // 7 is outside the fast path
      const scale = 10 ** ((i >> 3) % 12) / 1000; // 0.001 .. 1e8
      const raw = (next() - 0.2) * scale;
      const v = roundTo(raw, decimals);
      for (const x of [v, raw]) {
        if (jsonDecimal(x, decimals) !== JSON.stringify(x)) wrong.push(`${x} (${decimals})`);
      }
    }
    expect(wrong).toEqual([]);
  });

  it('when given edge values, then it writes what JSON.stringify writes', () => {
    const values = [
      0,
      -0,
      1,
      -1,
      0.1,
      0.2,
      0.1 + 0.2,
      0.3,
      1.05,
      158.7,
      158.75,
      -158.7,
      999_999_999.9,
      1e9,
      1e9 + 0.5,
      123_456_789.123456,
      1e-6,
      1.5e-6,
      1e-7,
      2 ** 53,
      1e21,
      5e-324,
      Number.MAX_VALUE,
      Number.NaN,
      Number.POSITIVE_INFINITY,
      Number.NEGATIVE_INFINITY,
    ];
    for (const v of values) {
      for (let decimals = -1; decimals <= 8; decimals++) {
        expect(jsonDecimal(v, decimals)).toBe(JSON.stringify(v));
      }
      expect(jsonDecimal(v, 1.5)).toBe(JSON.stringify(v));
    }
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
    const next = xorshift(0x2545f491).int;
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
