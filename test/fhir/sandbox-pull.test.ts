// Integration: the pull layer against the project's sandbox EHR over loopback, with real
// SMART auth (keys, client assertion, token endpoint) and a small hand-made centre.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { createSmartAuth } from '../../src/auth/smart-client.js';
import { createFhirClient, type FhirClient } from '../../src/fhir/client.js';
import { FhirHttpError, OriginRefusedError } from '../../src/fhir/errors.js';
import {
  narrowingFilters,
  pullBulk,
  type PendingExport,
  type PendingExportStore,
} from '../../src/fhir/pull-bulk.js';
import { pullSearch } from '../../src/fhir/pull-search.js';
import { startSandboxEhr, type SandboxEhr } from '../../src/sandbox/ehr/index.js';
import { provisionSandboxCentre } from '../../src/sandbox/ehr/provision.js';
import type { CentreConfig } from '../../src/config/centre.js';
import type { FhirResource } from '../../src/fhir/types.js';
import { collect, createCapturingLogger } from './helpers.js';

const OLD = { versionId: '1', lastUpdated: '2024-06-01T00:00:00Z' };
const COHORT = ['p1', 'p2', 'p3'];
const OBSERVATION_CATEGORY = 'http://terminology.hl7.org/CodeSystem/observation-category';

/** A small centre: three cohort patients, one outsider, a shared Medication. */
function buildResources(): FhirResource[] {
  const resources: FhirResource[] = [
    {
      resourceType: 'Medication',
      id: 'm-pred',
      meta: OLD,
      code: { text: 'prednisolone 5 mg tablet' },
    },
    {
      resourceType: 'Group',
      id: 'ibd',
      meta: OLD,
      type: 'person',
      actual: true,
      member: COHORT.map((id) => ({ entity: { reference: `Patient/${id}` } })),
    },
  ];
  for (const patient of [...COHORT, 'p9']) {
    const subject = { reference: `Patient/${patient}` };
    resources.push({ resourceType: 'Patient', id: patient, meta: OLD, gender: 'female' });
    for (let i = 1; i <= 2; i++)
      resources.push({
        resourceType: 'Encounter',
        id: `${patient}-e${i}`,
        meta: OLD,
        status: 'finished',
        class: { system: 'http://terminology.hl7.org/CodeSystem/v3-ActCode', code: 'AMB' },
        subject,
        period: { start: `2024-0${i}-10T09:00:00Z` },
      });
    for (let i = 1; i <= 3; i++)
      resources.push({
        resourceType: 'Observation',
        id: `${patient}-o${i}`,
        meta: OLD,
        status: 'final',
        // o1 vital-signs, o2 both, o3 exam: two category searches overlap on o2.
        category: (i === 1 ? ['vital-signs'] : i === 2 ? ['vital-signs', 'exam'] : ['exam']).map(
          (code) => ({ coding: [{ system: OBSERVATION_CATEGORY, code }] }),
        ),
        code: { coding: [{ system: 'http://loinc.org', code: '8302-2' }] },
        subject,
        valueQuantity: { value: 120 + i, unit: 'cm' },
      });
    resources.push({
      resourceType: 'Condition',
      id: `${patient}-c1`,
      meta: OLD,
      subject,
      code: { coding: [{ system: 'http://snomed.info/sct', code: '34000006' }] },
    });
    resources.push({
      resourceType: 'MedicationRequest',
      id: `${patient}-mr1`,
      meta: OLD,
      status: 'active',
      intent: 'order',
      subject,
      medicationReference: { reference: 'Medication/m-pred' },
    });
    resources.push({
      resourceType: 'MedicationStatement',
      id: `${patient}-ms1`,
      meta: OLD,
      status: 'active',
      subject,
      medicationCodeableConcept: { text: 'mesalamine' },
    });
  }
  return resources;
}

