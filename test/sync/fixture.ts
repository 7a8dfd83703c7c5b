// A complete sync test bed over loopback: a generated centre served by the sandbox EHR (real
// SMART auth), the sandbox registry, real Redis under a unique prefix, the real IBD pack.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { generateCentre, type GeneratedCentre } from '../../fixtures/generator/index.js';
import { startSandboxEhr, type SandboxEhr } from '../../src/sandbox/ehr/index.js';
import { provisionSandboxCentre } from '../../src/sandbox/ehr/provision.js';
import { startSandboxRegistry, type SandboxRegistry } from '../../src/sandbox/registry/index.js';
import { parseServiceConfig, type ServiceConfig } from '../../src/config/service.js';
import type { CentreConfig } from '../../src/config/centre.js';
import { createRuntime, type Runtime } from '../../src/runtime.js';
import { createCentreServices, type PrepareCentre } from '../../src/sync/centre-services.js';
import { syncCentre, type SyncCentreOptions } from '../../src/sync/run-sync.js';
import type { RunRecord, SyncMode } from '../../src/sync/run-store.js';
import { startWorker, type RunningWorker } from '../../src/worker.js';
import { silentLogger } from '../../src/util/logger.js';
import { SECRET, deletePrefix, testPrefix, waitFor } from './helpers.js';
import { pseudonymKey } from '../../src/registry/keys.js';

export interface SyncFixture {
  gen: GeneratedCentre;
  ehr: SandboxEhr;
  registry: SandboxRegistry;
  centre: CentreConfig;
  config: ServiceConfig;
  runtime: Runtime;
  prepareCentre: PrepareCentre;
  keysDir: string;
  /** Runs one sync in this process (no queue). */
  runSync(
    mode: SyncMode,
    options?: Pick<SyncCentreOptions, 'runId' | 'signal' | 'overlapMs'>,
  ): Promise<RunRecord>;
  /** Delivers every queued submission with a delivery-only worker, then stops it. */
  deliverAll(timeoutMs?: number): Promise<void>;
  visitKey(encounterId: string): string;
  close(): Promise<void>;
}

export interface SyncFixtureOptions {
  patients?: number;
  seed?: number;
  centreId?: string;
  pullMode?: 'search' | 'bulk';
  /** Redis URL (default the shared 127.0.0.1:6379). */
  redisUrl?: string;
  centre?: Record<string, unknown>;
}

export async function startSyncFixture(options: SyncFixtureOptions = {}): Promise<SyncFixture> {
  const centreId = options.centreId ?? 'sync-test';
  const gen = generateCentre({
    seed: options.seed ?? 11,
    patients: options.patients ?? 8,
    centreId,
  });
  const keysDir = await mkdtemp(join(tmpdir(), 'lhn-sync-'));
  const ehr = await startSandboxEhr({
    resources: gen.resources() as never,
    exportPollsBeforeDone: 1,
    exportRetryAfterSeconds: 0,
  });
  const registry = await startSandboxRegistry();
  const { centre } = await provisionSandboxCentre(ehr, {
    keysDir,
    centreId,
    centre: {
      timeZone: gen.timeZone,
      cohort: { group: gen.groupId },
      pull: { mode: options.pullMode ?? 'search', pageSize: 100, firstSyncLookbackDays: 36500 },
      limits: { maxConcurrentRequests: 16, requestsPerSecond: 1000 },
      mapping: { pack: 'ibd', overrides: gen.centreOverrides },
      ...options.centre,
    },
  });
  const prefix = testPrefix();
  const config = parseServiceConfig({
    pseudonymSecret: SECRET,
    mappingsDir: join(process.cwd(), 'mappings'),
    redis: { url: options.redisUrl ?? 'redis://127.0.0.1:6379', prefix },
    registry: { url: registry.url, timeoutMs: 5000 },
    submissions: { attempts: 12, backoffMs: 50 },
    log: { level: 'silent' },
  });
  const runtime = await createRuntime(config, {
    centres: [centre],
    logger: silentLogger,
    role: 'worker',
  });
  const prepareCentre = createCentreServices({
    config,
    redis: runtime.redis,
    prefix,
    logger: silentLogger,
  });

  return {
    gen,
    ehr,
    registry,
    centre,
    config,
    runtime,
    prepareCentre,
    keysDir,
    async runSync(mode, runOptions = {}) {
      const services = await prepareCentre(centre);
      return syncCentre(
        {
          redis: runtime.redis,
          prefix,
          submissionsQueue: runtime.queues.submissions,
          runStore: runtime.runStore,
          pseudonymSecret: SECRET,
          ...services,
        },
        { centre, mode, reason: 'manual', ...runOptions },
      );
    },
    async deliverAll(timeoutMs = 60_000) {
      const worker: RunningWorker = await startWorker(runtime, {
        processors: { sync: false, submissions: true },
      });
      try {
        await waitFor(
          async () => {
            const c = await runtime.queues.submissions.getJobCounts(
              'waiting',
              'active',
              'delayed',
              'prioritized',
            );
            return Object.values(c).every((n) => n === 0);
          },
          timeoutMs,
          'the submissions queue to drain',
        );
      } finally {
        await worker.close();
      }
    },
    visitKey: (encounterId) => pseudonymKey(SECRET, centreId, 'Encounter', encounterId),
    async close() {
      await runtime.queues.sync.obliterate({ force: true }).catch(() => undefined);
      await runtime.queues.submissions.obliterate({ force: true }).catch(() => undefined);
      await deletePrefix(runtime.redis, prefix).catch(() => undefined);
      await runtime.close();
      await ehr.close();
      await registry.close();
      await rm(keysDir, { recursive: true, force: true });
    },
  };
}

/** The client with every method failing at once ('EHR says no'): an EHR that refuses all. */
export function refusingClient<T extends object>(client: T): T {
  return new Proxy(client, {
    get: (target, prop, receiver) => {
      const value = Reflect.get(target, prop, receiver) as unknown;
      return typeof value === 'function'
        ? () => {
            throw new Error('EHR says no');
          }
        : value;
    },
  });
}
