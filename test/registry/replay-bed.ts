// The test bed of the Idempotency-Key tests: a submissions queue and worker on a real Redis
// (unique prefix, removed on close) delivering to a sandbox registry that replays the answer
// of a repeated key, as standard idempotency middleware does.
import { Queue, Worker } from 'bullmq';
import type { Redis } from 'ioredis';
import {
  SUBMISSIONS_QUEUE,
  createSubmissionBackoff,
  createSubmissionProcessor,
  submissionJobOptions,
  type SubmissionJobData,
} from '../../queues/submissions.js';
import { parseServiceConfig } from '../../src/config/service.js';
import { createRegistryClient, type RegistryClient } from '../../src/registry/delivery.js';
import type { RegistrySubmission } from '../../src/registry/submission.js';
import { startSandboxRegistry } from '../../src/sandbox/registry/index.js';
import { createSubmissionEnqueuer } from '../../src/sync/enqueue.js';
import { openVisitState } from '../../src/sync/visit-state.js';
import { SECRET, deletePrefix, testPrefix, testRedis, waitFor } from '../sync/helpers.js';

/**
 * Queue, worker and a replaying sandbox registry (idempotencyReplay) under a unique Redis
 * prefix: `sync` enqueues one version as a sync run would and waits until it is delivered.
 */
export async function startReplayBed(
  options: { wrap?: (real: RegistryClient) => RegistryClient; attempts?: number } = {},
) {
  const redis: Redis = testRedis();
  const prefix = testPrefix();
  const registry = await startSandboxRegistry({ idempotencyReplay: true });
  const config = parseServiceConfig({
    pseudonymSecret: SECRET,
    registry: { url: registry.url, timeoutMs: 2000 },
    submissions: { attempts: options.attempts ?? 4, backoffMs: 50 },
  });
  const real = createRegistryClient({ config: config.registry });
  const queue = new Queue<SubmissionJobData>(SUBMISSIONS_QUEUE, {
    connection: redis,
    prefix,
    defaultJobOptions: submissionJobOptions(config.submissions),
  });
  const worker = new Worker<SubmissionJobData>(
    SUBMISSIONS_QUEUE,
    createSubmissionProcessor({
      client: options.wrap ? options.wrap(real) : real,
      redis,
      prefix,
    }),
    {
      connection: redis,
      prefix,
      concurrency: 2,
      settings: { backoffStrategy: createSubmissionBackoff(config.submissions) },
    },
  );
  async function idle(): Promise<void> {
    await waitFor(
      async () => {
        const k = await queue.getJobCounts('waiting', 'active', 'delayed', 'prioritized');
        return Object.values(k).every((n) => n === 0);
      },
      15_000,
      'every job to finish',
    );
  }
  return {
    redis,
    prefix,
    registry,
    queue,
    /** Enqueues one version as a sync run would, and waits until it is delivered. */
    async sync(centreId: string, sub: RegistrySubmission, runId: string): Promise<void> {
      const e = createSubmissionEnqueuer({
        queue,
        redis,
        state: openVisitState(redis, prefix, centreId),
        centreId,
        pseudonymSecret: SECRET,
        runId,
      });
      await e.add(sub);
      await e.flush();
      await idle();
    },
    async close() {
      await worker.close();
      await queue.obliterate({ force: true });
      await queue.close();
      await deletePrefix(redis, prefix);
      await redis.quit();
      await registry.close();
    },
  };
}