/** `Type/id` of every resource the cohort's pull should return. */
function expectedKeys(): string[] {
  return buildResources()
    .filter((r) => r.resourceType !== 'Group' && !String(r.id).startsWith('p9'))
    .map((r) => `${r.resourceType}/${r.id}`)
    .sort();
}

const keyOf = (r: FhirResource) => `${r.resourceType}/${r.id}`;

/** A height Observation of a patient, as the EHR would store a new or changed one. */
function heightObservation(id: string, patient: string, value: number, status = 'final') {
  return {
    resourceType: 'Observation',
    id,
    status,
    code: { coding: [{ system: 'http://loinc.org', code: '8302-2' }] },
    subject: { reference: `Patient/${patient}` },
    valueQuantity: { value, unit: 'cm' },
  };
}

interface Fixture {
  ehr: SandboxEhr;
  centre: CentreConfig;
  client: FhirClient;
  clock: { offsetMs: number };
  close: () => Promise<void>;
}

let fixture: Fixture | undefined;
afterEach(async () => {
  await fixture?.close();
  fixture = undefined;
});

async function startFixture(
  options: {
    mode?: 'search' | 'bulk';
    tokenLifetimeSeconds?: number;
    searches?: Record<string, Record<string, string>[]>;
  } = {},
): Promise<Fixture> {
  const keysDir = await mkdtemp(join(tmpdir(), 'lhn-fhir-'));
  const clock = { offsetMs: 0 };
  const ehr = await startSandboxEhr({
    resources: buildResources() as never,
    now: () => Date.now() + clock.offsetMs,
    exportPollsBeforeDone: 2,
    exportMaxLinesPerFile: 4,
    ...(options.tokenLifetimeSeconds ? { tokenLifetimeSeconds: options.tokenLifetimeSeconds } : {}),
  });
  const { centre } = await provisionSandboxCentre(ehr, {
    keysDir,
    centreId: 'sandbox-a',
    centre: {
      cohort: { group: 'ibd' },
      pull: {
        mode: options.mode ?? 'search',
        pageSize: 2,
        ...(options.searches ? { searches: options.searches } : {}),
      },
    },
  });
  const auth = createSmartAuth({ centre });
  const client = createFhirClient({
    centre,
    auth,
    config: { requestTimeoutMs: 10_000, maxRetries: 3, maxRetryAfterSeconds: 5 },
    retry: { sleep: async () => undefined },
  });
  fixture = {
    ehr,
    centre,
    client,
    clock,
    close: async () => {
      await ehr.close();
      await rm(keysDir, { recursive: true, force: true });
    },
  };
  return fixture;
}

/** A bulk pull with Encounters and Observations bounded to updates since `since`. */
function pullEventsSince(client: FhirClient, centre: CentreConfig, since: Date) {
  return collect(
    pullBulk({
      client,
      centre,
      updatedSince: { since, types: ['Encounter', 'Observation'] },
      sleep: async () => undefined,
    }),
  );
}

