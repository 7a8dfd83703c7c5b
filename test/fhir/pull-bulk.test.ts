import { Readable } from 'node:stream';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import nock from 'nock';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { OriginRefusedError } from '../../src/fhir/errors.js';
import {
  BulkExportError,
  buildExportUrl,
  narrowingFilters,
  pullBulk,
  typesNamedUnsupported,
  type BulkItem,
} from '../../src/fhir/pull-bulk.js';
import { BASE, EHR, collect, makeCentre, makeClient } from './helpers.js';

beforeAll(() => nock.disableNetConnect());
afterAll(() => nock.enableNetConnect());
afterEach(() => nock.cleanAll());

const STATUS = '/fhir/$export-poll/job-1';
const ndjson = (...rows: unknown[]) => rows.map((r) => JSON.stringify(r)).join('\n') + '\n';

function manifest(overrides: Record<string, unknown> = {}) {
  return {
    transactionTime: '2025-03-01T10:00:00Z',
    request: `${BASE}/Group/ibd/$export`,
    requiresAccessToken: true,
    output: [
      { type: 'Patient', url: `${EHR}/files/patient.ndjson`, count: 2 },
      { type: 'Observation', url: `${EHR}/files/obs.ndjson`, count: 1 },
    ],
    error: [],
    ...overrides,
  };
}

function kickoff(scope = nock(EHR)) {
  return scope
    .get('/fhir/Group/ibd/$export')
    .query(true)
    .reply(202, '', { 'content-location': `${EHR}${STATUS}` });
}

const sleepsOf = () => {
  const sleeps: number[] = [];
  return { sleeps, sleep: async (ms: number) => void sleeps.push(ms) };
};

