// The bulk pull through the client layer's guards, with nock for the EHR: the cancelling
// DELETE when the centre's sync window closes mid-export, and file downloads that the EHR
// redirects to an object store on another origin.
import nock from 'nock';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { OutsideSyncWindowError, type FhirLimiter } from '../../src/fhir/limiter.js';
import { pullBulk } from '../../src/fhir/pull-bulk.js';
import { EHR, collect, makeCentre, makeClient } from './helpers.js';

beforeAll(() => nock.disableNetConnect());
afterAll(() => nock.enableNetConnect());
afterEach(() => nock.cleanAll());

const STATUS = '/fhir/$export-poll/job-1';

/** A limiter whose sync window closes after `grants` requests (the limiter's own error). */
function closingWindowLimiter(grants: number) {
  const calls: { ignoreSyncWindow: boolean }[] = [];
  const limiter: FhirLimiter = {
    acquire(_signal, options) {
      calls.push({ ignoreSyncWindow: options?.ignoreSyncWindow ?? false });
      if (calls.length > grants && !options?.ignoreSyncWindow)
        return Promise.reject(
          new OutsideSyncWindowError({
            centreId: 'centre-a',
            window: { start: '01:00', end: '05:00' },
            timeZone: 'UTC',
            opensAt: '2025-03-02T01:00:00.000Z',
          }),
        );
      return Promise.resolve({ grantedAtMs: Date.now(), release: () => Promise.resolve() });
    },
  };
  return { limiter, calls };
}

describe('bulk pull and the client layer', () => {
  it('when the sync window closes while the export is polled, then the pull fails and the export is still cancelled with DELETE', async () => {
    const { limiter, calls } = closingWindowLimiter(3); // kick-off and two polls
    const { client } = makeClient({ limiter });
    const scope = nock(EHR)
      .get('/fhir/Group/ibd/$export')
      .query(true)
      .reply(202, '', { 'content-location': `${EHR}${STATUS}` })
      .get(STATUS)
      .times(2)
      .reply(202, '', { 'retry-after': '1' });
    const cancel = nock(EHR).delete(STATUS).reply(202);
    const error = await collect(
      pullBulk({ client, centre: makeCentre(), sleep: () => Promise.resolve() }),
    ).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(OutsideSyncWindowError);
    expect(scope.isDone()).toBe(true);
    expect(cancel.isDone()).toBe(true);
    // Only the cleanup asked to skip the window; the refused poll did not.
    expect(calls.map((c) => c.ignoreSyncWindow)).toEqual([false, false, false, false, true]);
  });

  it('when the manifest requires the token and the file URL redirects to an object store, then the file is read there without the token', async () => {
    const { client } = makeClient({ tokens: ['secret-token'] });
    nock(EHR)
      .get('/fhir/Group/ibd/$export')
      .query(true)
      .reply(202, '', { 'content-location': `${EHR}${STATUS}` })
      .get(STATUS)
      .reply(200, {
        transactionTime: '2025-03-01T10:00:00Z',
        request: `${EHR}/fhir/Group/ibd/$export`,
        requiresAccessToken: true,
        output: [{ type: 'Patient', url: `${EHR}/files/patient.ndjson` }],
        error: [],
      })
      .get('/files/patient.ndjson')
      .matchHeader('authorization', 'Bearer secret-token')
      .reply(302, '', {
        location: 'https://bucket.example/exports/patient.ndjson?X-Amz-Signature=abc',
      })
      .delete(STATUS)
      .reply(202);
    const bucket = nock('https://bucket.example', { badheaders: ['authorization'] })
      .get('/exports/patient.ndjson')
      .query(true)
      .reply(200, '{"resourceType":"Patient","id":"p1"}\n');
    const items = await collect(
      pullBulk({ client, centre: makeCentre(), sleep: () => Promise.resolve() }),
    );
    expect(items).toEqual([{ kind: 'resource', resource: { resourceType: 'Patient', id: 'p1' } }]);
    expect(bucket.isDone()).toBe(true);
    expect(client.originEvents).toEqual([
      expect.objectContaining({ purpose: 'bulk-file', action: 'fetched-without-token' }),
    ]);
  });
});
