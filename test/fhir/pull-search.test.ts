import { randomUUID } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import nock from 'nock';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createRedisLimiter, limiterKeys } from '../../src/fhir/limiter.js';
import {
  belongsToAnotherPatient,
  CohortError,
  CohortPullRefusedError,
  parseReference,
  pullSearch,
  resolveCohort,
} from '../../src/fhir/pull-search.js';
import { EHR, bundle, collect, makeCentre, makeClient } from './helpers.js';

beforeAll(() => {
  nock.disableNetConnect();
  nock.enableNetConnect('127.0.0.1');
});
afterAll(() => nock.enableNetConnect());
afterEach(() => nock.cleanAll());

const group = {
  resourceType: 'Group',
  id: 'ibd',
  member: [
    { entity: { reference: 'Patient/p1' } },
    { entity: { reference: 'Patient/p2' }, inactive: true },
    { entity: { reference: `${EHR}/fhir/Patient/p3/_history/4` } },
    { entity: { reference: 'Practitioner/x' } },
  ],
};

describe('cohort resolution', () => {
  it('when the cohort is a Group, then active Patient members are returned and others skipped', async () => {
    const { client } = makeClient();
    nock(EHR).get('/fhir/Group/ibd').reply(200, group);
    const cohort = await resolveCohort(client, makeCentre());
    expect(cohort.patientIds).toEqual(['p1', 'p3']);
    expect(cohort.skippedMembers).toBe(2);
  });

  it('when the Group lists no members (only quantity, or a definitional Group, or none at all), then a CohortError names the Group and what it holds', async () => {
    const cases: [Record<string, unknown>, RegExp][] = [
      [{ quantity: 300 }, /holds no member entries, quantity 300\).*only how many patients/],
      [{ actual: false, member: [] }, /holds no member entries, actual false\).*definitional/],
      [{ actual: true }, /holds no member entries, actual true\)/],
      [
        { member: [{ entity: { reference: 'Patient/p9' }, inactive: true }] },
        /holds 1 member entries, none an active Patient\)/,
      ],
    ];
    for (const [fields, expected] of cases) {
      const { client } = makeClient();
      nock(EHR)
        .get('/fhir/Group/ibd')
        .reply(200, { resourceType: 'Group', id: 'ibd', type: 'person', ...fields });
      const err = await resolveCohort(client, makeCentre()).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(CohortError);
      expect((err as Error).message).toMatch(
        /the cohort Group "ibd" lists no active Patient members/,
      );
      expect((err as Error).message).toMatch(expected);
      expect((err as CohortError).hint).toMatch(/centre IT.*member entries.*cohort\.roster/);
    }
  });

  it('when the cohort Group is empty, then a search pull fails instead of finishing with no patients', async () => {
    const { client } = makeClient();
    nock(EHR).get('/fhir/Group/ibd').reply(200, { resourceType: 'Group', quantity: 12 });
    await expect(collect(pullSearch({ client, centre: makeCentre() }))).rejects.toThrow(
      /Group "ibd" lists no active Patient members \(it holds no member entries, quantity 12\)/,
    );
  });

  it('when the Group does not exist, then a CohortError says which Group and what to check', async () => {
    const { client } = makeClient();
    nock(EHR).get('/fhir/Group/ibd').reply(404);
    await expect(resolveCohort(client, makeCentre())).rejects.toThrow(CohortError);
  });

  it('when the cohort is a roster, then each line is resolved by identifier and problems are kept by line number only', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'roster-'));
    const roster = join(dir, 'roster.txt');
    writeFileSync(
      roster,
      ['# MRNs', 'urn:mrn|100', '', 'urn:mrn|200', 'no-bar-here', 'urn:mrn|300', ''].join('\n'),
    );
    const { client } = makeClient();
    nock(EHR)
      .get('/fhir/Patient')
      .query({ identifier: 'urn:mrn|100', _count: '2' })
      .reply(200, bundle([{ resourceType: 'Patient', id: 'p1' }]))
      .get('/fhir/Patient')
      .query({ identifier: 'urn:mrn|200', _count: '2' })
      .reply(200, bundle([]))
      .get('/fhir/Patient')
      .query({ identifier: 'urn:mrn|300', _count: '2' })
      .reply(
        200,
        bundle([
          { resourceType: 'Patient', id: 'p7' },
          { resourceType: 'Patient', id: 'p8' },
        ]),
      );
    const cohort = await resolveCohort(client, makeCentre({ cohort: { roster } }));
    expect(cohort.patientIds).toEqual(['p1']);
    expect(cohort.unresolved).toEqual([
      { line: 4, reason: 'not-found' },
      { line: 5, reason: 'malformed' },
      { line: 6, reason: 'ambiguous' },
    ]);
    expect(JSON.stringify(cohort)).not.toMatch(/urn:mrn/);
  });

  it('when the roster file is missing, then a CohortError names the setting to fix', async () => {
    const { client } = makeClient();
    await expect(
      resolveCohort(client, makeCentre({ cohort: { roster: '/nonexistent/roster.txt' } })),
    ).rejects.toThrow(/cohort\.roster/);
  });

  it('when references are absolute, versioned or contained, then parseReference handles each', () => {
    expect(parseReference('Patient/1')).toEqual({ type: 'Patient', id: '1' });
    expect(parseReference('https://x/fhir/Medication/m-1/_history/3')).toEqual({
      type: 'Medication',
      id: 'm-1',
    });
    expect(parseReference('#med1')).toBeUndefined();
    expect(parseReference(undefined)).toBeUndefined();
  });
});

