// The string quoting used when the assembler writes canonical JSON by hand must match
// JSON.stringify byte for byte, including the strings it has to escape.
import { describe, expect, it } from 'vitest';
import {
  canonicalJson,
  createHmacHex,
  jsonString,
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
  '\ud800 lone high',
  'lone low \udc00',
  '</script>',
];

describe('jsonString', () => {
  it('when a string needs no escaping or does, then the output equals JSON.stringify', () => {
    for (const s of SAMPLES) expect(jsonString(s)).toBe(JSON.stringify(s));
  });

  it('when used inside canonical JSON, then the result parses back to the same value', () => {
    for (const s of SAMPLES) {
      expect(JSON.parse(`{"a":${jsonString(s)}}`)).toEqual({ a: s });
      expect(canonicalJson({ a: s })).toBe(`{"a":${jsonString(s)}}`);
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

  it('when the secret changes between calls, then pseudonymKey uses the new secret', () => {
    for (const secret of [...secrets, secrets[2]!]) {
      expect(pseudonymKey(secret, 'c1', 'Patient', 'p-1')).toBe(
        createHmac('sha256', secret).update('c1|Patient/p-1').digest('hex'),
      );
    }
  });
});
