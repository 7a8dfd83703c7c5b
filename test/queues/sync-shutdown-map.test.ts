// SIGTERM during a bulk sync's map phase (fault review 2, finding 7): the run stops at the
// next patient and is handed back, as in the pull phase, instead of mapping the whole export.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { requestSync } from '../../src/sync/request-sync.js';
import { startWorker } from '../../src/worker.js';
import type { PrepareCentre } from '../../src/sync/centre-services.js';
import { startSyncFixture, type SyncFixture } from '../sync/fixture.js';
import { waitFor } from '../sync/helpers.js';

describe('sync worker shutdown in the map phase', () => {
  let f: SyncFixture;
  beforeAll(async () => {
    f = await startSyncFixture({ patients: 8, centreId: 'sync-map-stop', pullMode: 'bulk' });
  });
  afterAll(async () => {
    await f?.close();
  });

  it('when the worker shuts down while a bulk export is mapped, then the run stops at the next patient and is handed back', async () => {
    let mapped = 0;
    // Each patient takes 300 ms to map (a large record, a slow machine).
    const prepareCentre: PrepareCentre = async (centre) => {
      const services = await f.prepareCentre(centre);
      const mapper = services.mapper;
      return {
        ...services,
        mapper: {
          ...mapper,
          mapResources: (resources) => mapper.mapResources(resources),
          createAssembler: () => {
            const assembler = mapper.createAssembler();
            return {
              add: (r) => assembler.add(r),
              finish: () => {
                const until = Date.now() + 300;
                while (Date.now() < until) {
                  // busy: mapping is CPU work
                }
                mapped += 1;
                return assembler.finish();
              },
            };
          },
        },
      };
    };
    const worker = await startWorker(f.runtime, { prepareCentre });
    const { runId } = await requestSync(
      {
        redis: f.runtime.redis,
        prefix: f.runtime.prefix,
        syncQueue: f.runtime.queues.sync,
        runStore: f.runtime.runStore,
      },
      f.centre.id,
      'full',
    );
    await waitFor(async () => mapped > 0, 30_000, 'the map phase');
    await worker.close();
    const record = (await f.runtime.runStore.get(runId!))!;
    expect(record).toMatchObject({ status: 'queued', phase: 'interrupted' });
    expect(mapped).toBeLessThan(8);
    const job = await f.runtime.queues.sync.getJob(record.jobId!);
    expect(['delayed', 'waiting']).toContain(await job!.getState());
  });
});
