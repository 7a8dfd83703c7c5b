// A resumed bulk export and the watermark: the export's transactionTime should be its
// kick-off, but some servers (HAPI FHIR before hapi-fhir#6841) report the job's end. A run
// that resumes a job kicked off by a crashed run must not move the watermark past the
// original kick-off, or changes made between the kick-off and the resume are never pulled.
import { afterEach, expect, it } from 'vitest';
import type { FhirResource } from '../../src/fhir/types.js';
import { WORKER_SHUTDOWN_REASON } from '../../src/util/abort.js';
import { startSyncFixture, type SyncFixture } from './fixture.js';

let f: SyncFixture | undefined;
afterEach(async () => {
  await f?.close();
  f = undefined;
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

it('when a resumed export reports its end as transactionTime, then a change made after the crashed run kicked it off is sent by the next incremental sync', async () => {
  f = await startSyncFixture({ patients: 4, seed: 5, centreId: 'resume-wm', pullMode: 'bulk' });
  const overlapMs = 1000;
  await f.runSync('full', { overlapMs });
  f.ehr.faults.set({ transactionTimeAtEnd: true });

  // A visit weight to change later.
  const weight = [...f.gen.resources()].find(
    (r) =>
      r.resourceType === 'Observation' &&
      JSON.stringify((r as { code?: unknown }).code).includes('29463-7') &&
      (r as { encounter?: unknown }).encounter !== undefined,
  )!;
  await sleep(20);

  // Run A kicks off an incremental export and is stopped (worker shutdown): the job is kept.
  f.ehr.faults.set({ transactionTimeAtEnd: true, slow: { delayMs: 400, kinds: ['status'] } });
  const exportKey = `${f.runtime.prefix}:state:${f.centre.id}:export`;
  const stop = new AbortController();
  const runA = f.runSync('incremental', { overlapMs, signal: stop.signal }).catch(() => null);
  while (!(await f.runtime.redis.get(exportKey))) await sleep(5);
  stop.abort(WORKER_SHUTDOWN_REASON);
  await runA;
  expect(await f.runtime.redis.get(exportKey)).not.toBeNull();
  f.ehr.faults.set({ transactionTimeAtEnd: true });

  // The weight changes after that kick-off; the worker comes back later than the overlap.
  await sleep(20);
  const stored = f.ehr.get('Observation', weight.id) as FhirResource & {
    valueQuantity: { value: number };
  };
  f.ehr.upsert({
    ...stored,
    valueQuantity: { ...stored.valueQuantity, value: stored.valueQuantity.value + 2 },
  });
  await sleep(overlapMs + 500);

  const runB = await f.runSync('incremental', { overlapMs });
  expect(runB.status).toBe('succeeded');
  const runC = await f.runSync('incremental', { overlapMs });
  expect(runB.counts.enqueued + runC.counts.enqueued).toBe(1);
});