describe('bulk pull', () => {
  it('when the export is polled, then Prefer/Accept, _type, _since and _typeFilter are sent and X-Progress is reported', async () => {
    const { client } = makeClient();
    const { sleeps, sleep } = sleepsOf();
    let kickoffQuery: Record<string, unknown> = {};
    nock(EHR)
      .get('/fhir/Group/ibd/$export')
      .matchHeader('prefer', 'respond-async')
      .matchHeader('accept', 'application/fhir+json')
      .query((q) => {
        kickoffQuery = q;
        return true;
      })
      .reply(202, '', { 'content-location': `${EHR}${STATUS}` })
      .get(STATUS)
      .reply(202, '', { 'x-progress': 'exporting 10%', 'retry-after': '3' })
      .get(STATUS)
      .reply(202, '', { 'x-progress': 'exporting 80%' })
      .get(STATUS)
      .reply(200, manifest())
      .get('/files/patient.ndjson')
      .matchHeader('authorization', 'Bearer token-1')
      .reply(
        200,
        ndjson({ resourceType: 'Patient', id: 'p1' }, { resourceType: 'Patient', id: 'p2' }),
      )
      .get('/files/obs.ndjson')
      .reply(200, ndjson({ resourceType: 'Observation', id: 'o1' }))
      .delete(STATUS)
      .reply(202);
    const progress: (string | undefined)[] = [];
    let transactionTime = '';
    const items = await collect(
      pullBulk({
        client,
        centre: makeCentre(),
        since: '2025-01-01T00:00:00Z',
        resourceTypes: ['Patient', 'Observation'],
        typeFilter: ['Observation?category=vital-signs'],
        sleep,
        pollIntervalMs: 1000,
        onProgress: (p) => progress.push(p.progress),
        onManifest: (m) => (transactionTime = m.transactionTime),
      }),
    );
    expect(kickoffQuery).toEqual({
      _type: 'Patient,Observation',
      _since: '2025-01-01T00:00:00Z',
      _typeFilter: 'Observation?category=vital-signs',
    });
    expect(items).toEqual([
      { kind: 'resource', resource: { resourceType: 'Patient', id: 'p1' } },
      { kind: 'resource', resource: { resourceType: 'Patient', id: 'p2' } },
      { kind: 'resource', resource: { resourceType: 'Observation', id: 'o1' } },
    ]);
    expect(progress).toEqual(['exporting 10%', 'exporting 80%']);
    expect(sleeps).toEqual([3000, 1500]);
    expect(transactionTime).toBe('2025-03-01T10:00:00Z');
    expect(nock.pendingMocks()).toEqual([]);
  });

  it('when Retry-After on the status URL is absurd, then polling waits at most the polling maximum', async () => {
    const { client } = makeClient();
    const { sleeps, sleep } = sleepsOf();
    kickoff()
      .get(STATUS)
      .reply(202, '', { 'retry-after': '1700000000' })
      .get(STATUS)
      .reply(200, manifest({ output: [] }))
      .delete(STATUS)
      .reply(202);
    await collect(pullBulk({ client, centre: makeCentre(), sleep, maxPollIntervalMs: 30_000 }));
    expect(sleeps).toEqual([30_000]);
  });

  it('when the manifest says requiresAccessToken false, then files on another origin are fetched without the token and recorded', async () => {
    const { client } = makeClient();
    const { sleep } = sleepsOf();
    kickoff()
      .get(STATUS)
      .reply(
        200,
        manifest({
          requiresAccessToken: false,
          output: [{ type: 'Patient', url: 'https://files.example/bucket/p.ndjson' }],
        }),
      )
      .delete(STATUS)
      .reply(202);
    const files = nock('https://files.example', { badheaders: ['authorization'] })
      .get('/bucket/p.ndjson')
      .reply(200, ndjson({ resourceType: 'Patient', id: 'p1' }));
    const items = await collect(pullBulk({ client, centre: makeCentre(), sleep }));
    expect(items).toHaveLength(1);
    expect(files.isDone()).toBe(true);
    expect(client.originEvents).toEqual([
      expect.objectContaining({
        origin: 'https://files.example',
        purpose: 'bulk-file',
        action: 'fetched-without-token',
      }),
    ]);
  });

  it('when a file fetched without the token is refused (an expired pre-signed URL), then the hint says so, not scopes', async () => {
    const { client } = makeClient();
    const { sleep } = sleepsOf();
    kickoff()
      .get(STATUS)
      .reply(
        200,
        manifest({
          requiresAccessToken: false,
          output: [{ type: 'Patient', url: 'https://files.example/bucket/p.ndjson?sig=x' }],
        }),
      )
      .delete(STATUS)
      .reply(202);
    nock('https://files.example').get('/bucket/p.ndjson').query(true).reply(403, 'AccessDenied');
    const message = await collect(pullBulk({ client, centre: makeCentre(), sleep })).then(
      () => 'no error',
      (err: unknown) => (err as Error).message,
    );
    expect(message).toMatch(/pre-signed storage URL .* may have expired/);
    expect(message).not.toMatch(/scopes/);
    expect(message).not.toContain('sig=x');
  });

  it('when files on another origin require the token, then they are refused and the export is cancelled', async () => {
    const { client } = makeClient();
    const { sleep } = sleepsOf();
    kickoff()
      .get(STATUS)
      .reply(
        200,
        manifest({ output: [{ type: 'Patient', url: 'https://files.example/p.ndjson' }] }),
      );
    const cancel = nock(EHR).delete(STATUS).reply(202);
    const files = nock('https://files.example').get('/p.ndjson').reply(200, '');
    await expect(collect(pullBulk({ client, centre: makeCentre(), sleep }))).rejects.toBeInstanceOf(
      OriginRefusedError,
    );
    expect(files.isDone()).toBe(false);
    expect(cancel.isDone()).toBe(true);
  });

  it('when the manifest lists error and deleted files, then outcomes and deletions are yielded', async () => {
    const { client } = makeClient();
    const { sleep } = sleepsOf();
    kickoff()
      .get(STATUS)
      .reply(
        200,
        manifest({
          output: [{ type: 'Observation', url: `${EHR}/files/obs.ndjson` }],
          deleted: [{ type: 'Bundle', url: `${EHR}/files/deleted.ndjson` }],
          error: [{ type: 'OperationOutcome', url: `${EHR}/files/errors.ndjson` }],
        }),
      )
      .get('/files/obs.ndjson')
      .reply(200, ndjson({ resourceType: 'Observation', id: 'o1' }) + 'not json at all\n')
      .get('/files/deleted.ndjson')
      .reply(
        200,
        ndjson({
          resourceType: 'Bundle',
          type: 'transaction',
          entry: [
            { request: { method: 'DELETE', url: 'Encounter/e9' } },
            { request: { method: 'DELETE', url: 'Observation/o7' } },
          ],
        }),
      )
      .get('/files/errors.ndjson')
      .reply(
        200,
        ndjson({
          resourceType: 'OperationOutcome',
          issue: [
            {
              severity: 'error',
              code: 'processing',
              details: { text: 'MedicationStatement unavailable' },
            },
          ],
        }),
      )
      .delete(STATUS)
      .reply(202);
    const items = await collect(pullBulk({ client, centre: makeCentre(), sleep }));
    expect(items.map((i) => i.kind)).toEqual(['resource', 'error', 'deleted', 'deleted', 'error']);
    expect(items[1]).toMatchObject({ kind: 'error', source: 'malformed-line', line: 2 });
    expect((items[1] as Extract<BulkItem, { kind: 'error' }>).message).not.toMatch(
      /not json at all/,
    );
    expect(items[2]).toEqual({ kind: 'deleted', resourceType: 'Encounter', id: 'e9' });
    expect(items[3]).toEqual({ kind: 'deleted', resourceType: 'Observation', id: 'o7' });
    expect(items[4]).toMatchObject({
      kind: 'error',
      source: 'error-file',
      fileType: 'OperationOutcome',
      issues: [{ severity: 'error', code: 'processing', text: 'MedicationStatement unavailable' }],
    });
    expect((items[4] as Extract<BulkItem, { kind: 'error' }>).message).toMatch(/processing/);
  });

  it('when an output file holds fewer lines than its manifest count, then an error item says how many were announced and sent; more lines give a notice', async () => {
    const { client } = makeClient();
    const { sleep } = sleepsOf();
    kickoff()
      .get(STATUS)
      .reply(
        200,
        manifest({
          output: [
            { type: 'Patient', url: `${EHR}/files/patient.ndjson`, count: 1 },
            { type: 'Observation', url: `${EHR}/files/obs.ndjson`, count: 3 },
          ],
        }),
      )
      .get('/files/patient.ndjson')
      .reply(
        200,
        ndjson({ resourceType: 'Patient', id: 'p1' }, { resourceType: 'Patient', id: 'p2' }),
      )
      // Two lines, one of them malformed (a malformed line counts as a line): 3 announced.
      .get('/files/obs.ndjson')
      .reply(200, ndjson({ resourceType: 'Observation', id: 'o1' }) + 'not json\n\n')
      .delete(STATUS)
      .reply(202);
    const items = await collect(pullBulk({ client, centre: makeCentre(), sleep }));
    expect(items.map((i) => i.kind)).toEqual([
      'resource',
      'resource',
      'notice',
      'resource',
      'error',
      'error',
    ]);
    expect(items[2]).toMatchObject({
      kind: 'notice',
      fileType: 'Patient',
      message: expect.stringMatching(
        /announced 1 Patient resources in export file 1 \(of 2\) and sent 2 \(more than announced/,
      ),
    });
    expect(items[4]).toMatchObject({ kind: 'error', source: 'malformed-line' });
    expect(items[5]).toMatchObject({
      kind: 'error',
      source: 'count-mismatch',
      fileType: 'Observation',
      line: 2,
      message: expect.stringMatching(
        /^the EHR announced 3 Observation resources in export file 2 \(of 2\) and sent 2: the file was cut short/,
      ),
    });
  });

  it('when the kick-off answers 400 naming a requested type as not supported (Epic: MedicationStatement), then the export is retried without that type', async () => {
    const { client, log } = makeClient();
    const { sleep } = sleepsOf();
    const kickoffTypes: string[] = [];
    nock(EHR)
      .get('/fhir/Group/ibd/$export')
      .query((q) => {
        kickoffTypes.push(String(q._type));
        return true;
      })
      .reply(400, {
        resourceType: 'OperationOutcome',
        issue: [
          {
            severity: 'error',
            code: 'not-supported',
            diagnostics: 'Resource type MedicationStatement is not supported',
          },
        ],
      })
      .get('/fhir/Group/ibd/$export')
      .query((q) => {
        kickoffTypes.push(String(q._type));
        return true;
      })
      .reply(202, '', { 'content-location': `${EHR}${STATUS}` })
      .get(STATUS)
      .reply(200, manifest({ output: [] }))
      .delete(STATUS)
      .reply(202);
    const centre = makeCentre({
      pull: {
        mode: 'bulk',
        resourceTypes: ['Patient', 'MedicationStatement', 'MedicationRequest'],
      },
    });
    await collect(pullBulk({ client, centre, sleep, logger: log.logger }));
    expect(kickoffTypes).toEqual([
      'Patient,MedicationStatement,MedicationRequest',
      'Patient,MedicationRequest',
    ]);
    expect(log.text()).toMatch(
      /"types":\["MedicationStatement"\].*does not support exporting some configured types/,
    );
  });

  it('when a 400 names a type but not as unsupported, or names only Medication, then the existing fallbacks apply', () => {
    const issue = (diagnostics: string, code = 'processing') => [
      { severity: 'error', code, diagnostics },
    ];
    const types = ['Patient', 'MedicationStatement', 'Medication'];
    expect(
      typesNamedUnsupported(issue('MedicationStatement export is not supported'), types),
    ).toEqual(['MedicationStatement']);
    expect(
      typesNamedUnsupported(issue('Unknown resource type: MedicationStatement'), types),
    ).toEqual(['MedicationStatement']);
    // Medication (HAPI: outside the Patient compartment) keeps its own fallback.
    expect(
      typesNamedUnsupported(
        issue('Resource types [Medication] are invalid for this type of export'),
        types,
      ),
    ).toEqual([]);
    expect(typesNamedUnsupported(issue('MedicationStatement took too long'), types)).toEqual([]);
    expect(typesNamedUnsupported(issue('bad _typeFilter', 'not-supported'), types)).toEqual([]);
  });

  it('when a 400 refuses _typeFilter and quotes the filtered types back, then no type counts as unsupported', () => {
    const types = ['Patient', 'Encounter', 'Observation', 'Condition'];
    expect(
      typesNamedUnsupported(
        [
          {
            severity: 'error',
            code: 'invalid',
            diagnostics:
              'Invalid _typeFilter value: Observation?_lastUpdated=ge2024-01-01 (unknown search parameter)',
          },
        ],
        types,
      ),
    ).toEqual([]);
    // A quoted Type?query names no type, whatever the code and wording.
    expect(
      typesNamedUnsupported(
        [
          {
            severity: 'error',
            code: 'not-supported',
            diagnostics: 'search parameter not supported in Condition?clinical-status=active',
          },
        ],
        types,
      ),
    ).toEqual([]);
    // Invalid / unknown wording without not-supported names nothing either.
    expect(
      typesNamedUnsupported(
        [{ severity: 'error', code: 'invalid', diagnostics: 'Condition: unknown parameter foo' }],
        types,
      ),
    ).toEqual([]);
  });

  it('when a 400 names Patient, Encounter or Observation as not supported, then they are never dropped', () => {
    const types = ['Patient', 'Encounter', 'Observation', 'MedicationStatement'];
    expect(
      typesNamedUnsupported(
        [
          {
            severity: 'error',
            code: 'not-supported',
            diagnostics: '_type not supported: Encounter, Observation, MedicationStatement',
          },
        ],
        types,
      ),
    ).toEqual(['MedicationStatement']);
  });

  it('when the kick-off refuses _typeFilter quoting an Observation filter back, then the export is retried without _typeFilter and keeps Observation', async () => {
    const { client } = makeClient();
    const { sleep } = sleepsOf();
    const kickoffs: { type: string; typeFilter: string | undefined }[] = [];
    const record = (q: Record<string, unknown>) => {
      kickoffs.push({
        type: String(q._type),
        typeFilter: typeof q._typeFilter === 'string' ? q._typeFilter : undefined,
      });
      return true;
    };
    nock(EHR)
      .get('/fhir/Group/ibd/$export')
      .query(record)
      .reply(400, {
        resourceType: 'OperationOutcome',
        issue: [
          {
            severity: 'error',
            code: 'invalid',
            diagnostics:
              'Invalid _typeFilter value: Observation?_lastUpdated=ge2024-01-01T00:00:00.000Z (unknown search parameter)',
          },
        ],
      })
      .get('/fhir/Group/ibd/$export')
      .query(record)
      .reply(202, '', { 'content-location': `${EHR}${STATUS}` })
      .get(STATUS)
      .reply(200, manifest({ output: [] }))
      .delete(STATUS)
      .reply(202);
    const centre = makeCentre({
      pull: { mode: 'bulk', resourceTypes: ['Patient', 'Encounter', 'Observation'] },
    });
    await collect(
      pullBulk({
        client,
        centre,
        sleep,
        updatedSince: { since: '2024-01-01T00:00:00.000Z', types: ['Observation'] },
      }),
    );
    expect(kickoffs).toEqual([
      {
        type: 'Patient,Encounter,Observation',
        typeFilter: 'Observation?_lastUpdated=ge2024-01-01T00:00:00.000Z',
      },
      { type: 'Patient,Encounter,Observation', typeFilter: undefined },
    ]);
  });

  it('when the error file holds only information and warning outcomes, then they are notices, not errors', async () => {
    const { client } = makeClient();
    const { sleep } = sleepsOf();
    const outcomeOf = (...issues: { severity: string; code: string; text: string }[]) => ({
      resourceType: 'OperationOutcome',
      issue: issues.map((i) => ({ severity: i.severity, code: i.code, details: { text: i.text } })),
    });
    kickoff()
      .get(STATUS)
      .reply(
        200,
        manifest({
          output: [],
          error: [{ type: 'OperationOutcome', url: `${EHR}/files/errors.ndjson` }],
        }),
      )
      .get('/files/errors.ndjson')
      .reply(
        200,
        ndjson(
          outcomeOf({ severity: 'information', code: 'informational', text: 'export complete' }),
          outcomeOf({ severity: 'warning', code: 'not-supported', text: '_typeFilter ignored' }),
          outcomeOf(
            { severity: 'warning', code: 'informational', text: 'slow' },
            { severity: 'error', code: 'processing', text: 'Condition unavailable' },
          ),
        ),
      )
      .delete(STATUS)
      .reply(202);
    const items = await collect(pullBulk({ client, centre: makeCentre(), sleep }));
    expect(items.map((i) => i.kind)).toEqual(['notice', 'notice', 'error']);
    expect(items[1]).toMatchObject({ kind: 'notice', line: 2, issues: [{ severity: 'warning' }] });
    // A line with an error among warnings is an error, and its message leads with the error.
    expect((items[2] as Extract<BulkItem, { kind: 'error' }>).message).toMatch(
      /line 3: error processing/,
    );
    expect((items[2] as Extract<BulkItem, { kind: 'error' }>).message).not.toMatch(/unavailable/);
  });

  it('when the status URL fails transiently more often than the retry limit, then polling rides it out', async () => {
    const { client } = makeClient({ maxRetries: 1 });
    const { sleeps, sleep } = sleepsOf();
    const transient = {
      resourceType: 'OperationOutcome',
      issue: [{ severity: 'error', code: 'transient', details: { text: 'try later' } }],
    };
    kickoff()
      .get(STATUS)
      .times(4)
      .reply(503, transient)
      .get(STATUS)
      .reply(429, '', { 'retry-after': '7' })
      .get(STATUS)
      .reply(502, 'Bad Gateway')
      .get(STATUS)
      .reply(202)
      .get(STATUS)
      .reply(200, manifest({ output: [{ type: 'Patient', url: `${EHR}/files/patient.ndjson` }] }))
      .get('/files/patient.ndjson')
      .reply(200, ndjson({ resourceType: 'Patient', id: 'p1' }))
      .delete(STATUS)
      .reply(202);
    const items = await collect(
      pullBulk({ client, centre: makeCentre(), sleep, pollIntervalMs: 1_000 }),
    );
    expect(items).toEqual([{ kind: 'resource', resource: { resourceType: 'Patient', id: 'p1' } }]);
    // One wait per failed poll (growing, Retry-After honoured) and one after the 202.
    expect(sleeps).toHaveLength(7);
    expect(sleeps[4]).toBe(7_000);
    expect(sleeps[1]).toBeGreaterThan(sleeps[0]!);
  });

  it('when the status URL says the job failed, then the pull stops at the first answer with the reason', async () => {
    const { client } = makeClient();
    const { sleep } = sleepsOf();
    const status = kickoff()
      .get(STATUS)
      .once()
      .reply(500, {
        resourceType: 'OperationOutcome',
        issue: [{ severity: 'fatal', code: 'exception', details: { text: 'export crashed' } }],
      });
    const cancel = nock(EHR).delete(STATUS).reply(202);
    const error = await collect(pullBulk({ client, centre: makeCentre(), sleep })).catch(
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(BulkExportError);
    expect((error as Error).message).toMatch(/export failed \(HTTP 500: fatal exception\)/);
    expect(status.isDone()).toBe(true);
    expect(cancel.isDone()).toBe(true);
  });

  it('when the status URL is gone, then the pull says the job was dropped', async () => {
    const { client } = makeClient();
    kickoff().get(STATUS).reply(404);
    nock(EHR).delete(STATUS).reply(404);
    await expect(collect(pullBulk({ client, centre: makeCentre() }))).rejects.toThrow(
      /export job is gone: its status URL answered HTTP 404/,
    );
  });

  it('when the status URL keeps failing, then the pull gives up after maxPollFailures', async () => {
    const { client } = makeClient();
    const { sleeps, sleep } = sleepsOf();
    kickoff().get(STATUS).times(4).reply(503);
    nock(EHR).delete(STATUS).reply(202);
    await expect(
      collect(pullBulk({ client, centre: makeCentre(), sleep, maxPollFailures: 3 })),
    ).rejects.toThrow(/failed 4 times in a row/);
    expect(sleeps).toHaveLength(3);
  });

  it('when the EHR refuses Medication in a Patient-level export, then the kick-off is retried without it', async () => {
    const { client } = makeClient();
    const { sleep } = sleepsOf();
    const types: string[] = [];
    nock(EHR)
      .get('/fhir/Group/ibd/$export')
      .times(2)
      .query((q) => {
        types.push(String(q._type));
        return true;
      })
      .reply((uri) =>
        uri.includes('Medication%2C') || /Medication(&|$)/.test(decodeURIComponent(uri))
          ? [
              400,
              {
                resourceType: 'OperationOutcome',
                issue: [
                  {
                    severity: 'error',
                    code: 'processing',
                    diagnostics: 'Resource types [Medication] are invalid for this type of export',
                  },
                ],
              },
            ]
          : [202, '', { 'content-location': `${EHR}${STATUS}` }],
      )
      .get(STATUS)
      .reply(200, manifest({ output: [] }))
      .delete(STATUS)
      .reply(202);
    const centre = makeCentre({
      pull: { mode: 'bulk', resourceTypes: ['Patient', 'MedicationStatement', 'Medication'] },
    });
    const items = await collect(pullBulk({ client, centre, sleep }));
    expect(items).toEqual([]);
    expect(types).toEqual([
      'Patient,MedicationStatement,Medication',
      'Patient,MedicationStatement',
    ]);
  });

  it('when the signal aborts while polling, then DELETE is sent to the status URL', async () => {
    const { client } = makeClient();
    const controller = new AbortController();
    kickoff().get(STATUS).reply(202, '', { 'x-progress': 'queued' });
    const cancel = nock(EHR).delete(STATUS).reply(202);
    const sleep = async () => {
      controller.abort(new Error('operator cancelled'));
      throw new Error('operator cancelled');
    };
    await expect(
      collect(pullBulk({ client, centre: makeCentre(), sleep, signal: controller.signal })),
    ).rejects.toThrow(/operator cancelled/);
    expect(cancel.isDone()).toBe(true);
  });

  it('when the consumer stops reading early, then the export job is cancelled', async () => {
    const { client } = makeClient();
    const { sleep } = sleepsOf();
    kickoff()
      .get(STATUS)
      .reply(200, manifest())
      .get('/files/patient.ndjson')
      .reply(
        200,
        ndjson({ resourceType: 'Patient', id: 'p1' }, { resourceType: 'Patient', id: 'p2' }),
      );
    const cancel = nock(EHR).delete(STATUS).reply(202);
    for await (const item of pullBulk({ client, centre: makeCentre(), sleep })) {
      expect(item.kind).toBe('resource');
      break;
    }
    expect(cancel.isDone()).toBe(true);
  });

  it('when the token expires mid-export, then the status poll gets a fresh token and continues', async () => {
    const { client, auth } = makeClient({ tokens: ['first', 'second'] });
    const { sleep } = sleepsOf();
    nock(EHR)
      .get('/fhir/Group/ibd/$export')
      .query(true)
      .matchHeader('authorization', 'Bearer first')
      .reply(202, '', { 'content-location': `${EHR}${STATUS}` })
      .get(STATUS)
      .matchHeader('authorization', 'Bearer first')
      .reply(202)
      .get(STATUS)
      .matchHeader('authorization', 'Bearer first')
      .reply(401, {
        resourceType: 'OperationOutcome',
        issue: [{ severity: 'error', code: 'expired' }],
      })
      .get(STATUS)
      .matchHeader('authorization', 'Bearer second')
      .reply(200, manifest({ output: [{ type: 'Patient', url: `${EHR}/files/patient.ndjson` }] }))
      .get('/files/patient.ndjson')
      .matchHeader('authorization', 'Bearer second')
      .reply(200, ndjson({ resourceType: 'Patient', id: 'p1' }))
      .delete(STATUS)
      .reply(202);
    const items = await collect(pullBulk({ client, centre: makeCentre(), sleep }));
    expect(items).toHaveLength(1);
    expect(auth.invalidated).toEqual(['first']);
    expect(nock.pendingMocks()).toEqual([]);
  });

  it('when the export outlives bulkTimeoutMinutes, then it fails with a hint and is cancelled', async () => {
    const { client } = makeClient();
    let clock = 0;
    kickoff().get(STATUS).times(2).reply(202);
    const cancel = nock(EHR).delete(STATUS).reply(202);
    const error = await collect(
      pullBulk({
        client,
        centre: makeCentre({ pull: { mode: 'bulk', bulkTimeoutMinutes: 1 } }),
        now: () => clock,
        sleep: async (ms) => {
          clock += ms;
        },
        pollIntervalMs: 40_000,
      }),
    ).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(BulkExportError);
    expect((error as Error).message).toMatch(/within 1 minute\(s\).*bulkTimeoutMinutes/);
    expect(cancel.isDone()).toBe(true);
  });

  it('when the kick-off is refused with an OperationOutcome, then the error carries its issues', async () => {
    const { client } = makeClient();
    nock(EHR)
      .get('/fhir/Group/ibd/$export')
      .query(true)
      .reply(403, {
        resourceType: 'OperationOutcome',
        issue: [
          { severity: 'error', code: 'forbidden', details: { text: 'bulk export not enabled' } },
        ],
      });
    await expect(collect(pullBulk({ client, centre: makeCentre() }))).rejects.toMatchObject({
      status: 403,
      issues: [{ code: 'forbidden', text: 'bulk export not enabled' }],
    });
  });

  it('when the manifest is invalid, then the error says which field and the export is cancelled', async () => {
    const { client } = makeClient();
    kickoff().get(STATUS).reply(200, { transactionTime: '2025', output: 'nope' });
    const cancel = nock(EHR).delete(STATUS).reply(202);
    await expect(collect(pullBulk({ client, centre: makeCentre() }))).rejects.toThrow(
      /manifest is invalid.*(requiresAccessToken|output)/,
    );
    expect(cancel.isDone()).toBe(true);
  });

  it('when a file download breaks off midway, then it is fetched again and no line is yielded twice', async () => {
    const { client } = makeClient();
    const { sleep } = sleepsOf();
    const lines = ndjson(
      { resourceType: 'Patient', id: 'p1' },
      { resourceType: 'Patient', id: 'p2' },
      { resourceType: 'Patient', id: 'p3' },
    );
    const firstTwo = lines.split('\n').slice(0, 2).join('\n') + '\n';
    kickoff()
      .get(STATUS)
      .reply(200, manifest({ output: [{ type: 'Patient', url: `${EHR}/files/patient.ndjson` }] }))
      .get('/files/patient.ndjson')
      .reply(200, () => {
        const stream = new Readable({ read() {} });
        stream.push(firstTwo);
        setTimeout(
          () => stream.destroy(Object.assign(new Error('socket hang up'), { code: 'ECONNRESET' })),
          20,
        );
        return stream;
      })
      .get('/files/patient.ndjson')
      .reply(200, lines)
      .delete(STATUS)
      .reply(202);
    const items = await collect(pullBulk({ client, centre: makeCentre(), sleep }));
    expect(items.map((i) => (i.kind === 'resource' ? i.resource.id : i.kind))).toEqual([
      'p1',
      'p2',
      'p3',
    ]);
  });

  it('when the cohort is a roster, then Patient/$export is used and other patients are filtered out', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'roster-'));
    writeFileSync(join(dir, 'roster.txt'), 'urn:mrn|100\n');
    const { client } = makeClient();
    const { sleep } = sleepsOf();
    nock(EHR)
      .get('/fhir/Patient')
      .query({ identifier: 'urn:mrn|100', _count: '2' })
      .reply(200, {
        resourceType: 'Bundle',
        entry: [{ resource: { resourceType: 'Patient', id: 'p1' } }],
      })
      .get('/fhir/Patient/$export')
      .query(true)
      .reply(202, '', { 'content-location': `${EHR}${STATUS}` })
      .get(STATUS)
      .reply(
        200,
        manifest({
          output: [
            { type: 'Patient', url: `${EHR}/files/patient.ndjson`, count: 2 },
            { type: 'Observation', url: `${EHR}/files/obs.ndjson`, count: 2 },
          ],
        }),
      )
      .get('/files/patient.ndjson')
      .reply(
        200,
        ndjson({ resourceType: 'Patient', id: 'p1' }, { resourceType: 'Patient', id: 'p2' }),
      )
      .get('/files/obs.ndjson')
      .reply(
        200,
        ndjson(
          { resourceType: 'Observation', id: 'o1', subject: { reference: 'Patient/p1' } },
          { resourceType: 'Observation', id: 'o2', subject: { reference: 'Patient/p2' } },
        ),
      )
      .delete(STATUS)
      .reply(202);
    const centre = makeCentre({ cohort: { roster: join(dir, 'roster.txt') } });
    const items = await collect(pullBulk({ client, centre, sleep }));
    expect(items.map((i) => (i.kind === 'resource' ? i.resource.id : i.kind))).toEqual([
      'p1',
      'o1',
    ]);
  });
});

