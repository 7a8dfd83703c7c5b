// A visit whose only version was written ahead and never reached the queue (the run died
// before addBulk) was never sent: its disappearance retracts nothing. One whose earlier
// version was sent is still retracted.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openVisitState } from '../../src/sync/visit-state.js';
import { startSyncFixture, type SyncFixture } from './fixture.js';

describe('retractions and pending visit-state entries', () => {
  let f: SyncFixture;
  beforeAll(async () => {
    f = await startSyncFixture({ patients: 4, seed: 61, centreId: 'retract-pending' });
  });
  afterAll(async () => {
    await f?.close();
  });

  it('when two sent visits disappear and one entry is pending over nothing sent with no job, then only the other is retracted', async () => {
    expect((await f.runSync('full')).status).toBe('succeeded');
    const truth = f.gen.truth.filter((t) => !t.retracted);
    const [neverSent, sentBefore] = [truth[0]!, truth[1]!];
    const state = openVisitState(f.runtime.redis, f.runtime.prefix, f.centre.id);
    const keys = [f.visitKey(neverSent.encounterId), f.visitKey(sentBefore.encounterId)];
    const [a, b] = await state.getMany(keys);
    // Written ahead by a run that died before addBulk: no job with these hashes exists.
    await state.setMany([
      [keys[0]!, { ...a!, h: 'f'.repeat(16), w: 1 }],
      [keys[1]!, { ...b!, h: 'e'.repeat(16), w: 1, c: 1 }],
    ]);
    expect(f.ehr.delete('Encounter', neverSent.encounterId)).toBe(true);
    expect(f.ehr.delete('Encounter', sentBefore.encounterId)).toBe(true);
    const record = await f.runSync('full');
    expect(record.status).toBe('succeeded');
    expect(record.counts.retracted).toBe(1);
    const [after] = await state.getMany([keys[1]!]);
    expect(after?.r).toBe(1);
  });
});
