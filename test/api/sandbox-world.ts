// The whole system on loopback for end-to-end tests: a sandbox EHR holding a generated IBD
// centre (SMART client registered with a fresh key), the sandbox registry, the API server and
// a worker (sync + delivery), all on real Redis under a unique prefix. Both processes can log
// into one capture so tests can inspect everything that was logged.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { generateCentre, type GeneratedCentre } from '../../fixtures/generator/index.js';
import { hashApiKey } from '../../src/api/auth.js';
import { parseServiceConfig, type ServiceConfig } from '../../src/config/service.js';
import type { CentreConfig } from '../../src/config/centre.js';
import { createRuntime, type Runtime } from '../../src/runtime.js';
import { startSandboxEhr, type SandboxEhr } from '../../src/sandbox/ehr/index.js';
import { provisionSandboxCentre } from '../../src/sandbox/ehr/provision.js';
import { startSandboxRegistry, type SandboxRegistry } from '../../src/sandbox/registry/index.js';
import { startServer, type RunningServer } from '../../src/server.js';
import { createLogger, type Logger } from '../../src/util/logger.js';
import { startWorker, type RunningWorker } from '../../src/worker.js';
import {
  LogCapture,
  REDIS_URL,
  SECRET,
  deletePrefix,
  newApiKey,
  testPrefix,
  testRedis,
} from './helpers.js';

export interface SandboxWorld {
  url: string;
  prefix: string;
  config: ServiceConfig;
  centre: CentreConfig;
  generated: GeneratedCentre;
  ehr: SandboxEhr;
  registry: SandboxRegistry;
  api: RunningServer;
  worker: RunningWorker;
  workerRuntime: Runtime;
  keys: { viewer: string; operator: string; admin: string };
  logs: LogCapture;
  close(): Promise<void>;
}

export interface SandboxWorldOptions {
  centreId?: string;
  patients?: number;
  seed?: number;
  /** Log level of both processes (default info). */
  logLevel?: string;
}

/** Starts the EHR, registry, API and worker; close() stops them all and deletes the keys. */
export async function startSandboxWorld(options: SandboxWorldOptions = {}): Promise<SandboxWorld> {
  const centreId = options.centreId ?? 'sandbox-centre';
  const prefix = testPrefix();
  const keysDir = await mkdtemp(join(tmpdir(), 'lhn-world-'));
  const logs = new LogCapture();
  const logger: Logger = createLogger({ level: options.logLevel ?? 'info', destination: logs });
  const generated = generateCentre({
    seed: options.seed ?? 11,
    patients: options.patients ?? 12,
    centreId,
  });
  const ehr = await startSandboxEhr({ resources: generated.resources() });
  const registry = await startSandboxRegistry();
  const { centre } = await provisionSandboxCentre(ehr, {
    keysDir,
    centreId,
    centre: {
      name: 'Sandbox Children’s Hospital',
      timeZone: 'America/New_York',
      cohort: { group: generated.groupId },
      schedule: { cron: '0 3 * * *', mode: 'incremental' },
      // The generated history is years old: the first sync must reach back that far.
      pull: { firstSyncLookbackDays: 36500 },
      mapping: { pack: 'ibd', overrides: generated.centreOverrides },
      limits: { maxConcurrentRequests: 8, requestsPerSecond: 500 },
    },
  });
  const keys = { viewer: newApiKey(), operator: newApiKey(), admin: newApiKey() };
  const config = parseServiceConfig({
    pseudonymSecret: SECRET,
    redis: { url: REDIS_URL, prefix },
    mappingsDir: join(process.cwd(), 'mappings'),
    keysDir,
    registry: { url: registry.url, timeoutMs: 5000 },
    submissions: { attempts: 3, backoffMs: 200 },
    api: {
      host: '127.0.0.1',
      port: 0,
      keys: [
        { name: 'viewer-key', role: 'viewer', sha256: hashApiKey(keys.viewer) },
        { name: 'data-manager', role: 'operator', sha256: hashApiKey(keys.operator) },
        { name: 'admin-key', role: 'admin', sha256: hashApiKey(keys.admin) },
      ],
    },
  });
  const api = await startServer(config, {
    centres: [centre],
    prefix,
    logger,
    alertIntervalMs: 0,
  });
  const workerRuntime = await createRuntime(config, {
    role: 'worker',
    centres: [centre],
    prefix,
    logger,
  });
  const worker = await startWorker(workerRuntime, { stalledIntervalMs: 5000 });

  return {
    url: api.url,
    prefix,
    config,
    centre,
    generated,
    ehr,
    registry,
    api,
    worker,
    workerRuntime,
    keys,
    logs,
    async close() {
      await worker.close();
      await workerRuntime.close();
      await api.close();
      await registry.close();
      await ehr.close();
      const redis = testRedis();
      try {
        await deletePrefix(redis, prefix);
      } finally {
        await redis.quit();
      }
      await rm(keysDir, { recursive: true, force: true });
    },
  };
}