describe('search pull', () => {
  it('when pulling in full, then each type is searched per patient with patient= (Patient by _id) and _count', async () => {
    const { client } = makeClient();
    const queries: string[] = [];
    const scope = nock(EHR)
      .get(/\/fhir\/(Patient|Encounter|Observation)$/)
      .query((q) => {
        queries.push(new URLSearchParams(q as Record<string, string>).toString());
        return true;
      })
      .times(4)
      .reply((uri) => {
        const type = /\/fhir\/(\w+)/.exec(uri)![1]!;
        const patient = /(?:patient|_id)=(\w+)/.exec(uri)![1]!;
        // A Patient found by _id has that id.
        const id = type === 'Patient' ? patient : `${type}-${patient}`;
        return [200, bundle([{ resourceType: type, id }])];
      });
    const centre = makeCentre({ pull: { pageSize: 50, resourceTypes: ['Patient', 'Encounter'] } });
    const batches = await collect(pullSearch({ client, centre, patientIds: ['p1', 'p2'] }));
    expect(batches).toEqual([
      {
        patientId: 'p1',
        resources: [
          { resourceType: 'Patient', id: 'p1' },
          { resourceType: 'Encounter', id: 'Encounter-p1' },
        ],
      },
      {
        patientId: 'p2',
        resources: [
          { resourceType: 'Patient', id: 'p2' },
          { resourceType: 'Encounter', id: 'Encounter-p2' },
        ],
      },
    ]);
    expect(queries).toEqual(
      expect.arrayContaining(['_id=p1&_count=50', 'patient=p1&_count=50', 'patient=p2&_count=50']),
    );
    expect(queries.every((q) => !q.includes('_lastUpdated'))).toBe(true);
    expect(scope.isDone()).toBe(true);
  });

  it('when pulling incrementally, then _lastUpdated=ge<since> is sent and patients with nothing new are not yielded', async () => {
    const { client } = makeClient();
    nock(EHR)
      .get('/fhir/Observation')
      .query({ patient: 'p1', _count: '200', _lastUpdated: 'ge2025-02-01T00:00:00.000Z' })
      .reply(200, bundle([{ resourceType: 'Observation', id: 'o1' }]))
      .get('/fhir/Observation')
      .query({ patient: 'p2', _count: '200', _lastUpdated: 'ge2025-02-01T00:00:00.000Z' })
      .reply(200, bundle([]));
    const progress: number[] = [];
    const batches = await collect(
      pullSearch({
        client,
        centre: makeCentre({ pull: { resourceTypes: ['Observation'] } }),
        patientIds: ['p1', 'p2'],
        since: new Date('2025-02-01T00:00:00Z'),
        onPatient: (p) => progress.push(p.index),
      }),
    );
    expect(batches.map((b) => b.patientId)).toEqual(['p1']);
    expect(progress).toEqual([0, 1]);
  });

  it('when medication orders reference Medications, then each is read once per run and added to the batch', async () => {
    const { client } = makeClient();
    const med = { resourceType: 'Medication', id: 'm1', code: { text: 'prednisolone' } };
    const order = (id: string, ref: string) => ({
      resourceType: 'MedicationRequest',
      id,
      medicationReference: { reference: ref },
    });
    const reads = nock(EHR).get('/fhir/Medication/m1').once().reply(200, med);
    nock(EHR)
      .get('/fhir/MedicationRequest')
      .query({ patient: 'p1', _count: '200' })
      .reply(200, bundle([order('r1', 'Medication/m1'), order('r2', '#contained')]))
      .get('/fhir/MedicationRequest')
      .query({ patient: 'p2', _count: '200' })
      .reply(200, bundle([order('r3', 'Medication/m1')]));
    const batches = await collect(
      pullSearch({
        client,
        centre: makeCentre({ pull: { resourceTypes: ['MedicationRequest', 'Medication'] } }),
        patientIds: ['p1', 'p2'],
        concurrency: 1,
      }),
    );
    expect(batches.map((b) => b.resources.map((r) => r.id))).toEqual([
      ['r1', 'r2', 'm1'],
      ['r3', 'm1'],
    ]);
    expect(reads.isDone()).toBe(true);
  });

  it('when no patientIds are given, then the cohort Group is resolved first and reported', async () => {
    const { client } = makeClient();
    nock(EHR)
      .get('/fhir/Group/ibd')
      .reply(200, group)
      .get('/fhir/Condition')
      .query(true)
      .times(2)
      .reply(200, bundle([{ resourceType: 'Condition', id: 'c' }]));
    let cohortSize = 0;
    const batches = await collect(
      pullSearch({
        client,
        centre: makeCentre({ pull: { resourceTypes: ['Condition'] } }),
        onCohort: (c) => (cohortSize = c.patientIds.length),
      }),
    );
    expect(cohortSize).toBe(2);
    expect(batches.map((b) => b.patientId)).toEqual(['p1', 'p3']);
  });

  it('when one patient fails after retries, then the pull fails rather than skipping that patient', async () => {
    const { client } = makeClient({ maxRetries: 0 });
    nock(EHR)
      .get('/fhir/Condition')
      .query({ patient: 'p1', _count: '200' })
      .reply(200, bundle([]))
      .get('/fhir/Condition')
      .query({ patient: 'p2', _count: '200' })
      .reply(500);
    await expect(
      collect(
        pullSearch({
          client,
          centre: makeCentre({ pull: { resourceTypes: ['Condition'] } }),
          patientIds: ['p1', 'p2'],
        }),
      ),
    ).rejects.toMatchObject({ status: 500 });
  });

  it('when requests go through a Redis limiter, then every slot is released after the pull', async () => {
    const redis = new Redis('redis://127.0.0.1:6379', { maxRetriesPerRequest: 1 });
    const prefix = `test-pull-${randomUUID()}`;
    try {
      const limiter = createRedisLimiter({
        redis,
        prefix,
        centreId: 'centre-a',
        maxConcurrent: 1,
        requestsPerSecond: 500,
        maxPollMs: 10,
      });
      const { client } = makeClient({ limiter });
      nock(EHR)
        .get('/fhir/Encounter')
        .query(true)
        .times(3)
        .reply(200, bundle([{ resourceType: 'Encounter', id: 'e' }]));
      const batches = await collect(
        pullSearch({
          client,
          centre: makeCentre({ pull: { resourceTypes: ['Encounter'] } }),
          patientIds: ['p1', 'p2', 'p3'],
          concurrency: 3,
        }),
      );
      expect(batches).toHaveLength(3);
      expect(await redis.zcard(limiterKeys(prefix, 'centre-a').leases)).toBe(0);
    } finally {
      const keys = await redis.keys(`${prefix}:*`);
      if (keys.length > 0) await redis.del(...keys);
      await redis.quit();
    }
  });
});

