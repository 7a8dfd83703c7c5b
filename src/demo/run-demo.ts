// The demo: lhn-bridge's whole job on an embedded default, in one process. It generates a
// synthetic IBD centre, serves it from the sandbox EHR, connects to it the way centre IT
// would (a key pair whose public half the EHR fetches from our JWKS URL), runs the
// onboarding check and a full sync through the real API, queues and worker, delivers to the
// sandbox registry, and prints what the registry received. Never used in production paths.
import { randomBytes } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdir, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { generateCentre } from '../../fixtures/generator/index.js';
import { hashApiKey } from '../api/auth.js';
import { requestSync } from '../sync/request-sync.js';
import { parseServiceConfig } from '../config/service.js';
import { formatCheckReport, runCheck } from '../onboarding/check.js';
import { createRuntime } from '../runtime.js';
import { startSandboxEhr } from '../sandbox/ehr/index.js';
import { provisionSandboxCentre } from '../sandbox/ehr/provision.js';
import { startSandboxRegistry, type StoredVisit } from '../sandbox/registry/index.js';
import { startServer } from '../server.js';
import { createLogger } from '../util/logger.js';
import { startWorker } from '../worker.js';
import type { RunRecord } from '../sync/run-store.js';
import type { VisitSubmission } from '../registry/submission.js';
import { pseudonymKey } from '../registry/keys.js';
import type { ExpectedVisit } from '../../fixtures/generator/index.js';

export interface DemoOptions {
  redisUrl: string;
  /** Run once, print the summary and exit (for scripts). */
  once: boolean;
  patients: number;
  seed: number;
  /** Preferred API port; a busy port falls back to any free one. */
  port: number;
  /** Folder for the demo's keys and logs (recreated each run). */
  workDir: string;
  /** Where progress and the summary go. */
  out: NodeJS.WritableStream;
  /** Resolves when the interactive demo should stop (default: SIGINT / SIGTERM). */
  untilStopped?: Promise<void>;
}

/** What the registry holds at the end, as the summary reports it. */
export interface DemoSummary {
  patients: number;
  visits: number;
  retractions: number;
  delivered: number;
  findingsByKind: Record<string, number>;
  /** Share of visits with a PGA that were in remission. */
  remissionShare: number | null;
  /** Share of visits with no systemic steroid. */
  steroidFreeShare: number;
  /** Share of patients in remission at their latest visit with a PGA (the ICN measure). */
  patientsInRemissionShare: number | null;
  /** Share of patients steroid-free at their latest visit. */
  patientsSteroidFreeShare: number | null;
  /** Registry visits that match what the generator intended, field by field. */
  matchingTruth: number;
  dashboardUrl: string;
  apiKey: string;
}

function portIsFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once('error', () => resolve(false));
    server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)));
  });
}

