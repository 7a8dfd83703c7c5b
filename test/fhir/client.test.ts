import nock from 'nock';
import { afterEach, beforeAll, afterAll, describe, expect, it } from 'vitest';
import {
  FhirHttpError,
  FhirNetworkError,
  IncompleteSearchError,
  MalformedFhirResponseError,
  OriginRefusedError,
} from '../../src/fhir/errors.js';
import { SmartAuthError } from '../../src/auth/errors.js';
import { createMetrics } from '../../src/util/metrics.js';
import { BASE, EHR, bundle, collect, makeClient } from './helpers.js';

beforeAll(() => {
  nock.disableNetConnect();
});
afterAll(() => {
  nock.enableNetConnect();
});
afterEach(() => {
  nock.cleanAll();
});

const patient = { resourceType: 'Patient', id: 'p1' };

describe('FHIR client retries', () => {
  it('when the EHR answers 429 with Retry-After in seconds, then it waits that long and retries', async () => {
    const { client, sleeps } = makeClient();
    const scope = nock(EHR)
      .get('/fhir/Patient/p1')
      .reply(429, '', { 'retry-after': '7' })
      .get('/fhir/Patient/p1')
      .reply(200, patient);
    expect(await client.read('Patient', 'p1')).toEqual(patient);
    expect(sleeps).toEqual([7000]);
    expect(scope.isDone()).toBe(true);
  });

  it('when Retry-After is an HTTP date, then the wait is the time until that date', async () => {
    const now = Date.parse('2025-03-01T10:00:00Z');
    const { client, sleeps } = makeClient({ now: () => now });
    nock(EHR)
      .get('/fhir/Patient/p1')
      .reply(429, '', { 'retry-after': 'Sat, 01 Mar 2025 10:00:42 GMT' })
      .get('/fhir/Patient/p1')
      .reply(200, patient);
    await client.read('Patient', 'p1');
    expect(sleeps).toEqual([42_000]);
  });

  it('when Retry-After is an absurd epoch value, then the wait is capped and the cap is logged', async () => {
    const { client, sleeps, log } = makeClient({ maxRetryAfterSeconds: 90 });
    nock(EHR)
      .get('/fhir/Patient/p1')
      .reply(503, '', { 'retry-after': '1700000000' })
      .get('/fhir/Patient/p1')
      .reply(200, patient);
    await client.read('Patient', 'p1');
    expect(sleeps).toEqual([90_000]);
    expect(log.text()).toMatch(/capped/);
    expect(log.text()).toMatch(/"requestedSeconds":1700000000/);
  });

  it('when Retry-After is a date years ahead, then the wait is capped too', async () => {
    const { client, sleeps } = makeClient({ maxRetryAfterSeconds: 60 });
    nock(EHR)
      .get('/fhir/Patient/p1')
      .reply(429, '', { 'retry-after': 'Fri, 01 Jan 2100 00:00:00 GMT' })
      .get('/fhir/Patient/p1')
      .reply(200, patient);
    await client.read('Patient', 'p1');
    expect(sleeps).toEqual([60_000]);
  });

  it('when the EHR answers 503 then 200, then the backoff uses full jitter and the retry succeeds', async () => {
    const { client, sleeps } = makeClient();
    nock(EHR).get('/fhir/Patient/p1').reply(503).get('/fhir/Patient/p1').reply(200, patient);
    expect(await client.read('Patient', 'p1')).toEqual(patient);
    // random() = 0.5 and the first ceiling is 500 ms
    expect(sleeps).toEqual([250]);
  });

  it('when failures repeat, then the backoff ceiling doubles each retry', async () => {
    const { client, sleeps } = makeClient({ maxRetries: 3 });
    nock(EHR)
      .get('/fhir/Patient/p1')
      .times(3)
      .reply(502)
      .get('/fhir/Patient/p1')
      .reply(200, patient);
    await client.read('Patient', 'p1');
    expect(sleeps).toEqual([250, 500, 1000]);
  });

  it('when the EHR answers 408, then the request is retried', async () => {
    const { client } = makeClient();
    const scope = nock(EHR)
      .get('/fhir/Patient/p1')
      .reply(408)
      .get('/fhir/Patient/p1')
      .reply(200, patient);
    await client.read('Patient', 'p1');
    expect(scope.isDone()).toBe(true);
  });

  it('when the connection is reset, then the request is retried', async () => {
    const { client, sleeps } = makeClient();
    nock(EHR)
      .get('/fhir/Patient/p1')
      .replyWithError({ code: 'ECONNRESET', message: 'socket hang up' })
      .get('/fhir/Patient/p1')
      .reply(200, patient);
    expect(await client.read('Patient', 'p1')).toEqual(patient);
    expect(sleeps).toHaveLength(1);
  });

  it('when every attempt is reset, then a FhirNetworkError names the code after maxRetries', async () => {
    const { client } = makeClient({ maxRetries: 2 });
    const scope = nock(EHR)
      .get('/fhir/Patient/p1')
      .times(3)
      .replyWithError({ code: 'ECONNRESET', message: 'socket hang up' });
    const error = await client.read('Patient', 'p1').catch((e: unknown) => e);
    expect(error).toBeInstanceOf(FhirNetworkError);
    expect((error as FhirNetworkError).code).toBe('ECONNRESET');
    expect(scope.isDone()).toBe(true);
  });

  it('when the EHR does not answer within the timeout, then the attempt is aborted and retried', async () => {
    const { client } = makeClient({ requestTimeoutMs: 50, maxRetries: 1 });
    const scope = nock(EHR)
      .get('/fhir/Patient/p1')
      .delay(2_000)
      .reply(200, patient)
      .get('/fhir/Patient/p1')
      .reply(200, patient);
    expect(await client.read('Patient', 'p1')).toEqual(patient);
    expect(scope.isDone()).toBe(true);
  });

  it('when every attempt times out, then the error says timeout', async () => {
    const { client } = makeClient({ requestTimeoutMs: 30, maxRetries: 1 });
    nock(EHR).get('/fhir/Patient/p1').times(2).delay(2_000).reply(200, patient);
    const error = await client.read('Patient', 'p1').catch((e: unknown) => e);
    expect(error).toBeInstanceOf(FhirNetworkError);
    expect((error as FhirNetworkError).code).toBe('timeout');
  });

  it('when retries are exhausted on 503, then the FhirHttpError is marked retryable', async () => {
    const { client } = makeClient({ maxRetries: 1 });
    nock(EHR).get('/fhir/Patient/p1').times(2).reply(503);
    const error = await client.read('Patient', 'p1').catch((e: unknown) => e);
    expect(error).toBeInstanceOf(FhirHttpError);
    expect((error as FhirHttpError).status).toBe(503);
    expect((error as FhirHttpError).retryable).toBe(true);
  });

  it('when the EHR answers 400, then it is not retried', async () => {
    const { client, sleeps } = makeClient();
    nock(EHR).get('/fhir/Patient/p1').reply(400);
    await expect(client.read('Patient', 'p1')).rejects.toBeInstanceOf(FhirHttpError);
    expect(sleeps).toEqual([]);
  });
});