describe('pull against the sandbox EHR', () => {
  it('when a full search-mode pull runs, then every cohort resource (and the referenced Medication) arrives, nobody else', async () => {
    const { ehr, centre, client } = await startFixture();
    const batches = await collect(pullSearch({ client, centre }));
    expect(batches.map((b) => b.patientId)).toEqual(COHORT);
    const keys = [...new Set(batches.flatMap((b) => b.resources.map(keyOf)))].sort();
    expect(keys).toEqual(expectedKeys());
    // Observations (3 per patient, page size 2) needed a next link per patient.
    const observationSearches = ehr.requests.filter(
      (r) => r.kind === 'search' && r.resourceType === 'Observation',
    );
    expect(observationSearches).toHaveLength(COHORT.length * 2);
    // The shared Medication was read once for the whole run.
    expect(
      ehr.requests.filter((r) => r.kind === 'read' && r.resourceType === 'Medication'),
    ).toHaveLength(1);
  });

  it('when the EHR refuses Observation searches without a category, then the pull fails saying so and naming pull.searches', async () => {
    const { ehr, centre, client } = await startFixture();
    ehr.faults.set({ requireSearchParams: { Observation: ['category', 'code'] } });
    const error = await collect(pullSearch({ client, centre })).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(FhirHttpError);
    expect((error as FhirHttpError).status).toBe(400);
    expect((error as FhirHttpError).issues[0]?.diagnostics).toMatch(
      /needs one of these parameters: category, code/,
    );
    expect((error as Error).message).toMatch(/pull\.searches/);
  });

  it('when pull.searches gives Observation two category searches, then each runs per patient and every Observation arrives once', async () => {
    const { ehr, centre, client } = await startFixture({
      searches: {
        Observation: [{ category: `${OBSERVATION_CATEGORY}|vital-signs` }, { category: 'exam' }],
      },
    });
    ehr.faults.set({ requireSearchParams: { Observation: ['category', 'code'] } });
    const batches = await collect(pullSearch({ client, centre }));
    expect(batches.map((b) => b.patientId)).toEqual(COHORT);
    // o2 matches both searches and still arrives once in its patient's batch.
    for (const b of batches) {
      const keys = b.resources.map(keyOf);
      expect(new Set(keys).size).toBe(keys.length);
      expect(keys.filter((k) => k.startsWith('Observation/'))).toHaveLength(3);
    }
    const keys = [...new Set(batches.flatMap((b) => b.resources.map(keyOf)))].sort();
    expect(keys).toEqual(expectedKeys());
    const observationSearches = ehr.requests.filter(
      (r) => r.kind === 'search' && r.resourceType === 'Observation',
    );
    expect(observationSearches.every((r) => r.status === 200)).toBe(true);
    // Two matches per category and page size 2: one page per search, two searches a patient.
    expect(observationSearches).toHaveLength(COHORT.length * 2);
    expect(observationSearches.filter((r) => r.url.includes('category=exam'))).toHaveLength(
      COHORT.length,
    );
    // Other types are searched plainly, once each.
    expect(
      ehr.requests.filter((r) => r.kind === 'search' && r.resourceType === 'Condition'),
    ).toHaveLength(COHORT.length);
  });

  it('when an incremental pull runs after two changes, then only the changed resources are fetched', async () => {
    const { ehr, centre, client } = await startFixture();
    const since = new Date(Date.now() - 1000);
    ehr.upsert(heightObservation('p2-o1', 'p2', 130, 'amended'));
    ehr.upsert({
      resourceType: 'Encounter',
      id: 'p3-e3',
      status: 'finished',
      class: { system: 'http://terminology.hl7.org/CodeSystem/v3-ActCode', code: 'VR' },
      subject: { reference: 'Patient/p3' },
      period: { start: '2025-01-10T09:00:00Z' },
    });
    ehr.resetStats();
    const batches = await collect(pullSearch({ client, centre, since }));
    expect(batches.map((b) => ({ patient: b.patientId, keys: b.resources.map(keyOf) }))).toEqual([
      { patient: 'p2', keys: ['Observation/p2-o1'] },
      { patient: 'p3', keys: ['Encounter/p3-e3'] },
    ]);
    const searches = ehr.requests.filter((r) => r.kind === 'search');
    expect(searches.length).toBeGreaterThan(0);
    expect(searches.every((r) => r.url.includes('_lastUpdated=ge'))).toBe(true);
    // One search per patient and type, no paging: nothing old was transferred.
    expect(searches).toHaveLength(COHORT.length * 6);
  });

  it('when a full bulk-mode pull runs, then every cohort resource arrives through polling and NDJSON files', async () => {
    const { ehr, centre, client } = await startFixture({ mode: 'bulk' });
    let transactionTime = '';
    const items = await collect(
      pullBulk({
        client,
        centre,
        sleep: async () => undefined,
        onManifest: (m) => (transactionTime = m.transactionTime),
      }),
    );
    const keys = items.flatMap((i) => (i.kind === 'resource' ? [keyOf(i.resource)] : [])).sort();
    expect(keys).toEqual(expectedKeys());
    expect(items.filter((i) => i.kind !== 'resource')).toEqual([]);
    expect(transactionTime).not.toBe('');
    expect(ehr.requests.filter((r) => r.kind === 'status').length).toBeGreaterThanOrEqual(3);
    // Every file request carried the token (requiresAccessToken true, same origin).
    const files = ehr.requests.filter((r) => r.kind === 'file');
    expect(files.length).toBeGreaterThan(1);
    expect(files.every((r) => r.authorized)).toBe(true);
  });

  it('when the EHR ignores _lastUpdated, then an incremental pull still yields only the changed resources and the log says why others were left out', async () => {
    const { ehr, centre, client } = await startFixture();
    const since = new Date(Date.now() - 1000);
    ehr.upsert(heightObservation('p2-o1', 'p2', 130, 'amended'));
    ehr.faults.set({ ignoreSearchParams: ['_lastUpdated'] });
    const log = createCapturingLogger();
    const batches = await collect(pullSearch({ client, centre, since, logger: log.logger }));
    expect(batches.map((b) => ({ patient: b.patientId, keys: b.resources.map(keyOf) }))).toEqual([
      { patient: 'p2', keys: ['Observation/p2-o1'] },
    ]);
    expect(log.text()).toMatch(/before the _lastUpdated window/);
    expect(log.text()).not.toMatch(/p1|p3/);
  });

  it('when the EHR ignores _lastUpdated on a full pull, then events before the lookback are left out and the rest is pulled whatever its age', async () => {
    const { ehr, centre, client } = await startFixture();
    ehr.faults.set({ ignoreSearchParams: ['_lastUpdated'] });
    const batches = await collect(
      pullSearch({ client, centre, lookback: new Date('2025-01-01T00:00:00Z') }),
    );
    const keys = [...new Set(batches.flatMap((b) => b.resources.map(keyOf)))].sort();
    expect(keys).toEqual(expectedKeys().filter((k) => !/^(Encounter|Observation)\//.test(k)));
  });

  it.each(['honoured', 'ignore', 'reject'] as const)(
    'when event types are bounded to recent updates and the EHR has _typeFilter %s, then only recent events and every other resource arrive',
    async (typeFilter) => {
      const { ehr, centre, client } = await startFixture({ mode: 'bulk' });
      const since = new Date(Date.now() - 60_000);
      ehr.upsert(heightObservation('p1-o9', 'p1', 140));
      if (typeFilter !== 'honoured') ehr.faults.set({ typeFilter });
      const items = await pullEventsSince(client, centre, since);
      const keys = items.flatMap((i) => (i.kind === 'resource' ? [keyOf(i.resource)] : [])).sort();
      expect(keys).toEqual(
        [
          ...expectedKeys().filter((k) => !/^(Encounter|Observation)\//.test(k)),
          'Observation/p1-o9',
        ].sort(),
      );
      const kickOffs = ehr.requests.filter((r) => r.kind === 'export');
      expect(kickOffs.map((r) => r.status)).toEqual(typeFilter === 'reject' ? [400, 202] : [202]);
      expect(kickOffs[0]!.url).toContain('_typeFilter=');
      if (typeFilter === 'reject') expect(kickOffs[1]!.url).not.toContain('_typeFilter');
    },
  );

  it('when pull.searches narrows Observation in bulk mode, then its entries go as _typeFilter (with the lookback) and only matching Observations arrive', async () => {
    const { ehr, centre, client } = await startFixture({
      mode: 'bulk',
      searches: { Observation: [{ category: `${OBSERVATION_CATEGORY}|exam` }] },
    });
    const since = new Date('2024-01-01T00:00:00Z');
    expect(
      narrowingFilters(
        centre,
        centre.pull.resourceTypes,
        new Set(['Encounter', 'Observation']),
        since.toISOString(),
      ),
    ).toEqual([
      'Encounter?_lastUpdated=ge2024-01-01T00:00:00.000Z',
      `Observation?category=${encodeURIComponent(`${OBSERVATION_CATEGORY}|exam`)}&_lastUpdated=ge2024-01-01T00:00:00.000Z`,
    ]);
    const items = await pullEventsSince(client, centre, since);
    const observations = items
      .flatMap((i) => (i.kind === 'resource' ? [keyOf(i.resource)] : []))
      .filter((k) => k.startsWith('Observation/'))
      .sort();
    // o2 and o3 carry the exam category; o1 only vital-signs.
    expect(observations).toEqual(
      COHORT.flatMap((p) => [`Observation/${p}-o2`, `Observation/${p}-o3`]),
    );
    expect(
      items.some((i) => i.kind === 'resource' && i.resource.resourceType === 'Encounter'),
    ).toBe(true);
    const exportUrl = new URL(ehr.requests.find((r) => r.kind === 'export')!.url, 'http://sandbox');
    expect(exportUrl.searchParams.getAll('_typeFilter')).toEqual([
      expect.stringMatching(/(^|,)Observation\?/),
    ]);
  });

  it('when a resource is deleted before an incremental bulk pull, then it arrives as a deleted entry', async () => {
    const { ehr, centre, client } = await startFixture({ mode: 'bulk' });
    const since = new Date(Date.now() - 1000).toISOString();
    ehr.delete('Encounter', 'p1-e2');
    ehr.upsert({ resourceType: 'Condition', id: 'p1-c1', subject: { reference: 'Patient/p1' } });
    const items = await collect(pullBulk({ client, centre, since, sleep: async () => undefined }));
    expect(items).toEqual(
      expect.arrayContaining([
        { kind: 'deleted', resourceType: 'Encounter', id: 'p1-e2' },
        expect.objectContaining({
          kind: 'resource',
          resource: expect.objectContaining({ id: 'p1-c1' }),
        }),
      ]),
    );
    expect(items.filter((i) => i.kind === 'resource')).toHaveLength(1);
  });

  it('when the access token expires on the EHR mid-pull, then the client gets a new one and the pull completes', async () => {
    const { ehr, centre, client, clock } = await startFixture({ tokenLifetimeSeconds: 30 });
    const batches = await collect(
      pullSearch({
        client,
        centre,
        concurrency: 1,
        // After the first patient, the EHR's clock jumps past the token's lifetime.
        onPatient: (p) => {
          if (p.index === 0) clock.offsetMs = 31_000;
        },
      }),
    );
    expect(batches.map((b) => b.patientId)).toEqual(COHORT);
    expect([...new Set(batches.flatMap((b) => b.resources.map(keyOf)))].sort()).toEqual(
      expectedKeys(),
    );
    expect(ehr.stats.byStatus['401']).toBe(1);
    expect(ehr.stats.tokensIssued).toBe(2);
  });

  it('when the bulk export outlives its token, then polling and file downloads continue with a fresh token', async () => {
    const { ehr, centre, client, clock } = await startFixture({
      mode: 'bulk',
      tokenLifetimeSeconds: 30,
    });
    let polls = 0;
    const items = await collect(
      pullBulk({
        client,
        centre,
        sleep: async () => {
          polls += 1;
          if (polls === 1) clock.offsetMs = 31_000;
        },
      }),
    );
    expect(items.filter((i) => i.kind === 'resource')).toHaveLength(expectedKeys().length);
    expect(ehr.stats.byStatus['401']).toBe(1);
    expect(ehr.stats.tokensIssued).toBe(2);
  });

  it('when the EHR rate-limits and fails transiently, then the pull still completes', async () => {
    const { ehr, centre, client } = await startFixture();
    ehr.faults.set({
      rateLimit: { count: 2, retryAfter: 1, kinds: ['search'] },
      unavailable: { count: 1, kinds: ['search'] },
      dropConnection: { count: 1, kinds: ['search'] },
    });
    const batches = await collect(pullSearch({ client, centre }));
    expect([...new Set(batches.flatMap((b) => b.resources.map(keyOf)))].sort()).toEqual(
      expectedKeys(),
    );
    expect(ehr.stats.byStatus['429']).toBe(2);
    expect(ehr.stats.byStatus['503']).toBe(1);
  });

  it('when the EHR sends a next link to a foreign origin, then the pull fails and the token never leaves', async () => {
    const { ehr, centre, client } = await startFixture();
    ehr.faults.set({ foreignNextLink: { origin: 'http://127.0.0.2:9' } });
    await expect(collect(pullSearch({ client, centre }))).rejects.toBeInstanceOf(
      OriginRefusedError,
    );
    expect(client.originEvents[0]).toMatchObject({
      origin: 'http://127.0.0.2:9',
      action: 'refused',
    });
  });

  it('when a page is malformed, then the pull fails naming the page', async () => {
    const { ehr, centre, client } = await startFixture();
    ehr.faults.set({ malformedPage: { page: 2, resourceType: 'Observation', kind: 'not-bundle' } });
    await expect(collect(pullSearch({ client, centre }))).rejects.toThrow(
      /page 2 of the Observation search/,
    );
  });

  describe('an export left running by a run that died', () => {
    /** The export store a Redis key is in the service, here in memory. */
    const memoryStore = () => {
      const box: { value: PendingExport | null; ttlMs: number } = { value: null, ttlMs: 0 };
      const store: PendingExportStore = {
        load: async () => box.value,
        save: async (p, ttlMs) => {
          box.value = p;
          box.ttlMs = ttlMs;
        },
        clear: async (statusUrl) => {
          if (box.value?.statusUrl === statusUrl) box.value = null;
        },
      };
      return { box, store };
    };
    /**
     * Starts a bulk pull that "dies" while the export runs: its wait between polls never
     * ends, so like a killed process it never cancels the job or clears the store.
     */
    const dieWhilePolling = async (
      f: Fixture,
      store: PendingExportStore,
      options: { resourceTypes?: CentreConfig['pull']['resourceTypes'] } = {},
    ) => {
      void pullBulk({
        client: f.client,
        centre: f.centre,
        pending: store,
        ...options,
        sleep: () => new Promise<void>(() => undefined),
      }).next();
      for (let i = 0; i < 200 && !f.ehr.requests.some((r) => r.kind === 'status'); i++)
        await new Promise((resolve) => setTimeout(resolve, 10));
      expect(f.ehr.requests.some((r) => r.kind === 'status')).toBe(true);
    };
    const kickOffs = (ehr: SandboxEhr) => ehr.requests.filter((r) => r.kind === 'export');

    it('when the next run starts, then it polls the same job instead of starting a new export, and forgets it once read', async () => {
      const f = await startFixture({ mode: 'bulk' });
      const { box, store } = memoryStore();
      await dieWhilePolling(f, store);
      expect(box.value?.statusUrl).toMatch(/\/bulkstatus\//);
      expect(box.ttlMs).toBe(f.centre.pull.bulkTimeoutMinutes * 60_000);
      const kept = box.value!;
      const { logger, text } = createCapturingLogger();
      const items = await collect(
        pullBulk({
          client: f.client,
          centre: f.centre,
          pending: store,
          logger,
          sleep: async () => undefined,
        }),
      );
      const keys = items.flatMap((i) => (i.kind === 'resource' ? [keyOf(i.resource)] : [])).sort();
      expect(keys).toEqual(expectedKeys());
      expect(kickOffs(f.ehr)).toHaveLength(1);
      expect(text()).toContain('resuming the bulk export');
      // Read to the end: the job is deleted on the EHR and no longer kept.
      expect(
        f.ehr.requests.some(
          (r) => r.method === 'DELETE' && kept.statusUrl.endsWith(r.url.split('?')[0]!),
        ),
      ).toBe(true);
      expect(box.value).toBeNull();
    });

    it('when the job it left is gone from the EHR, then a new export starts and the pull completes', async () => {
      const f = await startFixture({ mode: 'bulk' });
      const { box, store } = memoryStore();
      await dieWhilePolling(f, store);
      // The EHR drops the job (expired, or deleted by its operators).
      const gone = await f.client.request(new URL(box.value!.statusUrl), {
        method: 'DELETE',
        purpose: 'bulk-status',
      });
      await gone.body?.cancel();
      const { logger, text } = createCapturingLogger();
      const items = await collect(
        pullBulk({
          client: f.client,
          centre: f.centre,
          pending: store,
          logger,
          sleep: async () => undefined,
        }),
      );
      expect(items.filter((i) => i.kind === 'resource')).toHaveLength(expectedKeys().length);
      expect(kickOffs(f.ehr)).toHaveLength(2);
      expect(text()).toContain('the resumed bulk export cannot be used; starting a new export');
      expect(box.value).toBeNull();
    });

    it('when the pull is aborted with a hand-over reason (shutdown, lock lost), then the job is neither cancelled nor forgotten, and the next run resumes it; another abort cancels it', async () => {
      const f = await startFixture({ mode: 'bulk' });
      const { box, store } = memoryStore();
      const abortWhilePolling = async (reason: unknown) => {
        const controller = new AbortController();
        const run = collect(
          pullBulk({
            client: f.client,
            centre: f.centre,
            pending: store,
            signal: controller.signal,
            keepExportOnAbort: (r) => r === 'worker shutting down',
            sleep: (_ms, signal) =>
              new Promise<void>((_resolve, reject) =>
                signal?.addEventListener('abort', () => reject(signal.reason as Error), {
                  once: true,
                }),
              ),
          }),
        );
        for (let i = 0; i < 200 && !f.ehr.requests.some((r) => r.kind === 'status'); i++)
          await new Promise((resolve) => setTimeout(resolve, 10));
        controller.abort(reason);
        await run.catch(() => undefined);
      };
      await abortWhilePolling('worker shutting down');
      const kept = box.value!;
      expect(kept.statusUrl).toMatch(/\/bulkstatus\//);
      expect(f.ehr.requests.some((r) => r.method === 'DELETE')).toBe(false);
      const items = await collect(
        pullBulk({
          client: f.client,
          centre: f.centre,
          pending: store,
          sleep: async () => undefined,
        }),
      );
      expect(items.filter((i) => i.kind === 'resource')).toHaveLength(expectedKeys().length);
      expect(kickOffs(f.ehr)).toHaveLength(1);
      expect(box.value).toBeNull();

      f.ehr.requests.length = 0;
      await abortWhilePolling(new Error('cancelled by the user'));
      expect(f.ehr.requests.some((r) => r.method === 'DELETE')).toBe(true);
      expect(box.value).toBeNull();
    });

    it('when the next run asks for another export, then the old job is cancelled, not resumed', async () => {
      const f = await startFixture({ mode: 'bulk' });
      const { box, store } = memoryStore();
      await dieWhilePolling(f, store, { resourceTypes: ['Patient'] });
      const old = box.value!;
      const items = await collect(
        pullBulk({
          client: f.client,
          centre: f.centre,
          pending: store,
          sleep: async () => undefined,
        }),
      );
      expect(items.filter((i) => i.kind === 'resource')).toHaveLength(expectedKeys().length);
      expect(kickOffs(f.ehr)).toHaveLength(2);
      const oldPath = new URL(old.statusUrl).pathname;
      expect(f.ehr.requests.some((r) => r.method === 'DELETE' && r.url === oldPath)).toBe(true);
      expect(box.value).toBeNull();
    });
  });
});
