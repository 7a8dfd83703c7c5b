// A centre's status as a data manager reads it: last run, last success, next scheduled run,
// counts, failures, open quality findings and alerts, with one health word the dashboard
// turns into a colour. Built from the run store, the sync queue's job schedulers, the failed
// submissions and the alert monitor; nothing here writes.
import type { Queue } from 'bullmq';
import type { CentreConfig } from '../../config/centre.js';
import type { SyncJobData } from '../../../queues/sync.js';
import type { RunCounts, RunRecord, RunStore } from '../../sync/run-store.js';
import type { Alert } from '../../alerts/evaluate-alerts.js';

/**
 * `ok`: last run succeeded; `warning`: the last run failed or submissions failed;
 * `alert`: an alert is raised; `never`: no run has finished yet.
 */
export type CentreHealth = 'ok' | 'warning' | 'alert' | 'never';

/** A short view of one run. */
export interface RunSummary {
  runId: string;
  status: RunRecord['status'];
  mode: RunRecord['mode'];
  reason: RunRecord['reason'];
  startedAt: string;
  endedAt?: string;
  phase?: string;
  counts: RunCounts;
  /** The last error of a failed run (step and message; no PHI). */
  lastError?: { step: string; message: string };
}

/** What the centres list and detail return for one centre. */
export interface CentreStatus {
  id: string;
  name: string;
  timeZone: string;
  schedule: { cron?: string; mode: 'full' | 'incremental' };
  pullMode: 'search' | 'bulk';
  health: CentreHealth;
  /** True while a run is queued or running. */
  syncing: boolean;
  lastRun?: RunSummary;
  lastSuccess?: RunSummary;
  /** ISO time of the next scheduled run, from the centre's job scheduler. */
  nextRunAt?: string;
  /** Failed runs since the last success (most recent first, the last 20 runs looked at, so 20 means "20 or more"). */
  failedRunsInARow: number;
  failedSubmissions: number;
  /** Findings in the centre's current quality report, all kinds together. */
  qualityFindings: number;
  /** Unmapped local codes in the quality report (distinct codes). */
  unmappedCodes: number;
  alerts: Alert[];
}

/** Runs read per centre for a status (the dashboard polls every few seconds). */
const RECENT_RUNS = 20;

/** Summarises a run record for the status views. */
export function summariseRun(run: RunRecord): RunSummary {
  const lastError = run.errors.at(-1);
  return {
    runId: run.runId,
    status: run.status,
    mode: run.mode,
    reason: run.reason,
    startedAt: run.startedAt,
    ...(run.endedAt ? { endedAt: run.endedAt } : {}),
    ...(run.phase ? { phase: run.phase } : {}),
    counts: run.counts,
    ...(lastError ? { lastError } : {}),
  };
}

/** Next scheduled run per centre id, from the sync queue's job schedulers. */
export async function readNextRuns(syncQueue: Queue<SyncJobData>): Promise<Map<string, number>> {
  const next = new Map<string, number>();
  const schedulers = await syncQueue.getJobSchedulers(0, -1, true);
  for (const scheduler of schedulers) {
    const centreId = (scheduler.template?.data as Partial<SyncJobData> | undefined)?.centreId;
    if (!centreId || scheduler.next === undefined) continue;
    const previous = next.get(centreId);
    if (previous === undefined || scheduler.next < previous) next.set(centreId, scheduler.next);
  }
  return next;
}

/** What building statuses needs. */
export interface CentreStatusDeps {
  runStore: Pick<RunStore, 'list' | 'latestSuccess' | 'getQualityReport'>;
  syncQueue: Queue<SyncJobData>;
  failedByCentre: () => Promise<Map<string, number>>;
  alerts: () => Promise<Alert[]>;
}

/** Builds the status of each given centre (in the given order). */
export async function describeCentres(
  centres: readonly CentreConfig[],
  deps: CentreStatusDeps,
): Promise<CentreStatus[]> {
  const [nextRuns, failed, alerts] = await Promise.all([
    readNextRuns(deps.syncQueue),
    deps.failedByCentre(),
    deps.alerts(),
  ]);
  return Promise.all(
    centres.map(async (centre) => {
      const [recent, lastSuccess, quality] = await Promise.all([
        deps.runStore.list({ centreId: centre.id, limit: RECENT_RUNS }),
        deps.runStore.latestSuccess(centre.id),
        deps.runStore.getQualityReport(centre.id),
      ]);
      const lastRun = recent[0];
      let failedRunsInARow = 0;
      for (const run of recent) {
        if (run.status === 'succeeded') break;
        if (run.status === 'failed') failedRunsInARow += 1;
      }
      const centreAlerts = alerts.filter((a) => a.centreId === centre.id);
      const failedSubmissions = failed.get(centre.id) ?? 0;
      const lastFinished = recent.find((r) => r.status === 'succeeded' || r.status === 'failed');
      const health: CentreHealth =
        centreAlerts.length > 0
          ? 'alert'
          : !lastFinished
            ? 'never'
            : lastFinished.status === 'failed' || failedSubmissions > 0
              ? 'warning'
              : 'ok';
      const next = nextRuns.get(centre.id);
      return {
        id: centre.id,
        name: centre.name,
        timeZone: centre.timeZone,
        schedule: {
          ...(centre.schedule.cron ? { cron: centre.schedule.cron } : {}),
          mode: centre.schedule.mode,
        },
        pullMode: centre.pull.mode,
        health,
        syncing: lastRun?.status === 'queued' || lastRun?.status === 'running',
        ...(lastRun ? { lastRun: summariseRun(lastRun) } : {}),
        ...(lastSuccess ? { lastSuccess: summariseRun(lastSuccess) } : {}),
        ...(next !== undefined ? { nextRunAt: new Date(next).toISOString() } : {}),
        failedRunsInARow,
        failedSubmissions,
        qualityFindings: quality
          ? Object.values(quality.findingsByKind).reduce((sum, n) => sum + n, 0)
          : 0,
        unmappedCodes: quality?.unmappedCodes.length ?? 0,
        alerts: centreAlerts,
      };
    }),
  );
}
