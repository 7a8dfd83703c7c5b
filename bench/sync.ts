// `npm run bench:sync [-- --resources N --mode search|bulk]`: a full sync of a generated
// centre (default 1,000,000 resources) from the sandbox EHR over loopback into Redis (a
// unique prefix, deleted afterwards). The sandbox runs in a child process (this same file
// with --serve-ehr) so its memory is not counted. The addBulk ceiling is measured in the
// same run: bare BullMQ addBulk of jobs the size of the sync's, in the same batch size.
//
// The sync runs with a bounded heap (default --max-old-space-size=256, `--heap-mb`), as a
// production worker should. Prints:
//   bench sync: R resources/s; S submissions/s enqueued; peak RSS M MB; addBulk ceiling C jobs/s
// where R is end to end (pull + map + enqueue over loopback), S is the sync's enqueue path
// (state bookkeeping + addBulk, as createSubmissionEnqueuer does it) replayed on the sync's own
// submissions, and C bare BullMQ addBulk of the same submissions with fresh ids, the two
// measured page by page in alternation so they see the same machine load. A detail line gives
// the end-to-end enqueue rate, the stage timings and the enqueue rate inside the sync.
import { spawn } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { Queue } from 'bullmq';
import { generateCentre, patientsForResources } from '../fixtures/generator/index.js';
import { loadCentreFile } from '../src/config/centre.js';
import { parseServiceConfig } from '../src/config/service.js';
import { createRuntime } from '../src/runtime.js';
import { createCentreServices } from '../src/sync/centre-services.js';
import { syncCentre, type SyncTimings } from '../src/sync/run-sync.js';
import { createMetrics } from '../src/util/metrics.js';
import { silentLogger } from '../src/util/logger.js';
import type { SubmissionJobData } from '../queues/submissions.js';
import type { RegistrySubmission } from '../src/registry/submission.js';
import { createSubmissionEnqueuer } from '../src/sync/enqueue.js';
import { openVisitState } from '../src/sync/visit-state.js';
import type { Redis } from 'ioredis';

const BATCH = 500;
const { values: args } = parseArgs({
  options: {
    resources: { type: 'string', default: '1000000' },
    mode: { type: 'string', default: 'bulk' },
    seed: { type: 'string', default: '42' },
    'serve-ehr': { type: 'boolean', default: false },
    'heap-mb': { type: 'string', default: '256' },
  },
});

interface EhrSettings {
  resources: number;
  seed: number;
  keysDir: string;
  mode: 'search' | 'bulk';
}

/** Child: generate the centre, serve it, register our client, write the centre file. */
async function serveEhr(): Promise<void> {
  const { startSandboxEhr } = await import('../src/sandbox/ehr/index.js');
  const { provisionSandboxCentre } = await import('../src/sandbox/ehr/provision.js');
  const s = JSON.parse(process.env.LHN_BENCH_EHR ?? '{}') as EhrSettings;
  const centreId = 'bench-centre';
  const patients = patientsForResources(s.resources, { seed: s.seed, centreId });
  const gen = generateCentre({ seed: s.seed, patients, centreId });
  const ehr = await startSandboxEhr({
    resources: gen.resources() as never,
    exportPollsBeforeDone: 1,
    exportRetryAfterSeconds: 0,
  });
  const { centre } = await provisionSandboxCentre(ehr, {
    keysDir: s.keysDir,
    centreId,
    centre: {
      timeZone: gen.timeZone,
      cohort: { group: gen.groupId },
      pull: { mode: s.mode, pageSize: 1000, firstSyncLookbackDays: 36500 },
      limits: { maxConcurrentRequests: 64, requestsPerSecond: 1000 },
      mapping: { pack: 'ibd', overrides: gen.centreOverrides },
    },
  });
  const { sourceFile: _source, ...file } = centre;
  const centreFile = join(s.keysDir, `${centreId}.json`);
  await writeFile(centreFile, JSON.stringify(file));
  const counts = gen.countResources();
  process.stdout.write(
    `${JSON.stringify({ ready: true, centreFile, total: counts.total, visits: counts.visits, patients })}\n`,
  );
  process.on('SIGTERM', () => void ehr.close().then(() => process.exit(0)));
}

/** Starts the child sandbox and waits for its ready line. */
async function startEhrChild(settings: EhrSettings) {
  const child = spawn(
    process.execPath,
    ['--import', 'tsx', fileURLToPath(import.meta.url), '--serve-ehr'],
    {
      env: { ...process.env, NODE_OPTIONS: '', LHN_BENCH_EHR: JSON.stringify(settings) },
      stdio: ['ignore', 'pipe', 'inherit'],
    },
  );
  const ready = await new Promise<{
    centreFile: string;
    total: number;
    visits: number;
    patients: number;
  }>((resolve, reject) => {
    child.once('exit', (code) => reject(new Error(`sandbox EHR exited (${code})`)));
    createInterface({ input: child.stdout }).on('line', (line) => {
      try {
        const msg = JSON.parse(line) as { ready?: boolean };
        if (msg.ready) resolve(msg as never);
      } catch {
        // not ours
      }
    });
  });
  return { child, ...ready };
}