describe('the kick-off URL', () => {
  it('when several _typeFilter queries apply, then they go as one comma-joined value and a query’s own commas stay %2C', () => {
    const centre = makeCentre({
      pull: {
        mode: 'bulk',
        resourceTypes: ['Patient', 'Encounter', 'Observation'],
        searches: { Observation: [{ category: 'vital-signs' }, { code: 'a,b' }] },
      },
    });
    const filters = narrowingFilters(
      centre,
      ['Encounter', 'Observation'],
      new Set(['Encounter', 'Observation']),
      '2024-01-01T00:00:00.000Z',
    );
    const url = buildExportUrl(BASE, centre, { typeFilter: filters });
    expect(url.searchParams.getAll('_typeFilter')).toEqual([
      'Encounter?_lastUpdated=ge2024-01-01T00:00:00.000Z,' +
        'Observation?category=vital-signs&_lastUpdated=ge2024-01-01T00:00:00.000Z,' +
        'Observation?code=a%2Cb&_lastUpdated=ge2024-01-01T00:00:00.000Z',
    ]);
    expect(
      url.searchParams
        .get('_typeFilter')!
        .split(/,(?=[A-Z][A-Za-z]+\?)/)
        .map((q) => new URLSearchParams(q.slice(q.indexOf('?') + 1)).get('code')),
    ).toEqual([null, null, 'a,b']);
    expect(buildExportUrl(BASE, centre).searchParams.has('_typeFilter')).toBe(false);
  });
});
