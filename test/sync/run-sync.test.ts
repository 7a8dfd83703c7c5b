import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ExpectedVisit } from '../../fixtures/generator/index.js';
import { startSyncFixture, type SyncFixture } from './fixture.js';
import { expectMatchesTruth } from './truth.js';

describe('sync run against the sandbox EHR and registry', () => {
  let f: SyncFixture;
  beforeAll(async () => {
    f = await startSyncFixture({ patients: 8, centreId: 'sync-run' });
  });
  afterAll(async () => {
    await f?.close();
  });

  it('when a centre is synced in full and delivered, then the registry holds every expected visit once, as the generator intended', async () => {
    const truth = f.gen.truth.filter((t) => !t.retracted);
    const record = await f.runSync('full');
    expect(record.status).toBe('succeeded');
    expect(record.counts.enqueued).toBe(truth.length);
    expect(record.counts.pulled).toBeGreaterThan(truth.length);
    await f.deliverAll();
    const visits = f.registry.visits();
    expect(visits).toHaveLength(truth.length);
    expect(f.registry.submissions()).toHaveLength(truth.length);
    for (const t of truth) {
      const stored = visits.find((v) => v.visitKey === f.visitKey(t.encounterId));
      expectMatchesTruth(stored?.current, t);
    }
  });

  it('when the data manager opens the quality report, then it counts visits without PGA and unmapped codes as the generator planted them', async () => {
    const truth = f.gen.truth.filter((t) => !t.retracted);
    const report = await f.runtime.runStore.getQualityReport(f.centre.id);
    expect(report).toBeDefined();
    expect(report!.visits).toBe(truth.length);
    const missingPga = truth.filter((t) => t.expectedFindings.includes('missing-pga')).length;
    expect(report!.visitsWithoutPga.count).toBe(missingPga);
    const unmapped = truth.flatMap((t) => t.findings.filter((x) => x.kind === 'unmapped-code'));
    expect(report!.unmappedCodes.reduce((n, u) => n + u.count, 0)).toBe(unmapped.length);
    for (const u of report!.unmappedCodes) expect(u.exampleResource).toMatch(/^[A-Z][A-Za-z]+\//);
  });

  it('when the sync runs again with no EHR changes, then nothing is enqueued', async () => {
    const before = await f.runtime.queues.submissions.getJobCountByTypes('completed', 'waiting');
    const record = await f.runSync('full');
    expect(record.counts.enqueued).toBe(0);
    // Every visit is unchanged; entered-in-error encounters never sent get no retraction.
    expect(record.counts.unchanged).toBe(f.gen.truth.filter((t) => !t.retracted).length);
    expect(record.counts.retracted).toBe(0);
    expect(await f.runtime.queues.submissions.getJobCountByTypes('completed', 'waiting')).toBe(
      before,
    );
    const incremental = await f.runSync('incremental');
    expect(incremental.mode).toBe('incremental');
    expect(incremental.counts.enqueued).toBe(0);
  });

  it('when one PGA observation changes, then an incremental sync enqueues exactly that visit', async () => {
    const questions = f.gen.centreOverrides.valueSets.pga.questions.map(
      (q) => `${q.system}|${q.code}`,
    );
    const answers = f.gen.centreOverrides.valueSets.pga.answers.filter(
      (
        a,
      ): a is {
        system: string;
        code: string;
        category: 'quiescent' | 'mild' | 'moderate' | 'severe';
      } => 'code' in a,
    );
    // A visit whose PGA comes from an observation that references its encounter.
    let target: { obs: Record<string, unknown>; truth: ExpectedVisit } | undefined;
    for (const t of f.gen.truth) {
      if (t.retracted || t.pga === null) continue;
      const obs = f.gen
        .resourcesOfPatient(t.patientId)
        .find(
          (r) =>
            r.resourceType === 'Observation' &&
            (r.encounter as { reference?: string } | undefined)?.reference ===
              `Encounter/${t.encounterId}` &&
            ((r.code as { coding?: { system: string; code: string }[] }).coding ?? []).some((c) =>
              questions.includes(`${c.system}|${c.code}`),
            ) &&
            r.valueCodeableConcept !== undefined,
        );
      if (obs) {
        target = { obs, truth: t };
        break;
      }
    }
    expect(target, 'a visit with an encounter-linked coded PGA').toBeDefined();
    const newAnswer = answers.find((a) => a.category !== target!.truth.pga)!;
    f.ehr.upsert({
      ...target!.obs,
      valueCodeableConcept: { coding: [{ system: newAnswer.system, code: newAnswer.code }] },
    } as never);
    const record = await f.runSync('incremental');
    expect(record.counts.enqueued).toBe(1);
    await f.deliverAll();
    const stored = f.registry
      .visits()
      .find((v) => v.visitKey === f.visitKey(target!.truth.encounterId));
    expect(stored!.current!.pga).toBe(newAnswer.category);
    expect(stored!.version).toBe(2);
  });

  it("when a sent visit's encounter becomes entered-in-error, then an incremental sync sends one retraction", async () => {
    const t = f.gen.truth.find((x) => !x.retracted)!;
    const encounter = f.ehr.get('Encounter', t.encounterId)!;
    f.ehr.upsert({ ...encounter, status: 'entered-in-error' } as never);
    const record = await f.runSync('incremental');
    expect(record.counts).toMatchObject({ enqueued: 1, retracted: 1 });
    await f.deliverAll();
    const stored = f.registry.visits().find((v) => v.visitKey === f.visitKey(t.encounterId));
    expect(stored).toMatchObject({ retracted: true, retractionReason: 'entered-in-error' });
    const again = await f.runSync('full');
    expect(again.counts.retracted).toBe(0);
  });

  it("when a sent visit's encounter is deleted from the EHR, then the next full sync retracts it as deleted", async () => {
    const retractedKeys = new Set(
      f.registry
        .visits()
        .filter((v) => v.retracted)
        .map((v) => v.visitKey),
    );
    const t = f.gen.truth.find(
      (x) => !x.retracted && !retractedKeys.has(f.visitKey(x.encounterId)),
    )!;
    expect(f.ehr.delete('Encounter', t.encounterId)).toBe(true);
    const record = await f.runSync('full');
    expect(record.counts.retracted).toBe(1);
    await f.deliverAll();
    const stored = f.registry.visits().find((v) => v.visitKey === f.visitKey(t.encounterId));
    expect(stored).toMatchObject({ retracted: true, retractionReason: 'deleted' });
  });

  it('when the EHR fails mid-run, then the run is recorded failed with the step and the watermark does not move', async () => {
    const marksBefore = await f.runtime.redis.hgetall(
      `${f.runtime.prefix}:state:${f.centre.id}:watermarks`,
    );
    f.ehr.faults.set({
      unavailable: { count: 1000, kinds: ['search'], resourceType: 'Observation' },
    });
    try {
      const err = await f.runSync('full').catch((e: unknown) => e);
      expect((err as Error).name).toBe('SyncFailedError');
    } finally {
      f.ehr.faults.reset();
    }
    const latest = await f.runtime.runStore.latest(f.centre.id);
    expect(latest!.status).toBe('failed');
    expect(latest!.errors[0]!.step).toBe('pull');
    expect(
      await f.runtime.redis.hgetall(`${f.runtime.prefix}:state:${f.centre.id}:watermarks`),
    ).toEqual(marksBefore);
  });

  it('when the Encounter search comes back with an error OperationOutcome (partial results), then the run fails, nothing is retracted and the watermark stays', async () => {
    const marksBefore = await f.runtime.redis.hgetall(
      `${f.runtime.prefix}:state:${f.centre.id}:watermarks`,
    );
    f.ehr.faults.set({
      searchOutcome: {
        severity: 'error',
        code: 'incomplete',
        text: 'Some encounters could not be returned',
        resourceType: 'Encounter',
        keepEntries: 1,
      },
    });
    try {
      const err = await f.runSync('full').catch((e: unknown) => e);
      expect((err as Error).name).toBe('SyncFailedError');
    } finally {
      f.ehr.faults.reset();
    }
    const latest = await f.runtime.runStore.latest(f.centre.id);
    expect(latest!.status).toBe('failed');
    expect(latest!.counts.retracted).toBe(0);
    expect(latest!.errors[0]!.message).toMatch(/incomplete Encounter search.*error incomplete/);
    expect(
      await f.runtime.redis.hgetall(`${f.runtime.prefix}:state:${f.centre.id}:watermarks`),
    ).toEqual(marksBefore);
  });
});

describe('sync run in bulk mode', () => {
  let f: SyncFixture;
  beforeAll(async () => {
    f = await startSyncFixture({ patients: 6, seed: 23, centreId: 'sync-bulk', pullMode: 'bulk' });
  });
  afterAll(async () => {
    await f?.close();
  });

  it('when a centre is synced in full by $export, then every expected visit is enqueued and delivered once', async () => {
    const truth = f.gen.truth.filter((t) => !t.retracted);
    const record = await f.runSync('full');
    expect(record.status).toBe('succeeded');
    expect(record.counts.enqueued).toBe(truth.length);
    await f.deliverAll();
    expect(f.registry.visits()).toHaveLength(truth.length);
    for (const t of truth) {
      const stored = f.registry.visits().find((v) => v.visitKey === f.visitKey(t.encounterId));
      expectMatchesTruth(stored?.current, t);
    }
  });

  it('when an export file holds fewer lines than the manifest announced, then the full run fails, nothing is retracted and the watermark stays', async () => {
    const marksBefore = await f.runtime.redis.hgetall(
      `${f.runtime.prefix}:state:${f.centre.id}:watermarks`,
    );
    f.ehr.faults.set({ truncateExportFile: { resourceType: 'Encounter', keepLines: 1 } });
    try {
      const err = await f.runSync('full').catch((e: unknown) => e);
      expect((err as Error).name).toBe('SyncFailedError');
    } finally {
      f.ehr.faults.reset();
    }
    const latest = await f.runtime.runStore.latest(f.centre.id);
    expect(latest!.status).toBe('failed');
    expect(latest!.counts.retracted).toBe(0);
    expect(latest!.errors.map((e) => e.message).join('\n')).toMatch(
      /the EHR announced \d+ Encounter resources in export file \d+ \(of \d+\) and sent 1:/,
    );
    expect(
      await f.runtime.redis.hgetall(`${f.runtime.prefix}:state:${f.centre.id}:watermarks`),
    ).toEqual(marksBefore);
  });

  it("when an encounter is deleted, then the incremental export's deleted entry retracts its visit", async () => {
    const t = f.gen.truth.find((x) => !x.retracted)!;
    expect(f.ehr.delete('Encounter', t.encounterId)).toBe(true);
    const record = await f.runSync('incremental');
    expect(record.mode).toBe('incremental');
    expect(record.counts).toMatchObject({ retracted: 1, enqueued: 1 });
    await f.deliverAll();
    const stored = f.registry.visits().find((v) => v.visitKey === f.visitKey(t.encounterId));
    expect(stored).toMatchObject({ retracted: true, retractionReason: 'deleted' });
  });

  it('when an export is running, then its status URL is kept in Redis for a restarted run to resume, and dropped when the run ends', async () => {
    const key = `${f.runtime.prefix}:state:${f.centre.id}:export`;
    f.ehr.faults.set({ slow: { delayMs: 200, kinds: ['status'] } });
    try {
      const run = f.runSync('incremental');
      let kept: string | null = null;
      for (let i = 0; i < 300 && kept === null; i++) {
        kept = await f.runtime.redis.get(key);
        if (kept === null) await new Promise((resolve) => setTimeout(resolve, 10));
      }
      expect(JSON.parse(kept!)).toMatchObject({ statusUrl: expect.stringMatching(/bulkstatus/) });
      expect(await f.runtime.redis.pttl(key)).toBeGreaterThan(0);
      expect((await run).status).toBe('succeeded');
      expect(await f.runtime.redis.exists(key)).toBe(0);
    } finally {
      f.ehr.faults.reset();
    }
  });

  it('when nothing changed, then an incremental export enqueues nothing', async () => {
    const record = await f.runSync('incremental');
    expect(record.counts.enqueued).toBe(0);
  });

  it("when a sent visit's observations are deleted, then the incremental export's deleted entries re-pull the patient and the visit is sent without them", async () => {
    const sent = f.registry
      .visits()
      .find((v) => !v.retracted && v.current?.pga !== null && v.current !== undefined);
    expect(sent).toBeDefined();
    const observations = sent!.current!.provenance.filter((r) => r.resourceType === 'Observation');
    expect(observations.length).toBeGreaterThan(0);
    for (const o of observations) expect(f.ehr.delete('Observation', o.id)).toBe(true);
    const record = await f.runSync('incremental');
    expect(record.mode).toBe('incremental');
    expect(record.counts.enqueued).toBe(1);
    await f.deliverAll();
    const stored = f.registry.visits().find((v) => v.visitKey === sent!.visitKey);
    const ids = new Set(observations.map((o) => o.id));
    expect(stored!.current!.provenance.some((r) => ids.has(r.id))).toBe(false);
    expect(stored!.current!.pga).toBeNull();
  });
});

describe('sync run in bulk mode against a HAPI-like EHR', () => {
  let f: SyncFixture;
  beforeAll(async () => {
    f = await startSyncFixture({ patients: 6, seed: 29, centreId: 'sync-hapi', pullMode: 'bulk' });
    // HAPI refuses Medication (outside the Patient compartment) in a Patient-level export,
    // and the manifest's error file also carries information, as Bulk Data allows.
    f.ehr.faults.set({
      nonCompartmentTypes: 'reject',
      exportNotices: [{ severity: 'information', text: 'export complete' }],
    });
  });
  afterAll(async () => {
    await f?.close();
  });

  it('when Medication cannot be exported and the error file holds information, then the sync reads referenced Medications and succeeds', async () => {
    const truth = f.gen.truth.filter((t) => !t.retracted);
    expect(truth.some((t) => t.steroidUse)).toBe(true);
    const record = await f.runSync('full');
    expect(record.status).toBe('succeeded');
    expect(record.errors).toEqual([]);
    expect(record.counts.enqueued).toBe(truth.length);
    // The export carried no Medication: the ones referenced were read one by one.
    const reads = f.ehr.requests.filter(
      (r) => r.kind === 'read' && r.resourceType === 'Medication',
    );
    expect(reads.length).toBeGreaterThan(0);
    expect(reads.every((r) => r.status === 200)).toBe(true);
    const marks = await f.runtime.redis.hgetall(
      `${f.runtime.prefix}:state:${f.centre.id}:watermarks`,
    );
    expect(Object.keys(marks)).toContain('Observation');
    await f.deliverAll();
    for (const t of truth) {
      const stored = f.registry.visits().find((v) => v.visitKey === f.visitKey(t.encounterId));
      expectMatchesTruth(stored?.current, t);
    }
  });
});

describe('sync run against an EHR that sends no meta', () => {
  let f: SyncFixture;
  beforeAll(async () => {
    f = await startSyncFixture({ patients: 4, seed: 31, centreId: 'sync-nometa' });
    f.ehr.faults.set({ omitMeta: true });
  });
  afterAll(async () => {
    await f?.close();
  });

  it("when a sent visit's encounter is deleted, then the next full sync retracts it by its visit date", async () => {
    const first = await f.runSync('full');
    expect(first.status).toBe('succeeded');
    await f.deliverAll();
    const t = f.gen.truth.find((x) => !x.retracted)!;
    expect(f.ehr.delete('Encounter', t.encounterId)).toBe(true);
    const record = await f.runSync('full');
    expect(record.counts.retracted).toBe(1);
    await f.deliverAll();
    const stored = f.registry.visits().find((v) => v.visitKey === f.visitKey(t.encounterId));
    expect(stored).toMatchObject({ retracted: true, retractionReason: 'deleted' });
  });
});

describe('sync run with schedule.fullEveryDays', () => {
  let f: SyncFixture;
  beforeAll(async () => {
    f = await startSyncFixture({
      patients: 4,
      seed: 37,
      centreId: 'sync-full-every',
      centre: { schedule: { fullEveryDays: 7 } },
    });
  });
  afterAll(async () => {
    await f?.close();
  });

  it('when the last full sync is older than fullEveryDays, then an incremental run goes full and corrects a visit whose observations were deleted', async () => {
    expect((await f.runSync('full')).mode).toBe('full');
    await f.deliverAll();
    // A recent full sync: incremental stays incremental, and cannot see a deletion.
    const sent = f.registry.visits().find((v) => !v.retracted && v.current?.pga != null)!;
    const observations = sent.current!.provenance.filter((r) => r.resourceType === 'Observation');
    for (const o of observations) expect(f.ehr.delete('Observation', o.id)).toBe(true);
    const quiet = await f.runSync('incremental');
    expect(quiet.mode).toBe('incremental');
    expect(quiet.counts.enqueued).toBe(0);
    // Eight days later (as the watermarks tell it), the same request runs in full.
    const marks = `${f.runtime.prefix}:state:${f.centre.id}:watermarks`;
    await f.runtime.redis.hset(
      marks,
      '$lastFull',
      new Date(Date.now() - 8 * 86_400_000).toISOString(),
    );
    const record = await f.runSync('incremental');
    expect(record.mode).toBe('full');
    expect(record.counts.enqueued).toBe(1);
    await f.deliverAll();
    const stored = f.registry.visits().find((v) => v.visitKey === sent.visitKey);
    expect(stored!.current!.pga).toBeNull();
    expect(Date.parse((await f.runtime.redis.hget(marks, '$lastFull'))!)).toBeGreaterThan(
      Date.now() - 60_000,
    );
  });
});

describe('sync run against an EHR without MedicationStatement (Epic R4)', () => {
  let f: SyncFixture;
  beforeAll(async () => {
    f = await startSyncFixture({ patients: 4, seed: 31, centreId: 'sync-no-medstatement' });
    f.ehr.faults.set({ unsupportedTypes: ['MedicationStatement'] });
  });
  afterAll(async () => {
    await f?.close();
  });

  it('when the CapabilityStatement does not list a configured type, then the run skips it with a warning in the record and succeeds, and incremental runs still work', async () => {
    expect(f.centre.pull.resourceTypes).toContain('MedicationStatement');
    const record = await f.runSync('full');
    expect(record.status).toBe('succeeded');
    expect(record.errors).toEqual([]);
    expect(record.counts.enqueued).toBeGreaterThan(0);
    expect(record.warnings).toEqual([
      {
        step: 'server-time',
        message: expect.stringMatching(
          /does not list MedicationStatement: skipped \(remove it from pull\.resourceTypes in the centre file.*MedicationRequest carries the medication data/,
        ),
      },
    ]);
    expect(f.ehr.requests.some((r) => r.resourceType === 'MedicationStatement')).toBe(false);
    const marks = await f.runtime.redis.hgetall(
      `${f.runtime.prefix}:state:${f.centre.id}:watermarks`,
    );
    expect(Object.keys(marks)).toContain('MedicationRequest');
    expect(Object.keys(marks)).not.toContain('MedicationStatement');
    const next = await f.runSync('incremental');
    expect(next.status).toBe('succeeded');
    expect(next.mode).toBe('incremental');
  });
});