/** The sync's submissions, read back from its queue a page at a time (oldest first). */
async function* readSubmissions(
  queue: Queue<SubmissionJobData>,
  limit: number,
): AsyncGenerator<RegistrySubmission[]> {
  const page = 2000;
  for (let start = 0; start < limit; start += page) {
    const jobs = await queue.getJobs(['waiting'], start, Math.min(start + page, limit) - 1, true);
    if (jobs.length === 0) return;
    yield jobs.map((j) => j.data.submission);
  }
}

/**
 * Enqueue path vs bare addBulk on the same submissions, page by page in alternation (bare
 * addBulk of a page with fresh job ids, then the sync's enqueue path on the same page), so
 * both see the same machine load. Returns both rates in submissions (jobs) per second.
 */
async function measureEnqueueVsCeiling(
  source: Queue<SubmissionJobData>,
  bare: Queue<SubmissionJobData>,
  replay: Queue<SubmissionJobData>,
  redis: Redis,
  prefix: string,
  limit: number,
): Promise<{ ceiling: number; enqueue: number; count: number }> {
  const enqueuer = createSubmissionEnqueuer({
    queue: replay,
    redis,
    state: openVisitState(redis, prefix, 'bench-replay'),
    // As in the sync it replays: the centre's first sync, no visit state yet.
    stateEmpty: true,
    centreId: 'bench-replay',
    pseudonymSecret: 'unused-for-single-provenance-entries',
    runId: 'bench',
    batchSize: BATCH,
  });
  let bareMs = 0;
  let pathMs = 0;
  let count = 0;
  let pageNo = 0;
  for await (const page of readSubmissions(source, limit)) {
    const ids = page.map(
      () => `${randomBytes(16).toString('hex')}-${randomBytes(8).toString('hex')}`,
    );
    // The sync hands the enqueuer each visit's source ids (found while mapping); so does this.
    const sources = page.map((s) => ({
      patientId: s.provenance.find((r) => r.resourceType === 'Patient')?.id ?? '',
      encounterId: s.provenance.find((r) => r.resourceType === 'Encounter')?.id ?? '',
    }));
    const runBare = async () => {
      const started = performance.now();
      for (let i = 0; i < page.length; i += BATCH) {
        await bare.addBulk(
          page.slice(i, i + BATCH).map((submission, k) => ({
            name: submission.kind,
            data: { runId: 'bench', submission },
            opts: { jobId: ids[i + k]! },
          })),
        );
      }
      bareMs += performance.now() - started;
    };
    const runPath = async () => {
      const started = performance.now();
      for (const [i, submission] of page.entries()) await enqueuer.add(submission, sources[i]);
      await enqueuer.flush();
      pathMs += performance.now() - started;
    };
    // Alternate which goes first, so neither always pays for the page read before it.
    if (pageNo++ % 2 === 0) {
      await runBare();
      await runPath();
    } else {
      await runPath();
      await runBare();
    }
    count += page.length;
  }
  return { ceiling: count / (bareMs / 1000), enqueue: count / (pathMs / 1000), count };
}

