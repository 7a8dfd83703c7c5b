// Incremental syncs pull what changed since the watermark; the cohort members set
// (src/sync/cohort-members.ts) makes them also pull in full the patients no sync has pulled:
// Group members added since, and patients whose last pull was refused. A search that says the
// EHR left data out never leads to a retraction.
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { generateCentre } from '../../fixtures/generator/index.js';
import type { FhirResource } from '../../src/fhir/types.js';
import { cohortMembersKey } from '../../src/sync/cohort-members.js';
import { pseudonymKey } from '../../src/registry/keys.js';
import { SyncFailedError } from '../../src/sync/run-sync.js';
import { startSyncFixture, type SyncFixture } from './fixture.js';
import { SECRET } from './helpers.js';

type GroupResource = FhirResource & { member: { entity: { reference: string } }[] };

describe('cohort patients that incremental syncs have never pulled', () => {
  let f: SyncFixture | undefined;
  afterEach(async () => {
    await f?.close();
    f = undefined;
  });

  /** The Group without its last member (with the visits that member's data gives). */
  const holdBackLastMember = (fx: SyncFixture) => {
    const group = fx.ehr.get('Group', fx.gen.groupId) as GroupResource;
    const all = group.member;
    const late = all[all.length - 1]!.entity.reference.split('/')[1]!;
    fx.ehr.upsert({ ...group, member: all.slice(0, -1) });
    const lateVisits = fx.gen.truth.filter((t) => !t.retracted && t.patientId === late).length;
    const addBack = () => fx.ehr.upsert({ ...group, member: all });
    return { late, lateVisits, addBack };
  };

  for (const pullMode of ['search', 'bulk'] as const) {
    it(`when a patient joins the Group after a full sync (${pullMode} mode), then the next incremental sync sends that patient's older visits`, async () => {
      f = await startSyncFixture({
        patients: 4,
        seed: 7,
        centreId: `members-join-${pullMode}`,
        pullMode,
      });
      const { late, lateVisits, addBack } = holdBackLastMember(f);
      expect(lateVisits).toBeGreaterThan(0);
      const first = await f.runSync('full');
      expect(first.status).toBe('succeeded');
      addBack();
      const next = await f.runSync('incremental');
      expect(next.mode).toBe('incremental');
      expect(next.counts.enqueued).toBe(lateVisits);
      const key = pseudonymKey(SECRET, f.centre.id, 'Patient', late);
      const membersKey = cohortMembersKey(f.runtime.prefix, f.centre.id);
      expect(await f.runtime.redis.sismember(membersKey, key)).toBe(1);
      // Pulled once: the run after that has nothing new for it.
      const again = await f.runSync('incremental');
      expect(again.counts.enqueued).toBe(0);
      const full = await f.runSync('full');
      expect(full.counts.enqueued).toBe(0);
    });
  }

  it("when a roster line is added after a full sync (bulk mode, patient-level export), then the next incremental sync sends that patient's older visits", async () => {
    const dir = await mkdtemp(join(tmpdir(), 'lhn-roster-'));
    const roster = join(dir, 'roster.txt');
    const gen = generateCentre({ seed: 7, patients: 4, centreId: 'members-roster' });
    const lines = [...gen.resources()]
      .filter((r) => r.resourceType === 'Patient')
      .map((p) => {
        const mrn = (p as { identifier?: { system?: string; value?: string }[] }).identifier?.[0];
        return { id: p.id, line: `${mrn?.system}|${mrn?.value}` };
      });
    const late = lines[lines.length - 1]!;
    await writeFile(
      roster,
      `${lines
        .slice(0, -1)
        .map((l) => l.line)
        .join('\n')}\n`,
    );
    try {
      f = await startSyncFixture({
        patients: 4,
        seed: 7,
        centreId: 'members-roster',
        centre: {
          cohort: { roster },
          pull: {
            mode: 'bulk',
            patientLevelExport: true,
            pageSize: 100,
            firstSyncLookbackDays: 36500,
          },
        },
      });
      const lateVisits = f.gen.truth.filter((t) => !t.retracted && t.patientId === late.id).length;
      expect(lateVisits).toBeGreaterThan(0);
      await f.runSync('full');
      await writeFile(roster, `${lines.map((l) => l.line).join('\n')}\n`);
      const next = await f.runSync('incremental');
      expect(next.mode).toBe('incremental');
      expect(next.counts.enqueued).toBe(lateVisits);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('when the EHR exports the Group but refuses to let it be read (bulk incremental), then the run succeeds with a warning and the next full sync sends the new member', async () => {
    f = await startSyncFixture({
      patients: 4,
      seed: 7,
      centreId: 'members-group-unreadable',
      pullMode: 'bulk',
    });
    const { lateVisits, addBack } = holdBackLastMember(f);
    await f.runSync('full');
    addBack();
    f.ehr.faults.set({ refuseReads: ['Group'] });
    const next = await f.runSync('incremental');
    expect(next.status).toBe('succeeded');
    expect(next.counts.enqueued).toBe(0);
    expect((next.warnings ?? []).map((w) => w.message)).toContainEqual(
      expect.stringMatching(/cohort Group could not be read.*next full sync/),
    );
    f.ehr.faults.reset();
    const full = await f.runSync('full');
    expect(full.counts.enqueued).toBe(lateVisits);
  });

  it('when a patient is refused, then the watermarks still move, and once the EHR answers again the next incremental sync pulls that patient in full, with what changed meanwhile', async () => {
    f = await startSyncFixture({ patients: 6, seed: 71, centreId: 'members-refused' });
    const visits = f.gen.truth.filter((t) => !t.retracted);
    const ids = f.gen.patientIds;
    const restricted = ids.find((id, i) => i > 0 && visits.some((v) => v.patientId === id))!;
    await f.runSync('full');
    const marksKey = `${f.runtime.prefix}:state:${f.centre.id}:watermarks`;
    const before = await f.runtime.redis.hgetall(marksKey);

    // The restricted patient's weight is corrected while the EHR refuses their searches.
    const generated = [...f.gen.resources()].find(
      (r) =>
        r.resourceType === 'Observation' &&
        (r as { subject?: { reference?: string } }).subject?.reference ===
          `Patient/${restricted}` &&
        JSON.stringify((r as { code?: unknown }).code).includes('29463-7') &&
        (r as { encounter?: unknown }).encounter !== undefined,
    );
    const weight = generated
      ? (f.ehr.get('Observation', generated.id) as
          (FhirResource & { valueQuantity: { value: number } }) | undefined)
      : undefined;
    expect(weight).toBeDefined();
    f.ehr.faults.set({ restrictedPatients: { ids: [restricted] } });
    // The EHR's Date header has whole seconds: a later second, so a moved watermark shows.
    await new Promise((r) => setTimeout(r, 1100));
    f.ehr.upsert({
      ...weight!,
      valueQuantity: { ...weight!.valueQuantity, value: weight!.valueQuantity.value + 1.5 },
    });
    const refused = await f.runSync('incremental').catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(SyncFailedError);
    const record = (refused as SyncFailedError).record;
    expect(record.errors[0]!.message).toMatch(/the next sync pulls them in full again/);
    const after = await f.runtime.redis.hgetall(marksKey);
    expect(after.Observation! > before.Observation!).toBe(true);
    const membersKey = cohortMembersKey(f.runtime.prefix, f.centre.id);
    const key = pseudonymKey(SECRET, f.centre.id, 'Patient', restricted);
    expect(await f.runtime.redis.sismember(membersKey, key)).toBe(0);

    f.ehr.faults.reset();
    f.ehr.requests.length = 0;
    const recovered = await f.runSync('incremental');
    expect(recovered.status).toBe('succeeded');
    expect(recovered.counts.enqueued).toBe(1);
    // Pulled in full: its Condition search has no _lastUpdated window.
    const conditionSearches = f.ehr.requests.filter(
      (r) => r.resourceType === 'Condition' && r.url.includes(encodeURIComponent(restricted)),
    );
    expect(conditionSearches.some((r) => !r.url.includes('_lastUpdated'))).toBe(true);
    expect(await f.runtime.redis.sismember(membersKey, key)).toBe(1);
  });

  it('when every patient is refused, then the watermarks stay', async () => {
    f = await startSyncFixture({ patients: 3, seed: 73, centreId: 'members-all-refused' });
    await f.runSync('full');
    const marksKey = `${f.runtime.prefix}:state:${f.centre.id}:watermarks`;
    const before = await f.runtime.redis.hgetall(marksKey);
    f.ehr.faults.set({ restrictedPatients: { ids: [...f.gen.patientIds] } });
    await new Promise((r) => setTimeout(r, 20));
    const err = await f.runSync('incremental').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(SyncFailedError);
    expect(await f.runtime.redis.hgetall(marksKey)).toEqual(before);
  });

  it('when a centre synced before the members set existed runs incrementally, then the set is filled from the visit state and only patients without visits are pulled in full', async () => {
    f = await startSyncFixture({ patients: 5, seed: 7, centreId: 'members-seed' });
    await f.runSync('full');
    const membersKey = cohortMembersKey(f.runtime.prefix, f.centre.id);
    expect(await f.runtime.redis.scard(membersKey)).toBe(f.gen.patientIds.length);
    await f.runtime.redis.del(membersKey);
    const withVisits = new Set(f.gen.truth.filter((t) => !t.retracted).map((t) => t.patientId));
    f.ehr.requests.length = 0;
    const run = await f.runSync('incremental');
    expect(run.counts.enqueued).toBe(0);
    const fullPulls = new Set(
      f.ehr.requests
        .filter((r) => r.resourceType === 'Condition' && !r.url.includes('_lastUpdated'))
        .map((r) => r.url),
    );
    expect(fullPulls.size).toBe(f.gen.patientIds.length - withVisits.size);
    expect(await f.runtime.redis.scard(membersKey)).toBe(f.gen.patientIds.length);
  });
});

describe('a search that says the EHR left data out', () => {
  let f: SyncFixture | undefined;
  afterEach(async () => {
    await f?.close();
    f = undefined;
  });

  it('when an Encounter search withholds encounters with an Epic 4119-style warning, then the visits it left out are not retracted, and the run warns', async () => {
    f = await startSyncFixture({ patients: 3, seed: 67, centreId: 'withheld-no-retract' });
    const first = await f.runSync('full');
    expect(first.counts.visits).toBeGreaterThan(2);
    f.ehr.faults.set({
      searchOutcome: {
        severity: 'warning',
        code: 'processing',
        text: 'Additional data may be present',
        resourceType: 'Encounter',
        keepEntries: 1,
      },
    });
    const partial = await f.runSync('full');
    expect(partial.status).toBe('succeeded');
    expect(partial.counts.visits).toBeLessThan(first.counts.visits);
    expect(partial.counts.retracted).toBe(0);
    expect((partial.warnings ?? []).map((w) => w.message)).toContainEqual(
      expect.stringMatching(
        /left data out of the searches of 3 patient\(s\).*none of them was retracted/,
      ),
    );
    f.ehr.faults.reset();
    const whole = await f.runSync('full');
    expect(whole.counts.enqueued).toBe(0);
    expect(whole.counts.retracted).toBe(0);
  });
});
