import { describe, expect, it } from 'vitest';
import { OriginRefusedError, PlainHttpRefusedError } from '../../src/fhir/errors.js';
import { createOriginGuard } from '../../src/fhir/origin-guard.js';
import {
  computeBackoffMs,
  createRetryPolicy,
  isRetryableNetworkCode,
  networkErrorCode,
  parseRetryAfter,
} from '../../src/fhir/retry.js';
import { redactUrl } from '../../src/fhir/errors.js';

const now = Date.parse('2025-03-01T10:00:00Z');

describe('Retry-After parsing', () => {
  it('when the value is seconds, then it is used as is below the cap', () => {
    expect(parseRetryAfter('30', { now, maxSeconds: 60 })).toEqual({
      seconds: 30,
      requestedSeconds: 30,
      capped: false,
    });
  });

  it('when the value is an HTTP date in the past, then the wait is zero', () => {
    expect(parseRetryAfter('Sat, 01 Mar 2025 09:00:00 GMT', { now, maxSeconds: 60 })?.seconds).toBe(
      0,
    );
  });

  it('when the value is an epoch timestamp or a huge number, then it is capped', () => {
    expect(parseRetryAfter('1700000000', { now, maxSeconds: 300 })).toMatchObject({
      seconds: 300,
      capped: true,
    });
    expect(parseRetryAfter('9'.repeat(400), { now, maxSeconds: 300 })?.seconds).toBe(300);
  });

  it('when the value is garbage or negative, then it is ignored', () => {
    expect(parseRetryAfter('soon', { now, maxSeconds: 60 })).toBeUndefined();
    expect(parseRetryAfter('-5', { now, maxSeconds: 60 })).toBeUndefined();
    expect(parseRetryAfter('', { now, maxSeconds: 60 })).toBeUndefined();
    expect(parseRetryAfter(null, { now, maxSeconds: 60 })).toBeUndefined();
  });
});

describe('backoff and network errors', () => {
  it('when random() is at its top, then the backoff stays under the ceiling and the max delay', () => {
    const policy = createRetryPolicy(
      { maxRetries: 10, maxRetryAfterSeconds: 60 },
      { random: () => 0.999, baseDelayMs: 100, maxDelayMs: 1000 },
    );
    expect(computeBackoffMs(1, policy)).toBe(99);
    expect(computeBackoffMs(3, policy)).toBe(399);
    expect(computeBackoffMs(10, policy)).toBe(999);
  });

  it('when undici wraps a socket error in a TypeError, then the inner code is found', () => {
    const err = new TypeError('fetch failed', {
      cause: Object.assign(new Error('other side closed'), { code: 'UND_ERR_SOCKET' }),
    });
    expect(networkErrorCode(err)).toBe('UND_ERR_SOCKET');
    expect(isRetryableNetworkCode('UND_ERR_SOCKET')).toBe(true);
    expect(networkErrorCode(new DOMException('t', 'TimeoutError'))).toBe('timeout');
    expect(networkErrorCode(new Error('plain bug'))).toBeUndefined();
  });

  it('when a TLS certificate is bad, then the failure is not retried', () => {
    expect(isRetryableNetworkCode('CERT_HAS_EXPIRED')).toBe(false);
    expect(isRetryableNetworkCode('ENOTFOUND')).toBe(false);
  });
});

describe('origin guard', () => {
  const guard = () => createOriginGuard({ baseUrl: 'https://ehr.example/fhir/R4', maxEvents: 2 });

  it('when a link is relative, then it resolves under the base and keeps the token', () => {
    const decision = guard().check('Observation?page=2', 'next-link');
    expect(decision.url.href).toBe('https://ehr.example/fhir/R4/Observation?page=2');
    expect(decision.sendToken).toBe(true);
  });

  it('when the same host uses another port, then it counts as a foreign origin', () => {
    expect(() => guard().check('https://ehr.example:8443/fhir/x', 'next-link')).toThrow(
      OriginRefusedError,
    );
  });

  it('when a URL is not http(s), then it is refused even without a token', () => {
    expect(() =>
      guard().check('file:///etc/passwd', 'bulk-file', { tokenRequired: false }),
    ).toThrow(OriginRefusedError);
  });

  it('when a bulk file URL is plain http on a host that is not loopback, then it is refused even without a token (security review 6)', () => {
    for (const purpose of ['bulk-file', 'bulk-error-file', 'bulk-deleted-file'] as const) {
      const g = guard();
      let error: unknown;
      try {
        g.check('http://files.example.net/export/Patient.ndjson', purpose, {
          tokenRequired: false,
        });
      } catch (err) {
        error = err;
      }
      expect(error, purpose).toBeInstanceOf(PlainHttpRefusedError);
      expect(error).toBeInstanceOf(OriginRefusedError);
      expect((error as Error).message).toMatch(/plain http:\/\/ .*unencrypted.*https/);
      expect(g.events.at(-1)).toMatchObject({
        purpose,
        origin: 'http://files.example.net',
        action: 'refused',
      });
    }
    // The same with the token asked for, and a redirect chain ending on plain http.
    expect(() => guard().check('http://files.example.net/f.ndjson', 'bulk-file')).toThrow(
      PlainHttpRefusedError,
    );
    // Loopback (the sandbox) stays allowed.
    const local = createOriginGuard({ baseUrl: 'http://127.0.0.1:8080/fhir' });
    expect(
      local.check('http://127.0.0.1:8080/files/1.ndjson', 'bulk-file', { tokenRequired: true })
        .sendToken,
    ).toBe(true);
    expect(
      local.check('http://localhost:9000/files/1.ndjson', 'bulk-file', { tokenRequired: false })
        .sendToken,
    ).toBe(false);
  });

  it('when many foreign URLs are seen, then only the most recent events are kept', () => {
    const g = guard();
    for (const host of ['a', 'b', 'c'])
      g.check(`https://${host}.example/f`, 'bulk-file', { tokenRequired: false });
    expect(g.events.map((e) => e.origin)).toEqual(['https://b.example', 'https://c.example']);
  });
});

describe('URL redaction', () => {
  it('when a URL carries identifying query values, then only parameter names remain', () => {
    expect(redactUrl('https://ehr/fhir/Patient?identifier=urn:mrn|123&identifier=x&_count=2')).toBe(
      'https://ehr/fhir/Patient?identifier=…&_count=…',
    );
  });
});