describe('FHIR client errors', () => {
  it('when the EHR sends an OperationOutcome, then its issues are parsed into the error without PHI in the message', async () => {
    const { client } = makeClient();
    nock(EHR)
      .get('/fhir/Observation')
      .query(true)
      .reply(400, {
        resourceType: 'OperationOutcome',
        issue: [
          {
            severity: 'error',
            code: 'not-supported',
            details: { text: 'Parameter not supported' },
            diagnostics: 'patient MRN-778812 Jane Doe',
            expression: ['Observation.code'],
          },
        ],
      });
    const error = (await collect(
      client.searchPages('Observation', { patient: 'MRN-778812', code: 'x' }),
    ).catch((e: unknown) => e)) as FhirHttpError;
    expect(error).toBeInstanceOf(FhirHttpError);
    expect(error.status).toBe(400);
    expect(error.issues).toEqual([
      {
        severity: 'error',
        code: 'not-supported',
        text: 'Parameter not supported',
        diagnostics: 'patient MRN-778812 Jane Doe',
        expression: ['Observation.code'],
      },
    ]);
    // Free text (details.text, diagnostics) stays on the error, out of the message.
    expect(error.message).toMatch(/error not-supported \[the outcome's free text is left out/);
    expect(error.message).not.toMatch(/Parameter not supported/);
    expect(error.message).not.toMatch(/MRN-778812|Jane/);
    expect(error.url).toBe(`${BASE}/Observation?patient=…&code=…`);
  });

  it('when a search is refused with 400, then the hint names the searched type and the setting to change, and speaks of category or code only for Observation', async () => {
    const refuse = async (type: string, issue: Record<string, unknown>) => {
      const { client } = makeClient();
      nock(EHR)
        .get(`/fhir/${type}`)
        .query(true)
        .reply(400, { resourceType: 'OperationOutcome', issue: [issue] });
      const error = (await collect(client.searchPages(type, { patient: 'p1', _count: 200 })).catch(
        (e: unknown) => e,
      )) as FhirHttpError;
      expect(error).toBeInstanceOf(FhirHttpError);
      return error.message;
    };
    const invalid = { severity: 'error', code: 'invalid', diagnostics: 'bad request' };
    const patient = await refuse('Patient', invalid);
    expect(patient).toMatch(/refused the Patient search/);
    expect(patient).toMatch(/pull\.searches\.Patient/);
    expect(patient).toMatch(/pull\.pageSize/);
    expect(patient).not.toMatch(/Observation|category/);
    const observation = await refuse('Observation', invalid);
    expect(observation).toMatch(/refused the Observation search/);
    expect(observation).toMatch(/category or code on Observation \(Epic does\)/);
    expect(observation).toMatch(/pull\.searches\.Observation/);
    const count = await refuse('Encounter', {
      severity: 'error',
      code: 'invalid',
      diagnostics: '_count must not exceed 100',
    });
    expect(count).toMatch(
      /refused the Encounter search's page size \(_count\): lower pull\.pageSize/,
    );
    expect(count).not.toMatch(/must not exceed/);
  });
});

describe('FHIR client authentication', () => {
  it('when the EHR answers 401, then the token is invalidated and the request retried once with a fresh one', async () => {
    const { client, auth } = makeClient({ tokens: ['old', 'fresh'] });
    const scope = nock(EHR)
      .get('/fhir/Patient/p1')
      .matchHeader('authorization', 'Bearer old')
      .reply(401)
      .get('/fhir/Patient/p1')
      .matchHeader('authorization', 'Bearer fresh')
      .reply(200, patient);
    expect(await client.read('Patient', 'p1')).toEqual(patient);
    expect(auth.invalidated).toEqual(['old']);
    expect(scope.isDone()).toBe(true);
  });

  it('when the fresh token is rejected too, then the request fails with 401 after exactly one refresh', async () => {
    const { client, auth } = makeClient({ tokens: ['old', 'fresh', 'third'] });
    const scope = nock(EHR).get('/fhir/Patient/p1').times(2).reply(401);
    const error = await client.read('Patient', 'p1').catch((e: unknown) => e);
    expect(error).toBeInstanceOf(FhirHttpError);
    expect((error as FhirHttpError).status).toBe(401);
    expect((error as FhirHttpError).message).toMatch(/freshly issued/);
    expect(auth.invalidated).toEqual(['old']);
    expect(scope.isDone()).toBe(true);
    expect(nock.pendingMocks()).toEqual([]);
  });

  it('when the token cannot be obtained, then the auth error propagates unchanged and nothing is sent', async () => {
    const { client, auth, sleeps } = makeClient();
    const authError = Object.assign(new Error('SMART token failed: invalid_client'), {
      code: 'invalid_client',
    });
    auth.getAccessToken = () => Promise.reject(authError);
    const scope = nock(EHR).get('/fhir/Patient/p1').reply(200, patient);
    await expect(client.read('Patient', 'p1')).rejects.toBe(authError);
    expect(sleeps).toEqual([]);
    expect(scope.isDone()).toBe(false);
  });

  it('when the token endpoint answers 429 with Retry-After, then the request waits that long and retries', async () => {
    const { client, auth, sleeps } = makeClient({ maxRetries: 3 });
    const getToken = auth.getAccessToken.bind(auth);
    let calls = 0;
    auth.getAccessToken = () =>
      ++calls === 1
        ? Promise.reject(
            new SmartAuthError({
              step: 'token',
              code: 'temporarily_unavailable',
              status: 429,
              hint: 'busy',
              retryable: true,
              retryAfter: '7',
            }),
          )
        : getToken();
    const scope = nock(EHR).get('/fhir/Patient/p1').reply(200, patient);
    expect(await client.read('Patient', 'p1')).toEqual(patient);
    expect(sleeps).toEqual([7000]);
    expect(calls).toBe(2);
    expect(scope.isDone()).toBe(true);
  });

  it('when the token endpoint stays unavailable, then the retries are bounded by maxRetries and the auth error surfaces', async () => {
    const { client, auth, sleeps } = makeClient({ maxRetries: 2 });
    const unavailable = new SmartAuthError({
      step: 'token',
      code: 'server_error',
      status: 503,
      hint: 'down',
      retryable: true,
    });
    let calls = 0;
    auth.getAccessToken = () => {
      calls += 1;
      return Promise.reject(unavailable);
    };
    const scope = nock(EHR).get('/fhir/Patient/p1').reply(200, patient);
    await expect(client.read('Patient', 'p1')).rejects.toBe(unavailable);
    expect(calls).toBe(3);
    expect(sleeps).toEqual([250, 500]);
    expect(scope.isDone()).toBe(false);
  });

  it('when the caller aborts while the token is being fetched, then the request is never sent', async () => {
    const { client, auth } = makeClient();
    const caller = new AbortController();
    const stop = new Error('worker shutting down');
    const getToken = auth.getAccessToken.bind(auth);
    auth.getAccessToken = async () => {
      // The abort lands while the client awaits its token, before the request exists.
      caller.abort(stop);
      return getToken();
    };
    const scope = nock(EHR).get('/fhir/Patient/p1').reply(200, patient);
    await expect(client.read('Patient', 'p1', { signal: caller.signal })).rejects.toBe(stop);
    expect(scope.isDone()).toBe(false);
  });

  it('when requests are logged at debug level, then neither the token nor query values appear', async () => {
    const { client, log } = makeClient({ tokens: ['secret-token-value'] });
    nock(EHR)
      .get('/fhir/Patient')
      .query({ identifier: 'urn:mrn|12345', _count: '2' })
      .reply(200, bundle([patient]));
    await collect(client.searchResources('Patient', { identifier: 'urn:mrn|12345', _count: 2 }));
    expect(log.text()).toMatch(/FHIR request/);
    expect(log.text()).not.toMatch(/secret-token-value|12345/);
  });
});

describe('FHIR client paging and the origin guard', () => {
  it('when a search has next links, then every page is read in order', async () => {
    const { client } = makeClient();
    nock(EHR)
      .get('/fhir/Observation')
      .query({ patient: 'p1', _count: '2' })
      .reply(200, bundle([{ resourceType: 'Observation', id: 'o1' }], `${BASE}/Observation?page=2`))
      .get('/fhir/Observation')
      .query({ page: '2' })
      .reply(200, bundle([{ resourceType: 'Observation', id: 'o2' }]));
    const resources = await collect(
      client.searchResources('Observation', { patient: 'p1', _count: 2 }),
    );
    expect(resources.map((r) => r.id)).toEqual(['o1', 'o2']);
  });

  it('when a searchset carries OperationOutcome notices, marked outcome or not, then only the data is yielded', async () => {
    const { client } = makeClient();
    const notice = {
      resourceType: 'OperationOutcome',
      issue: [{ severity: 'warning', code: 'informational', details: { text: 'no results' } }],
    };
    nock(EHR)
      .get('/fhir/Observation')
      .query(true)
      .reply(200, {
        resourceType: 'Bundle',
        type: 'searchset',
        entry: [
          { resource: notice, search: { mode: 'outcome' } },
          { resource: { resourceType: 'Observation', id: 'o1' }, search: { mode: 'match' } },
          // Some EHRs send the notice without search.mode.
          { resource: notice },
        ],
      });
    const resources = await collect(client.searchResources('Observation', { patient: 'p1' }));
    expect(resources.map((r) => `${r.resourceType}/${r.id}`)).toEqual(['Observation/o1']);
  });

  it('when a searchset carries an error OperationOutcome entry, then the search fails as incomplete naming the type and issue, never the query values', async () => {
    const { client } = makeClient();
    nock(EHR)
      .get('/fhir/Encounter')
      .query(true)
      .reply(200, bundle([{ resourceType: 'Encounter', id: 'e1' }], `${BASE}/Encounter?page=2`))
      .get('/fhir/Encounter')
      .query({ page: '2' })
      .reply(200, {
        resourceType: 'Bundle',
        type: 'searchset',
        entry: [
          { resource: { resourceType: 'Encounter', id: 'e2' }, search: { mode: 'match' } },
          {
            resource: {
              resourceType: 'OperationOutcome',
              issue: [
                {
                  severity: 'error',
                  code: 'processing',
                  details: {
                    coding: [{ system: 'urn:ehr:codes', code: 'PARTIAL-59100' }],
                    text: 'Some results could not be returned',
                  },
                  diagnostics: 'secret diagnostics for MRN-4711',
                },
              ],
            },
            search: { mode: 'outcome' },
          },
        ],
      });
    const got: string[] = [];
    const err = await (async () => {
      for await (const r of client.searchResources('Encounter', { patient: 'MRN-4711' }))
        got.push(r.id!);
    })().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(IncompleteSearchError);
    const message = (err as Error).message;
    expect(message).toMatch(/incomplete Encounter search \(page 2/);
    expect(message).toMatch(/error processing/);
    expect(message).not.toMatch(/MRN-4711|secret diagnostics/);
    // The incomplete page is not handed on.
    expect(got).toEqual(['e1']);
  });

  it('when a searchset notice has code incomplete, too-costly or throttled (even as a warning), or severity fatal, then the search fails', async () => {
    for (const [severity, code] of [
      ['warning', 'incomplete'],
      ['warning', 'too-costly'],
      ['information', 'throttled'],
      ['fatal', 'exception'],
    ]) {
      const { client } = makeClient();
      nock(EHR)
        .get('/fhir/Observation')
        .query(true)
        .reply(200, {
          resourceType: 'Bundle',
          type: 'searchset',
          entry: [
            // no search.mode: still an OperationOutcome entry
            { resource: { resourceType: 'OperationOutcome', issue: [{ severity, code }] } },
          ],
        });
      await expect(
        collect(client.searchResources('Observation', { patient: 'p1' })),
      ).rejects.toThrow(new RegExp(`incomplete Observation search.*${severity} ${code}`));
    }
  });

  it('when a searchset carries warning or information notices, then the data is yielded and each notice is logged without query values', async () => {
    const { client, log } = makeClient();
    const notice = {
      resourceType: 'OperationOutcome',
      issue: [
        {
          severity: 'warning',
          code: 'not-supported',
          details: { coding: [{ code: 'IGNORED-PARAM' }] },
          diagnostics: 'patient MRN-4711',
        },
      ],
    };
    nock(EHR)
      .get('/fhir/Observation')
      .query(true)
      .times(2)
      .reply(200, {
        resourceType: 'Bundle',
        type: 'searchset',
        entry: [
          { resource: { resourceType: 'Observation', id: 'o1' } },
          { resource: notice, search: { mode: 'outcome' } },
        ],
      });
    expect(
      await collect(client.searchResources('Observation', { patient: 'MRN-4711' })),
    ).toHaveLength(1);
    expect(
      await collect(client.searchResources('Observation', { patient: 'MRN-4711' })),
    ).toHaveLength(1);
    const lines = log.lines.filter((l) => l.includes('notice to a search result'));
    // Logged the first time; the same notice again is counted, not logged again.
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/"level":40/);
    expect(lines[0]).toMatch(/warning not-supported: IGNORED-PARAM/);
    expect(log.text()).not.toMatch(/MRN-4711/);
  });

  it('when a next link points to another origin, then it is refused, recorded, and that host gets no request', async () => {
    const { client, log } = makeClient();
    nock(EHR)
      .get('/fhir/Observation')
      .query(true)
      .reply(
        200,
        bundle([{ resourceType: 'Observation', id: 'o1' }], 'https://evil.example/steal?page=2'),
      );
    const foreign = nock('https://evil.example').get('/steal').query(true).reply(200, bundle([]));
    const seen: string[] = [];
    const error = await (async () => {
      for await (const page of client.searchPages('Observation', { patient: 'p1' }))
        seen.push(String(page.entry?.length));
    })().catch((e: unknown) => e);
    expect(error).toBeInstanceOf(OriginRefusedError);
    expect((error as OriginRefusedError).origin).toBe('https://evil.example');
    expect(seen).toEqual(['1']);
    expect(foreign.isDone()).toBe(false);
    expect(client.originEvents).toEqual([
      expect.objectContaining({
        purpose: 'next-link',
        origin: 'https://evil.example',
        action: 'refused',
      }),
    ]);
    expect(log.text()).toMatch(/refused to send the access token/);
    expect(log.text()).not.toMatch(/steal/);
  });

  it('when a next link downgrades to http on the same host, then it is refused', async () => {
    const { client } = makeClient();
    nock(EHR)
      .get('/fhir/Observation')
      .query(true)
      .reply(200, bundle([], 'http://ehr.example/fhir/Observation?page=2'));
    await expect(collect(client.searchPages('Observation', {}))).rejects.toBeInstanceOf(
      OriginRefusedError,
    );
  });

  it("when a next link names the EHR's internal address (proxy misconfiguration), then it is refused and the error says the EHR's base address is wrong", async () => {
    for (const next of [
      'http://ehr.example/fhir?_getpages=abc&_getpagesoffset=10',
      'http://localhost:8080/fhir?_getpages=abc&_getpagesoffset=10',
    ]) {
      const { client } = makeClient();
      const internal = nock('http://localhost:8080').get(/.*/).reply(200, bundle([]));
      nock(EHR)
        .get('/fhir/Observation')
        .query(true)
        .reply(200, bundle([{ resourceType: 'Observation', id: 'o1' }], next));
      const err = await collect(client.searchPages('Observation', { patient: 'p1' })).catch(
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(OriginRefusedError);
      const message = (err as Error).message;
      expect(message).toContain(`(${new URL(next).origin} instead of ${EHR}`);
      expect(message).toMatch(/paging \(next\) links from a wrong base address/);
      expect(message).toMatch(/hapi\.fhir\.server_address/);
      expect(message).toMatch(/X-Forwarded-Host and X-Forwarded-Proto/);
      // Not the bulk-file advice, and no query values.
      expect(message).not.toMatch(/without a token|requiresAccessToken|abc/);
      expect(internal.isDone()).toBe(false);
      nock.cleanAll();
    }
  });

  it('when a redirect points to another origin, then the token is not sent there', async () => {
    const { client } = makeClient();
    nock(EHR).get('/fhir/Patient/p1').reply(302, '', { location: 'https://other.example/p1' });
    const foreign = nock('https://other.example').get('/p1').reply(200, patient);
    await expect(client.read('Patient', 'p1')).rejects.toBeInstanceOf(OriginRefusedError);
    expect(foreign.isDone()).toBe(false);
  });

  it('when a bulk file download redirects to another origin (pre-signed URL), then it is followed without the token', async () => {
    const { client } = makeClient({ tokens: ['secret-token'] });
    const signed = 'https://bucket.example/exports/obs.ndjson?X-Amz-Signature=abc';
    const ehr = nock(EHR)
      .get('/files/obs.ndjson')
      .matchHeader('authorization', 'Bearer secret-token')
      .reply(302, '', { location: signed });
    const bucket = nock('https://bucket.example', { badheaders: ['authorization'] })
      .get('/exports/obs.ndjson')
      .query({ 'X-Amz-Signature': 'abc' })
      .reply(200, '{"resourceType":"Observation","id":"o1"}\n');
    for (const purpose of ['bulk-file', 'bulk-error-file', 'bulk-deleted-file'] as const) {
      if (purpose !== 'bulk-file') {
        ehr.get('/files/obs.ndjson').reply(302, '', { location: signed });
        bucket.get('/exports/obs.ndjson').query(true).reply(200, '{}\n');
      }
      const response = await client.request(`${EHR}/files/obs.ndjson`, { purpose });
      expect(await response.text()).toMatch(/\n$/);
    }
    expect(ehr.isDone()).toBe(true);
    expect(bucket.isDone()).toBe(true);
    expect(client.originEvents).toEqual(
      ['bulk-file', 'bulk-error-file', 'bulk-deleted-file'].map((purpose) =>
        expect.objectContaining({
          purpose,
          origin: 'https://bucket.example',
          action: 'fetched-without-token',
        }),
      ),
    );
  });

  it('when a bulk file redirect crosses origins and comes back, then the token is not sent again', async () => {
    const { client } = makeClient();
    nock(EHR)
      .get('/files/obs.ndjson')
      .reply(302, '', { location: 'https://cdn.example/obs.ndjson' });
    nock('https://cdn.example')
      .get('/obs.ndjson')
      .reply(302, '', { location: `${EHR}/files/obs-2.ndjson` });
    const back = nock(EHR, { badheaders: ['authorization'] })
      .get('/files/obs-2.ndjson')
      .reply(200, '{}\n');
    await (await client.request(`${EHR}/files/obs.ndjson`, { purpose: 'bulk-file' })).text();
    expect(back.isDone()).toBe(true);
  });

  it('when a bulk file redirects from https to http, or a status poll redirects to another origin, then it is refused', async () => {
    const { client } = makeClient();
    nock(EHR)
      .get('/files/obs.ndjson')
      .reply(302, '', { location: 'http://bucket.example/obs.ndjson' })
      .get('/fhir/$export-poll/1')
      .reply(302, '', { location: 'https://bucket.example/status' });
    const plain = nock('http://bucket.example').get('/obs.ndjson').reply(200, '{}\n');
    const status = nock('https://bucket.example').get('/status').reply(200, {});
    await expect(
      client.request(`${EHR}/files/obs.ndjson`, { purpose: 'bulk-file' }),
    ).rejects.toBeInstanceOf(OriginRefusedError);
    await expect(
      client.request(`${BASE}/$export-poll/1`, { purpose: 'bulk-status' }),
    ).rejects.toBeInstanceOf(OriginRefusedError);
    expect(plain.isDone()).toBe(false);
    expect(status.isDone()).toBe(false);
  });

  it('when a next link is relative (query only, or a path), then it resolves against the page that held it', async () => {
    const { client } = makeClient();
    const scope = nock(EHR)
      .get('/fhir/Observation')
      .query({ patient: 'p1' })
      .reply(200, bundle([{ resourceType: 'Observation', id: 'o1' }], '?page=2&patient=p1'))
      .get('/fhir/Observation')
      .query({ page: '2', patient: 'p1' })
      .reply(200, bundle([{ resourceType: 'Observation', id: 'o2' }], `${BASE}/paging/abc?page=3`))
      // Relative to /fhir/paging/abc, not to the base /fhir/.
      .get('/fhir/paging/abc')
      .query({ page: '3' })
      .reply(200, bundle([{ resourceType: 'Observation', id: 'o3' }], 'def?page=4'))
      .get('/fhir/paging/def')
      .query({ page: '4' })
      .reply(200, bundle([{ resourceType: 'Observation', id: 'o4' }]));
    const resources = await collect(client.searchResources('Observation', { patient: 'p1' }));
    expect(resources.map((r) => r.id)).toEqual(['o1', 'o2', 'o3', 'o4']);
    expect(scope.isDone()).toBe(true);
  });

  it('when a search answers 200 with an OperationOutcome, then the error carries its issues', async () => {
    const { client } = makeClient();
    nock(EHR)
      .get('/fhir/Observation')
      .query(true)
      .reply(200, {
        resourceType: 'OperationOutcome',
        issue: [{ severity: 'error', code: 'too-costly', diagnostics: 'Search too broad' }],
      });
    const error = (await collect(client.searchPages('Observation', { patient: 'p1' })).catch(
      (e: unknown) => e,
    )) as MalformedFhirResponseError;
    expect(error).toBeInstanceOf(MalformedFhirResponseError);
    expect(error.issues).toEqual([
      { severity: 'error', code: 'too-costly', diagnostics: 'Search too broad' },
    ]);
    expect(error.message).toMatch(
      /page 1 of the Observation search.*OperationOutcome instead of a Bundle \(OperationOutcome: error too-costly \[the outcome's free text is left out[^\]]*\]\)/,
    );
    expect(error.message).toMatch(/pull\.searches/);
    // Diagnostics are free text (may name a patient): on the error object, not in the message.
    expect(error.message).not.toMatch(/Search too broad/);
  });

  it('when a next page answers 410 (paging cursor expired), then the search restarts once from page 1 and yields each resource once', async () => {
    const { client, log } = makeClient();
    const gone = {
      resourceType: 'OperationOutcome',
      issue: [{ severity: 'error', code: 'not-found', diagnostics: 'Search id expired' }],
    };
    const obs = (id: string) => ({ resourceType: 'Observation', id });
    const scope = nock(EHR)
      .get('/fhir/Observation')
      .query({ patient: 'p1' })
      .reply(200, bundle([obs('o1'), obs('o2')], `${BASE}?_getpages=a&page=2`))
      .get('/fhir')
      .query({ _getpages: 'a', page: '2' })
      .reply(410, gone)
      .get('/fhir/Observation')
      .query({ patient: 'p1' })
      .reply(200, bundle([obs('o0'), obs('o1')], `${BASE}?_getpages=b&page=2`))
      .get('/fhir')
      .query({ _getpages: 'b', page: '2' })
      .reply(200, bundle([obs('o2'), obs('o3')]));
    const resources = await collect(client.searchResources('Observation', { patient: 'p1' }));
    expect(resources.map((r) => r.id)).toEqual(['o1', 'o2', 'o0', 'o3']);
    expect(scope.isDone()).toBe(true);
    expect(log.text()).toMatch(/paging cursor expired/);
  });

  it('when the paging cursor expires again after the restart, then the search fails saying so', async () => {
    const { client } = makeClient();
    const page1 = bundle([{ resourceType: 'Observation', id: 'o1' }], `${BASE}?_getpages=a`);
    nock(EHR)
      .get('/fhir/Observation')
      .query(true)
      .times(2)
      .reply(200, page1)
      .get('/fhir')
      .query({ _getpages: 'a' })
      .times(2)
      .reply(410);
    const error = (await collect(client.searchPages('Observation', { patient: 'p1' })).catch(
      (e: unknown) => e,
    )) as FhirHttpError;
    expect(error).toBeInstanceOf(FhirHttpError);
    expect(error.status).toBe(410);
    expect(error.message).toMatch(/paging cursor expired.*again after the search was restarted/);
    expect(nock.pendingMocks()).toEqual([]);
  });

  it('when a search cannot tell what it already yielded (an entry without id), then a 410 is not restarted', async () => {
    const { client } = makeClient();
    nock(EHR)
      .get('/fhir/Observation')
      .query(true)
      .reply(200, bundle([{ resourceType: 'Observation' }], `${BASE}?_getpages=a`))
      .get('/fhir')
      .query({ _getpages: 'a' })
      .reply(410);
    await expect(collect(client.searchPages('Observation', {}))).rejects.toThrow(
      /paging cursor expired.*cannot be restarted/,
    );
  });

  it('when the first page of a search answers 410, then it is not restarted', async () => {
    const { client } = makeClient();
    const scope = nock(EHR).get('/fhir/Observation').query(true).reply(410);
    const error = await collect(client.searchPages('Observation', {})).catch((e: unknown) => e);
    expect(error).toMatchObject({ status: 410 });
    expect((error as Error).message).not.toMatch(/paging cursor/);
    expect(scope.isDone()).toBe(true);
  });

  it('when page 2 is not JSON, then the error names the page and not the body', async () => {
    const { client } = makeClient();
    nock(EHR)
      .get('/fhir/Encounter')
      .query(true)
      .reply(200, bundle([], `${BASE}/Encounter?page=2`))
      .get('/fhir/Encounter')
      .query({ page: '2' })
      .reply(200, '{"resourceType":"Bundle","entry":[{"resource":{"name":"Jane Doe"');
    const error = await collect(client.searchPages('Encounter', {})).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(MalformedFhirResponseError);
    expect((error as Error).message).toMatch(/page 2 of the Encounter search/);
    expect((error as Error).message).not.toMatch(/Jane/);
  });

  it('when a page entry has a resource without resourceType, then the page is rejected as malformed', async () => {
    const { client } = makeClient();
    nock(EHR)
      .get('/fhir/Encounter')
      .query(true)
      .reply(200, { resourceType: 'Bundle', entry: [{ resource: { id: 'x' } }] });
    await expect(collect(client.searchPages('Encounter', {}))).rejects.toThrow(
      /page 1 of the Encounter search.*entry\[0\]\.resource has no resourceType/,
    );
  });

  it('when a next link repeats an earlier page, then paging stops with an error instead of looping', async () => {
    const { client } = makeClient();
    nock(EHR)
      .get('/fhir/Encounter')
      .query({ page: '1' })
      .reply(200, bundle([], `${BASE}/Encounter?page=2`))
      .get('/fhir/Encounter')
      .query({ page: '2' })
      .reply(200, bundle([], `${BASE}/Encounter?page=1`));
    await expect(collect(client.searchPages('Encounter', { page: 1 }))).rejects.toThrow(
      /already read/,
    );
  });

  /** An EHR whose next links keep changing while its pages repeat: `same`, then `second` too on page 2. */
  function repeatingPages(total?: number): () => number {
    let n = 0;
    nock(EHR)
      .get('/fhir/Observation')
      .query(true)
      .times(50)
      .reply(() => {
        n += 1;
        return [
          200,
          {
            ...bundle(
              [
                { resourceType: 'Observation', id: 'same' },
                ...(n === 2 ? [{ resourceType: 'Observation', id: 'second' }] : []),
              ],
              `${BASE}/Observation?patient=p1&_getpagesoffset=${n * 50}`,
            ),
            ...(total !== undefined ? { total } : {}),
          },
        ];
      });
    return () => n;
  }

  it('when next links keep changing but three pages in a row repeat resources already returned and the EHR gives no total, then the search fails as unreadable to its end (it could be a paging token the EHR ignores)', async () => {
    const { client } = makeClient();
    const requests = repeatingPages();
    const error = await collect(client.searchResources('Observation', { patient: 'p1' })).catch(
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(MalformedFhirResponseError);
    expect((error as Error).message).toMatch(
      /page 5 of the Observation search.*3 pages in a row hold only resources this search already returned \(2 distinct, and the EHR gives no total\).*cannot be read to its end/,
    );
    // Page 2 adds `second`; pages 3 to 5 repeat `same` only: no further page is asked for.
    expect(requests()).toBe(5);
  });

  it('when the total says fewer resources than it counts were read, then the search fails too', async () => {
    const { client } = makeClient();
    repeatingPages(3);
    await expect(collect(client.searchResources('Observation', { patient: 'p1' }))).rejects.toThrow(
      /\(2 distinct of the 3 it counts\)/,
    );
  });

  it('when all the resources the total counts were read, then paging stops at the repeats with a warning', async () => {
    const { client, log } = makeClient();
    const requests = repeatingPages(2);
    const resources = await collect(client.searchResources('Observation', { patient: 'p1' }));
    expect(resources.map((r) => r.id)).toEqual(['same', 'same', 'second', 'same', 'same']);
    expect(requests()).toBe(5);
    expect(log.text()).toMatch(
      /"level":40.*3 pages of a search in a row.*all 2 it counts were read; paging stopped there/,
    );
  });

  it('when resources added while paging (newest first) make a page repeat earlier ones, then paging goes on and the later pages are read', async () => {
    const { client } = makeClient();
    // Offset paging, two per page, newest first: o8 and o7 arrive after page 1 was read, so
    // page 2 (offset 2) holds o6, o5 again; pages 3 and 4 hold o4..o1.
    const before = ['o6', 'o5', 'o4', 'o3', 'o2', 'o1'];
    const after = ['o8', 'o7', ...before];
    nock(EHR)
      .get('/fhir/Observation')
      .query(true)
      .times(10)
      .reply((uri) => {
        const offset = Number(new URL(uri, EHR).searchParams.get('_offset') ?? 0);
        const list = offset === 0 ? before : after;
        const page = list.slice(offset, offset + 2);
        const next =
          offset + 2 < list.length
            ? `${BASE}/Observation?patient=p1&_offset=${offset + 2}`
            : undefined;
        return [
          200,
          bundle(
            page.map((id) => ({ resourceType: 'Observation', id })),
            next,
          ),
        ];
      });
    const resources = await collect(client.searchResources('Observation', { patient: 'p1' }));
    expect(new Set(resources.map((r) => r.id))).toEqual(new Set(before));
  });

  it('when a search has more pages than fhir.maxPagesPerSearch, then it fails saying so', async () => {
    const { client } = makeClient({ maxPagesPerSearch: 3 });
    let n = 0;
    nock(EHR)
      .get('/fhir/Observation')
      .query(true)
      .times(10)
      .reply(() => {
        n += 1;
        return [
          200,
          bundle(
            [{ resourceType: 'Observation', id: `o${n}` }],
            `${BASE}/Observation?page=${n + 1}`,
          ),
        ];
      });
    await expect(collect(client.searchResources('Observation', { patient: 'p1' }))).rejects.toThrow(
      /page 4 of the Observation search.*more than 3 pages \(fhir\.maxPagesPerSearch\)/,
    );
    expect(n).toBe(3);
  });
});

describe('FHIR client metrics', () => {
  it('when requests succeed and fail, then fhirRequests counts each attempt by status', async () => {
    const metrics = createMetrics();
    const { client } = makeClient({ metrics });
    nock(EHR).get('/fhir/Patient/p1').reply(503).get('/fhir/Patient/p1').reply(200, patient);
    await client.read('Patient', 'p1');
    const values = (await metrics.fhirRequests.get()).values;
    const count = (status: string) =>
      values.find((v) => v.labels.status === status && v.labels.resource_type === 'Patient')?.value;
    expect(count('503')).toBe(1);
    expect(count('200')).toBe(1);
    const seconds = (await metrics.fhirRequestSeconds.get()).values.find(
      (v) => v.metricName === 'lhn_fhir_request_duration_seconds_count',
    );
    expect(seconds?.value).toBe(2);
  });
});
