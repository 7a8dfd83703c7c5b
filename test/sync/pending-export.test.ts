// The bulk export a run keeps in Redis between runs: forgotten only by the run that kept it,
// and kept when a run is handed over (shutdown, lock lost).
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CentreLockLostError } from '../../src/sync/centre-lock.js';
import { isHandOverAbort } from '../../src/sync/run-sync.js';
import { openVisitState } from '../../src/sync/visit-state.js';
import { WORKER_SHUTDOWN_REASON } from '../../src/util/abort.js';
import { deletePrefix, testPrefix } from './helpers.js';

describe('pending export store', () => {
  const prefix = testPrefix();
  let redis: Redis;
  beforeAll(() => {
    redis = new Redis('redis://127.0.0.1:6379');
  });
  afterAll(async () => {
    await deletePrefix(redis, prefix);
    redis.disconnect();
  });

  const pending = (statusUrl: string) => ({
    request: 'https://ehr.example/fhir/Group/g/$export?_type=Patient',
    bound: null,
    statusUrl,
    startedAt: Date.now(),
  });

  it("when a run clears an export that is no longer the one kept (a newer run saved its own), then the newer run's record stays", async () => {
    const store = openVisitState(redis, prefix, 'c1').pendingExport;
    await store.save(pending('https://ehr.example/status/A'), 60_000);
    await store.save(pending('https://ehr.example/status/B'), 60_000);
    await store.clear('https://ehr.example/status/A');
    expect((await store.load())?.statusUrl).toBe('https://ehr.example/status/B');
    await store.clear('https://ehr.example/status/B');
    expect(await store.load()).toBeNull();
    expect(await redis.exists(`${prefix}:state:c1:export`)).toBe(0);
  });

  it('when the kept record is unreadable, then clear removes it', async () => {
    await redis.set(`${prefix}:state:c2:export`, 'not json', 'PX', 60_000);
    await openVisitState(redis, prefix, 'c2').pendingExport.clear('https://ehr.example/status/A');
    expect(await redis.exists(`${prefix}:state:c2:export`)).toBe(0);
  });

  it('when a run is aborted by shutdown or a lost lock, then it is a hand-over (the export is kept); any other reason is not', () => {
    expect(isHandOverAbort(WORKER_SHUTDOWN_REASON)).toBe(true);
    expect(isHandOverAbort(new CentreLockLostError('c1'))).toBe(true);
    expect(isHandOverAbort(new Error('cancelled'))).toBe(false);
    expect(isHandOverAbort(undefined)).toBe(false);
  });
});