async function main(): Promise<void> {
  const resources = Number(args.resources);
  const mode = args.mode === 'search' ? 'search' : 'bulk';
  if (!Number.isInteger(resources) || resources < 100)
    throw new Error('--resources must be >= 100');
  const keysDir = await mkdtemp(join(tmpdir(), 'lhn-bench-'));
  const ehr = await startEhrChild({ resources, seed: Number(args.seed), keysDir, mode });
  const prefix = `lhn-bench-${randomUUID()}`;
  const config = parseServiceConfig({
    pseudonymSecret: randomBytes(24).toString('hex'),
    mappingsDir: join(process.cwd(), 'mappings'),
    redis: { prefix },
    log: { level: 'silent' },
  });
  const centre = await loadCentreFile(ehr.centreFile);
  const runtime = await createRuntime(config, {
    centres: [centre],
    role: 'worker',
    logger: silentLogger,
    metrics: createMetrics(),
  });
  let bareQueue: Queue<SubmissionJobData> | undefined;
  let replayQueue: Queue<SubmissionJobData> | undefined;
  try {
    const prepare = createCentreServices({
      config,
      redis: runtime.redis,
      prefix,
      logger: silentLogger,
    });
    const services = await prepare(centre);
    const timings: SyncTimings = { mapMs: 0, enqueueMs: 0 };
    const started = performance.now();
    const record = await syncCentre(
      {
        redis: runtime.redis,
        prefix,
        submissionsQueue: runtime.queues.submissions,
        runStore: runtime.runStore,
        pseudonymSecret: config.pseudonymSecret,
        ...services,
      },
      {
        centre,
        mode: 'full',
        reason: 'manual',
        enqueueBatchSize: BATCH,
        patientConcurrency: 8,
        timings,
      },
    );
    const seconds = (performance.now() - started) / 1000;
    const peakRssMb = process.resourceUsage().maxRSS / 1024;
    const { pulled, enqueued } = record.counts;
    if (enqueued !== ehr.visits)
      process.stderr.write(
        `warning: enqueued ${enqueued} submissions, the generator planned ${ehr.visits} visits\n`,
      );

    // Enqueue vs ceiling on the sync's own submissions (up to 100,000), away from pulling and
    // mapping: bare addBulk and the enqueue path, page by page in alternation.
    const limit = Math.min(enqueued, 100_000);
    const source = runtime.queues.submissions;
    bareQueue = new Queue<SubmissionJobData>('bench-ceiling', {
      connection: runtime.redis,
      prefix,
    });
    replayQueue = new Queue<SubmissionJobData>('bench-replay', {
      connection: runtime.redis,
      prefix,
    });
    const measured = await measureEnqueueVsCeiling(
      source,
      bareQueue,
      replayQueue,
      runtime.redis,
      prefix,
      limit,
    );
    const { ceiling, enqueue: replayRate } = measured;
    const stageRate = enqueued / (timings.enqueueMs / 1000);

    const round = (n: number) => Math.round(n).toLocaleString('en-US');
    process.stdout.write(
      `bench sync: ${round(pulled / seconds)} resources/s; ${round(replayRate)} submissions/s enqueued; peak RSS ${Math.round(peakRssMb)} MB; addBulk ceiling ${round(ceiling)} jobs/s\n`,
    );
    process.stdout.write(
      `  ${mode} mode, heap bound ${heapBound() ? `${heapBound()} MB` : 'none'}, ${round(pulled)} resources (${round(ehr.patients)} patients) in ${seconds.toFixed(1)} s; ` +
        `${round(enqueued)} submissions; end to end ${round(enqueued / seconds)} submissions/s; ` +
        `map ${(timings.mapMs / 1000).toFixed(1)} s, enqueue ${(timings.enqueueMs / 1000).toFixed(1)} s; ` +
        `enqueue ${Math.round((100 * replayRate) / ceiling)}% of the ceiling (${round(measured.count)} submissions, pages alternated); ` +
        `inside the sync the enqueue stage ran at ${round(stageRate)}/s\n`,
    );
  } finally {
    for (const q of [bareQueue, replayQueue]) {
      await q?.obliterate({ force: true }).catch(() => undefined);
      await q?.close();
    }
    await runtime.queues.submissions.obliterate({ force: true }).catch(() => undefined);
    await runtime.queues.sync.obliterate({ force: true }).catch(() => undefined);
    let cursor = '0';
    do {
      const [next, keys] = await runtime.redis.scan(cursor, 'MATCH', `${prefix}:*`, 'COUNT', 1000);
      cursor = next;
      if (keys.length > 0) await runtime.redis.del(...keys);
    } while (cursor !== '0');
    await runtime.close();
    ehr.child.kill('SIGTERM');
    await rm(keysDir, { recursive: true, force: true });
  }
}

/**
 * The sync runs in a process with a bounded V8 heap, as a production worker should
 * (`NODE_OPTIONS=--max-old-space-size=...`): without a bound V8 lets garbage pile up to
 * several times the live set before collecting, which says nothing about what a sync needs.
 * `--heap-mb 0` runs without a bound.
 */
function heapBound(): string | undefined {
  const fromFlags = [...process.execArgv, ...(process.env.NODE_OPTIONS ?? '').split(/\s+/)].find(
    (a) => a.startsWith('--max-old-space-size='),
  );
  return fromFlags?.split('=')[1];
}

if (args['serve-ehr']) await serveEhr();
else if (heapBound() === undefined && args['heap-mb'] !== '0') {
  const child = spawn(
    process.execPath,
    [
      `--max-old-space-size=${Number(args['heap-mb'])}`,
      '--import',
      'tsx',
      fileURLToPath(import.meta.url),
      ...process.argv.slice(2),
    ],
    { stdio: 'inherit' },
  );
  process.exitCode = await new Promise<number>((resolve) =>
    child.on('exit', (code) => resolve(code ?? 1)),
  );
} else await main();