async function choosePort(preferred: number): Promise<number> {
  if (preferred > 0 && (await portIsFree(preferred))) return preferred;
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

const pct = (share: number | null) => (share === null ? 'n/a' : `${(share * 100).toFixed(1)}%`);
const share = (num: number, den: number) => (den === 0 ? null : num / den);

/** Computes the registry-side figures from the visits the sandbox registry holds. */
export function summariseRegistry(
  visits: StoredVisit[],
): Pick<
  DemoSummary,
  | 'visits'
  | 'retractions'
  | 'remissionShare'
  | 'steroidFreeShare'
  | 'patientsInRemissionShare'
  | 'patientsSteroidFreeShare'
> {
  const live = visits.filter((v) => !v.retracted && v.current).map((v) => v.current!);
  const withPga = live.filter((v) => v.remission !== null);
  const latestByPatient = new Map<string, VisitSubmission>();
  const latestPgaByPatient = new Map<string, VisitSubmission>();
  for (const v of live) {
    const prev = latestByPatient.get(v.patientKey);
    if (!prev || prev.visit.date < v.visit.date) latestByPatient.set(v.patientKey, v);
    if (v.remission === null) continue;
    const prevPga = latestPgaByPatient.get(v.patientKey);
    if (!prevPga || prevPga.visit.date < v.visit.date) latestPgaByPatient.set(v.patientKey, v);
  }
  const latest = [...latestByPatient.values()];
  const latestPga = [...latestPgaByPatient.values()];
  return {
    visits: live.length,
    retractions: visits.filter((v) => v.retracted).length,
    remissionShare: share(withPga.filter((v) => v.remission).length, withPga.length),
    steroidFreeShare: share(live.filter((v) => !v.steroidUse).length, live.length) ?? 0,
    patientsInRemissionShare: share(latestPga.filter((v) => v.remission).length, latestPga.length),
    patientsSteroidFreeShare: share(latest.filter((v) => !v.steroidUse).length, latest.length),
  };
}

/** Runs the demo; resolves with the summary once it has been printed (and, unless once, stopped). */
export async function runDemo(options: DemoOptions): Promise<DemoSummary> {
  const { out } = options;
  const say = (line = '') => out.write(`${line}\n`);
  const step = (line: string) => say(`» ${line}`);
  const centreId = 'demo-childrens';
  const prefix = `lhn-demo-${randomBytes(4).toString('hex')}`;
  const keysDir = join(options.workDir, 'keys');
  await rm(options.workDir, { recursive: true, force: true });
  await mkdir(keysDir, { recursive: true, mode: 0o700 });
  const logFile = join(options.workDir, 'demo.log');
  const logStream = createWriteStream(logFile);
  const logger = createLogger({ level: 'info', destination: logStream, name: 'lhn-bridge-demo' });
  const cleanups: (() => Promise<unknown>)[] = [];
  const cleanup = async () => {
    for (const fn of cleanups.reverse()) await fn().catch(() => undefined);
    cleanups.length = 0;
  };

  try {
    step(`generating a synthetic IBD centre: ${options.patients} patients (seed ${options.seed})`);
    // Data of the last 18 months, so a first sync (730-day lookback) sees all of it.
    const day = (offsetDays: number) =>
      new Date(Date.now() + offsetDays * 86_400_000).toISOString().slice(0, 10);
    const generated = generateCentre({
      seed: options.seed,
      patients: options.patients,
      centreId,
      startDate: day(-540),
      endDate: day(-1),
    });
    const ehr = await startSandboxEhr({ resources: generated.resources(), logger });
    cleanups.push(() => ehr.close());
    step(
      `sandbox EHR (FHIR R4, SMART Backend Services) at ${ehr.baseUrl}: ${ehr.count()} resources`,
    );

    const registryToken = randomBytes(24).toString('hex');
    const registry = await startSandboxRegistry({ token: registryToken });
    cleanups.push(() => registry.close());
    step(`sandbox registry at ${registry.url}`);

    const port = await choosePort(options.port);
    const apiUrl = `http://127.0.0.1:${port}`;
    const jwksUrl = `${apiUrl}/.well-known/jwks.json`;
    step(`generating the centre's key pair; the EHR will fetch it from ${jwksUrl}`);
    const { centre, kid } = await provisionSandboxCentre(ehr, {
      keysDir,
      centreId,
      jwksUrl,
      centre: {
        name: 'Demo Children’s Hospital',
        timeZone: 'America/New_York',
        cohort: { group: generated.groupId },
        mapping: { pack: 'ibd', overrides: generated.centreOverrides },
        limits: { maxConcurrentRequests: 8, requestsPerSecond: 200 },
      },
    });
    say(`  client ${centre.auth.clientId}, key ${kid} (${centre.auth.alg})`);

    const apiKey = `demo-${randomBytes(16).toString('hex')}`;
    const config = parseServiceConfig({
      pseudonymSecret: randomBytes(32).toString('hex'),
      redis: { url: options.redisUrl, prefix },
      keysDir,
      registry: { url: registry.url, auth: { type: 'bearer', token: registryToken } },
      api: {
        host: '127.0.0.1',
        port,
        publicUrl: apiUrl,
        keys: [{ name: 'demo', role: 'admin', sha256: hashApiKey(apiKey) }],
      },
      submissions: { attempts: 5, backoffMs: 500 },
      log: { level: 'info' },
    });
    const api = await startServer(config, {
      centres: [centre],
      prefix,
      logger,
      alertIntervalMs: 5_000,
    });
    cleanups.push(() => api.close());
    const workerRuntime = await createRuntime(config, {
      role: 'worker',
      centres: [centre],
      prefix,
      logger,
    });
    cleanups.push(() => workerRuntime.close());
    const worker = await startWorker(workerRuntime, { submissionConcurrency: 16 });
    cleanups.push(() => worker.close());
    cleanups.push(async () => {
      const redis = new Redis(options.redisUrl, { maxRetriesPerRequest: 3 });
      try {
        let cursor = '0';
        do {
          const [next, keys] = await redis.scan(cursor, 'MATCH', `${prefix}:*`, 'COUNT', 1000);
          cursor = next;
          if (keys.length > 0) await redis.del(...keys);
        } while (cursor !== '0');
      } finally {
        redis.disconnect();
      }
    });
    step(
      `API and dashboard at ${apiUrl}; a worker is running (Redis ${options.redisUrl}, prefix ${prefix})`,
    );

    step('onboarding check');
    const report = await runCheck(centre, { logger });
    say(formatCheckReport(report).replace(/^/gm, '  '));
    if (!report.ok) throw new Error('the onboarding check failed; see above');

    step('full sync');
    const trigger = await requestSync(
      {
        redis: api.runtime.redis,
        prefix,
        syncQueue: api.runtime.queues.sync,
        runStore: api.runtime.runStore,
      },
      centre.id,
      'full',
    );
    if (trigger.status !== 'queued' || !trigger.runId) throw new Error('could not queue the sync');
    const run = await followRun(api.runtime.runStore, trigger.runId, say);
    if (run.status !== 'succeeded') {
      throw new Error(
        `the sync failed: ${run.errors.map((e) => `${e.step}: ${e.message}`).join('; ')}`,
      );
    }
    step('delivering submissions to the registry');
    await waitForDelivery(
      api.runtime.queues.submissions,
      () => registry.counts().accepted,
      run.counts.enqueued,
      say,
    );

    const visits = registry.visits();
    const registryFigures = summariseRegistry(visits);
    const expectedVisits = generated.truth.filter((t) => !t.retracted).length;
    const comparison = compareWithTruth(visits, generated.truth, config.pseudonymSecret, centre.id);
    const summary: DemoSummary = {
      patients: generated.patientIds.length,
      ...registryFigures,
      delivered: registry.counts().accepted,
      findingsByKind: run.findingsByKind,
      matchingTruth: comparison.matching,
      dashboardUrl: `${apiUrl}/`,
      apiKey,
    };
    say('');
    say('lhn-bridge demo: summary');
    say(`  patients                 ${summary.patients}`);
    say(
      `  visits in the registry   ${summary.visits} (generator intended ${expectedVisits}; ${comparison.matching} match it field by field)`,
    );
    const mismatches = Object.entries(comparison.mismatchesByField);
    if (comparison.missing > 0 || mismatches.length > 0)
      say(
        `  differences from intent  ${comparison.missing} missing; ${mismatches.map(([f, n]) => `${f} ${n}`).join(', ') || 'no field differences'}`,
      );
    say(`  retractions              ${summary.retractions}`);
    say(`  submissions delivered    ${summary.delivered}`);
    say(
      `  quality findings         ${
        Object.entries(summary.findingsByKind)
          .sort(([a], [b]) => a.localeCompare(b))
          .map(([k, n]) => `${k} ${n}`)
          .join(', ') || 'none'
      }`,
    );
    say(`  visits in remission      ${pct(summary.remissionShare)} (of visits with a PGA)`);
    say(`  visits steroid-free      ${pct(summary.steroidFreeShare)}`);
    say(
      `  patients in remission    ${pct(summary.patientsInRemissionShare)} (at their latest visit with a PGA)`,
    );
    say(
      `  patients steroid-free    ${pct(summary.patientsSteroidFreeShare)} (at their latest visit)`,
    );
    say(`  dashboard                ${summary.dashboardUrl} (API key: ${apiKey})`);
    say(`  logs                     ${logFile}`);
    if (!options.once) {
      say('');
      say('the demo keeps running for the dashboard; press Ctrl-C to stop.');
      await (options.untilStopped ?? waitForSignal());
    }
    return summary;
  } finally {
    await cleanup();
    logStream.end();
  }
}

function waitForSignal(): Promise<void> {
  return new Promise((resolve) => {
    process.once('SIGINT', () => resolve());
    process.once('SIGTERM', () => resolve());
  });
}

async function followRun(
  runStore: { get(runId: string): Promise<RunRecord | undefined> },
  runId: string,
  say: (line: string) => void,
): Promise<RunRecord> {
  let last = '';
  const deadline = Date.now() + 30 * 60_000;
  for (;;) {
    const run = await runStore.get(runId);
    if (run) {
      const c = run.counts;
      const line = `  ${run.status}${run.phase ? ` (${run.phase})` : ''}: pulled ${c.pulled}, visits ${c.visits}, enqueued ${c.enqueued}`;
      if (line !== last) say(line);
      last = line;
      if (run.status === 'succeeded' || run.status === 'failed') return run;
    }
    if (Date.now() > deadline) throw new Error('the sync did not finish within 30 minutes');
    await new Promise((r) => setTimeout(r, 500));
  }
}

async function waitForDelivery(
  queue: { getJobCounts(...states: string[]): Promise<Record<string, number>> },
  accepted: () => number,
  expected: number,
  say: (line: string) => void,
): Promise<void> {
  const deadline = Date.now() + 10 * 60_000;
  let last = -1;
  for (;;) {
    const counts = await queue.getJobCounts(
      'waiting',
      'active',
      'delayed',
      'prioritized',
      'failed',
    );
    const pending =
      (counts.waiting ?? 0) +
      (counts.active ?? 0) +
      (counts.delayed ?? 0) +
      (counts.prioritized ?? 0);
    const done = accepted();
    if (done !== last)
      say(`  delivered ${done}/${expected}${counts.failed ? `, failed ${counts.failed}` : ''}`);
    last = done;
    if (pending === 0) return;
    if (Date.now() > deadline) throw new Error('delivery did not finish within 10 minutes');
    await new Promise((r) => setTimeout(r, 300));
  }
}

/** How the registry's visits compare with what the generator intended. */
export interface TruthComparison {
  /** Truth visits held with every registry field as intended. */
  matching: number;
  /** Truth visits the registry does not hold (or holds retracted). */
  missing: number;
  /** Visits whose field differs from the truth, by field. */
  mismatchesByField: Record<string, number>;
}

/** Compares the registry's visits with the generator's truth, field by field. */
export function compareWithTruth(
  visits: StoredVisit[],
  truth: Iterable<ExpectedVisit>,
  secret: string,
  centreId: string,
): TruthComparison {
  // Registry visits are keyed by HMAC, so compute each truth visit's key the same way.
  const byKey = new Map(visits.map((v) => [v.visitKey, v]));
  const near = (a: number | null | undefined, b: number | null) =>
    (a ?? null) === b || (a != null && b !== null && Math.abs(a - b) <= 0.11);
  const result: TruthComparison = { matching: 0, missing: 0, mismatchesByField: {} };
  for (const t of truth) {
    if (t.retracted) continue;
    const stored = byKey.get(pseudonymKey(secret, centreId, 'Encounter', t.encounterId));
    const v = stored?.current;
    if (!v || stored.retracted) {
      result.missing += 1;
      continue;
    }
    const checks: [string, boolean][] = [
      ['visit.date', v.visit.date === t.visitDate],
      ['pga', v.pga === t.pga],
      ['remission', v.remission === t.remission],
      ['steroidUse', v.steroidUse === t.steroidUse],
      ['diagnosis', v.diagnosis === t.diagnosis],
      ['patient.sex', v.patient.sex === t.sex],
      ['height', near(v.height?.value, t.heightCm)],
      ['weight', near(v.weight?.value, t.weightKg)],
      ['bmi', near(v.bmi?.value, t.bmi)],
    ];
    const wrong = checks.filter(([, ok]) => !ok).map(([field]) => field);
    for (const field of wrong)
      result.mismatchesByField[field] = (result.mismatchesByField[field] ?? 0) + 1;
    if (wrong.length === 0) result.matching += 1;
  }
  return result;
}
