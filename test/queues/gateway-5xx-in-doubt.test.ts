// A gateway in front of the registry that answers 500 or 503 itself when its own timeout runs
// out (Heroku's router, H12), while the request it forwarded carries on and is stored: the
// visit must stay claimed in doubt, as after a 504, so a newer version cannot be posted first
// and then be overwritten by the older one. The real path: enqueuer, Redis, processor, client.
import { createServer, type Server } from 'node:http';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { Queue, Worker } from 'bullmq';
import type { Redis } from 'ioredis';
import {
  SUBMISSIONS_QUEUE,
  SUBMISSIONS_WORKER_LIMITER,
  createSubmissionBackoff,
  createSubmissionProcessor,
  submissionJobOptions,
  visitClaimMs,
  type SubmissionJobData,
} from '../../queues/submissions.js';
import { createRegistryClient } from '../../src/registry/delivery.js';
import { parseServiceConfig } from '../../src/config/service.js';
import { createSubmissionEnqueuer } from '../../src/sync/enqueue.js';
import { openVisitState } from '../../src/sync/visit-state.js';
import { startSandboxRegistry, type SandboxRegistry } from '../../src/sandbox/registry/index.js';
import {
  SECRET,
  deletePrefix,
  makeVisit,
  testPrefix,
  testRedis,
  waitFor,
} from '../sync/helpers.js';

const GATEWAY_TIMEOUT_MS = 300;
const REGISTRY_COMMIT_MS = 700;
const TIMEOUT_MS = 1_000;

/** A gateway that forwards to the registry and answers `status` with HTML once its timeout runs out. */
async function startGateway(
  upstream: string,
  status: () => number,
): Promise<{ url: string; server: Server }> {
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const timer = setTimeout(() => {
        res.writeHead(status(), { 'content-type': 'text/html' });
        res.end('<html><body>Application error</body></html>');
      }, GATEWAY_TIMEOUT_MS);
      const headers: Record<string, string> = {};
      for (const h of ['content-type', 'idempotency-key', 'accept'])
        if (req.headers[h]) headers[h] = String(req.headers[h]);
      fetch(`${upstream}/submissions`, { method: 'POST', headers, body: Buffer.concat(chunks) })
        .then(async (up) => {
          const text = await up.text();
          clearTimeout(timer);
          if (!res.headersSent) {
            res.writeHead(up.status, {
              'content-type': up.headers.get('content-type') ?? 'application/json',
            });
            res.end(text);
          }
        })
        .catch(() => undefined);
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { url: `http://127.0.0.1:${(server.address() as { port: number }).port}`, server };
}

describe('a gateway 500 or 503 after it forwarded the request', () => {
  let registry: SandboxRegistry;
  let gateway: { url: string; server: Server };
  let status = 503;
  let redis: Redis;
  let prefix: string;
  let queue: Queue<SubmissionJobData>;
  let worker: Worker<SubmissionJobData>;

  beforeAll(async () => {
    registry = await startSandboxRegistry({ port: 0 });
    gateway = await startGateway(registry.url, () => status);
  });
  afterAll(async () => {
    await registry.close();
    gateway.server.close();
  });
  afterEach(async () => {
    await worker.close();
    await queue.obliterate({ force: true });
    await queue.close();
    await deletePrefix(redis, prefix);
    await redis.quit();
  });

  it.each([503, 500])(
    'when the gateway answers %i while the registry still stores the older version, then the newer one is posted after it and stays current',
    async (answer) => {
      status = answer;
      registry.reset();
      registry.faults.clear();
      redis = testRedis();
      prefix = `${testPrefix()}-gateway-${answer}`;
      const config = parseServiceConfig({
        pseudonymSecret: SECRET,
        registry: { url: gateway.url, timeoutMs: TIMEOUT_MS },
        submissions: { attempts: 12, backoffMs: 100 },
      });
      queue = new Queue<SubmissionJobData>(SUBMISSIONS_QUEUE, {
        connection: redis,
        prefix,
        defaultJobOptions: submissionJobOptions(config.submissions),
      });
      worker = new Worker<SubmissionJobData>(
        SUBMISSIONS_QUEUE,
        createSubmissionProcessor({
          client: createRegistryClient({ config: config.registry }),
          redis,
          prefix,
          // Shorter than visitClaimMs (7 s here) to keep the test quick; still longer than the commit.
          visitLockMs: Math.min(visitClaimMs(config.registry), 2_000),
          visitBusyDelayMs: 100,
          rateLimit: (ms) => queue.rateLimit(ms),
        }),
        {
          connection: redis,
          prefix,
          concurrency: 8,
          limiter: SUBMISSIONS_WORKER_LIMITER,
          settings: { backoffStrategy: createSubmissionBackoff(config.submissions) },
        },
      );
      const centreId = 'gw';
      const enqueue = async (visit: ReturnType<typeof makeVisit>) => {
        const e = createSubmissionEnqueuer({
          queue,
          redis,
          state: openVisitState(redis, prefix, centreId),
          centreId,
          pseudonymSecret: SECRET,
          runId: 'r',
        });
        await e.add(visit);
        await e.flush();
      };
      const older = makeVisit({ centreId, patientId: 'p1', encounterId: 'e1', pga: 'mild' });
      const newer = makeVisit({ centreId, patientId: 'p1', encounterId: 'e1', pga: 'severe' });
      // Inside registry.timeoutMs of its arrival, as the contract asks, but after the gateway gave up.
      registry.faults.slowCommit(older.submissionId, REGISTRY_COMMIT_MS);
      await enqueue(older);
      await waitFor(() => registry.counts().requests >= 1, 10_000, 'the older post');
      await new Promise((r) => setTimeout(r, GATEWAY_TIMEOUT_MS + 100));
      const claim = await redis.get(`${prefix}:deliver:${centreId}:${older.visitKey}`);
      expect(claim, 'the visit stays claimed in doubt').toMatch(/^doubt:/);
      await enqueue(newer);
      await waitFor(
        async () => {
          const states = await Promise.all(
            [older, newer].map(async (v) => (await queue.getJob(v.submissionId))?.getState()),
          );
          return states.every((s) => s === 'completed');
        },
        20_000,
        'both jobs done',
      );
      await new Promise((r) => setTimeout(r, REGISTRY_COMMIT_MS));
      expect(registry.submissions().map((s) => s.submissionId)).toEqual([
        older.submissionId,
        newer.submissionId,
      ]);
      expect(registry.visits()[0]!.current).toEqual(newer);
    },
    30_000,
  );
});
