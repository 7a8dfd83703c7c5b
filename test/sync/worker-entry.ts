// A worker process for the crash tests: the real runtime and startWorker, with short BullMQ
// lock and stalled-check times so a killed worker's job is recovered in seconds. Settings come
// as JSON in LHN_TEST_WORKER; it prints one JSON line per event for the test to follow.
import { parseServiceConfig } from '../../src/config/service.js';
import { createRuntime } from '../../src/runtime.js';
import { startWorker } from '../../src/worker.js';
import { silentLogger } from '../../src/util/logger.js';

interface EntrySettings {
  redisUrl: string;
  prefix: string;
  registryUrl: string;
  centresDir: string;
  mappingsDir: string;
  secret: string;
}

const settings = JSON.parse(process.env.LHN_TEST_WORKER ?? '{}') as EntrySettings;
const emit = (event: Record<string, unknown>) => process.stdout.write(`${JSON.stringify(event)}\n`);

const config = parseServiceConfig({
  pseudonymSecret: settings.secret,
  centresDir: settings.centresDir,
  mappingsDir: settings.mappingsDir,
  redis: { url: settings.redisUrl, prefix: settings.prefix },
  registry: { url: settings.registryUrl, timeoutMs: 5000 },
  submissions: { attempts: 12, backoffMs: 100 },
});
const runtime = await createRuntime(config, { role: 'worker', logger: silentLogger });
const worker = await startWorker(runtime, {
  lockDurationMs: 3000,
  stalledIntervalMs: 1000,
  lockLeaseMs: 3000,
  busyRetryMs: 500,
  // Small batches so a killed run has enqueued part of its visits.
  tuning: { enqueueBatchSize: 20, patientConcurrency: 2 },
});
worker.sync?.on('active', (job) => emit({ event: 'active', queue: 'sync', jobId: job.id }));
worker.sync?.on('completed', (job) => emit({ event: 'completed', queue: 'sync', jobId: job.id }));
process.on('SIGTERM', () => {
  void worker
    .close()
    .then(() => runtime.close())
    .then(() => {
      emit({ event: 'closed' });
      process.exit(0);
    });
});
emit({ event: 'ready', pid: process.pid });