describe('patients whose searches the EHR refuses', () => {
  const refused = {
    resourceType: 'OperationOutcome',
    issue: [{ severity: 'fatal', code: 'security', details: { coding: [{ code: '4118' }] } }],
  };
  /** Patient searches: ids in `failing` answer 403 with an Epic-style 4118 outcome. */
  const serve = (failing: ReadonlySet<string>) =>
    nock(EHR)
      .persist()
      .get('/fhir/Patient')
      .query(true)
      .reply((uri) => {
        const id = new URL(uri, EHR).searchParams.get('_id')!;
        return failing.has(id) ? [403, refused] : [200, bundle([{ resourceType: 'Patient', id }])];
      });
  const centre = makeCentre({ pull: { resourceTypes: ['Patient'] } });

  it('when onPatientError is given, then a refused patient is reported (not yielded) and the pull goes on', async () => {
    const { client } = makeClient();
    serve(new Set(['p2']));
    const failures: { index: number; total: number; status: number }[] = [];
    const done: string[] = [];
    const batches = await collect(
      pullSearch({
        client,
        centre,
        patientIds: ['p1', 'p2', 'p3'],
        onPatient: (p) => done.push(p.patientId),
        onPatientError: (f) =>
          void failures.push({ index: f.index, total: f.total, status: f.error.status }),
      }),
    );
    expect(batches.map((b) => b.patientId)).toEqual(['p1', 'p3']);
    expect(done).toEqual(['p1', 'p3']);
    expect(failures).toEqual([{ index: 1, total: 3, status: 403 }]);
  });

  it('when no onPatientError is given, then a refused patient still ends the pull', async () => {
    const { client } = makeClient();
    serve(new Set(['p2']));
    await expect(
      collect(pullSearch({ client, centre, patientIds: ['p1', 'p2', 'p3'] })),
    ).rejects.toThrow(/HTTP 403/);
  });

  it('when more than half of at least 10 patients are refused, then the pull stops as systemic', async () => {
    const { client } = makeClient();
    const ids = Array.from({ length: 14 }, (_, i) => `p${i + 1}`);
    serve(new Set(ids.slice(4))); // p1-p4 pass, then every one fails: 6 of 10 after p10
    const failures: number[] = [];
    const err = await collect(
      pullSearch({
        client,
        centre,
        patientIds: ids,
        concurrency: 1,
        onPatientError: (f) => void failures.push(f.index),
      }),
    ).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CohortPullRefusedError);
    expect((err as Error).message).toMatch(
      /refused the searches of 6 of the 10 patients read so far \(more than half\)/,
    );
    expect(failures).toEqual([4, 5, 6, 7, 8]);
  });
});

