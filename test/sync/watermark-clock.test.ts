// The watermark's clock (fault review 2, finding 4): the EHR's Date header running ahead of
// the clock that stamps meta.lastUpdated must not carry the watermark past later changes, and
// a $lastFull from a clock that ran ahead must not turn schedule.fullEveryDays off.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { syncCentre } from '../../src/sync/run-sync.js';
import { openVisitState } from '../../src/sync/visit-state.js';
import type { SyncMode } from '../../src/sync/run-store.js';
import { SECRET } from './helpers.js';
import { startSyncFixture, type SyncFixture } from './fixture.js';

const SKEW_MS = 3_600_000;

describe('sync watermark with a skewed EHR clock', () => {
  let f: SyncFixture;
  beforeAll(async () => {
    f = await startSyncFixture({
      patients: 4,
      seed: 4,
      centreId: 'sync-skew',
      centre: { schedule: { fullEveryDays: 7 } },
    });
  });
  afterAll(async () => {
    await f?.close();
  });

  /** One sync in this process whose EHR answers /metadata with a Date header 1 h ahead. */
  async function runSkewed(mode: SyncMode) {
    const services = await f.prepareCentre(f.centre);
    const client = services.fhirClient as unknown as {
      request: (url: string, opts?: { resourceType?: string }) => Promise<Response>;
    };
    const original = client.request.bind(client);
    client.request = async (url, opts) => {
      const res = await original(url, opts);
      if (opts?.resourceType !== 'metadata') return res;
      const headers = new Headers(res.headers);
      headers.set('date', new Date(Date.now() + SKEW_MS).toUTCString());
      return new Response(res.body, { status: res.status, headers });
    };
    return syncCentre(
      {
        redis: f.runtime.redis,
        prefix: f.runtime.prefix,
        submissionsQueue: f.runtime.queues.submissions,
        runStore: f.runtime.runStore,
        pseudonymSecret: SECRET,
        ...services,
      },
      { centre: f.centre, mode, reason: 'manual' },
    );
  }

  it("when the EHR's Date header runs an hour ahead, then the watermark follows this machine's clock, the run warns, and a later change is still pulled", async () => {
    const full = await runSkewed('full');
    const marks = await openVisitState(
      f.runtime.redis,
      f.runtime.prefix,
      f.centre.id,
    ).getWatermarks();
    expect(Date.parse(marks.Encounter!)).toBeLessThanOrEqual(Date.now());
    expect(full.warnings?.map((w) => w.message).join(' ')).toMatch(/differ by 3(599|600) s/);
    const truth = f.gen.truth.find((t) => !t.retracted)!;
    const encounter = f.ehr.get('Encounter', truth.encounterId)!;
    f.ehr.upsert({ ...encounter, status: 'entered-in-error' } as never);
    const incremental = await runSkewed('incremental');
    expect(incremental.mode).toBe('incremental');
    expect(incremental.counts.retracted).toBe(1);
  });

  it('when $lastFull lies in the future, then an incremental run with fullEveryDays goes full', async () => {
    await f.runtime.redis.hset(
      `${f.runtime.prefix}:state:${f.centre.id}:watermarks`,
      '$lastFull',
      new Date(Date.now() + 30 * 86_400_000).toISOString(),
    );
    expect((await f.runSync('incremental')).mode).toBe('full');
  });
});