describe('belongsToAnotherPatient', () => {
  it("when a resource's subject or patient names another Patient (relative, absolute or versioned), then it is another patient's; the searched one's, none, or a non-Patient subject is not", () => {
    const obs = (reference?: string) => ({
      resourceType: 'Observation',
      id: 'o1',
      ...(reference !== undefined ? { subject: { reference } } : {}),
    });
    expect(belongsToAnotherPatient(obs('Patient/p2'), 'p1')).toBe(true);
    expect(belongsToAnotherPatient(obs('https://ehr.example.org/fhir/R4/Patient/p2'), 'p1')).toBe(
      true,
    );
    expect(belongsToAnotherPatient(obs('Patient/p2/_history/3'), 'p1')).toBe(true);
    expect(belongsToAnotherPatient(obs('Patient/p1'), 'p1')).toBe(false);
    expect(
      belongsToAnotherPatient(obs('https://ehr.example.org/fhir/Patient/p1/_history/2'), 'p1'),
    ).toBe(false);
    expect(belongsToAnotherPatient(obs(), 'p1')).toBe(false);
    expect(belongsToAnotherPatient(obs('Group/g1'), 'p1')).toBe(false);
    expect(
      belongsToAnotherPatient(
        { resourceType: 'AllergyIntolerance', id: 'a', patient: { reference: 'Patient/p2' } },
        'p1',
      ),
    ).toBe(true);
    expect(belongsToAnotherPatient({ resourceType: 'Medication', id: 'm1' }, 'p1')).toBe(false);
    expect(belongsToAnotherPatient({ resourceType: 'Patient', id: 'p2' }, 'p1')).toBe(true);
    expect(belongsToAnotherPatient({ resourceType: 'Patient', id: 'p1' }, 'p1')).toBe(false);
  });
});
