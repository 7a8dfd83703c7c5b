// The alert rules, pure: given what the run store knows about a centre and the thresholds
// that apply to it, which alerts are raised now. A centre is "stale" when its last
// successful sync (or, if it never had one, the time lhn-bridge first knew it) is older than
// its threshold, and "failing" when its last N finished sync jobs all failed. A job is one
// sync (one click of Sync now, one scheduled tick); its attempts (a failed sync is retried,
// each attempt has its own run record with the job's id) count once, by the latest one.
import type { CentreConfig } from '../config/centre.js';
import type { ServiceConfig } from '../config/service.js';
import type { RunRecord } from '../sync/run-store.js';

export const ALERT_KINDS = ['stale', 'failing'] as const;
/** Why a centre is alerting. */
export type AlertKind = (typeof ALERT_KINDS)[number];

/** One raised alert. */
export interface Alert {
  centreId: string;
  kind: AlertKind;
  /** One line a data manager can act on; ids and times only. */
  message: string;
  /** ISO time the alert was first raised (kept while it stays raised). */
  raisedAt: string;
  /** ISO time of the last successful sync, if any. */
  lastSuccessAt?: string;
  /** The threshold that applied (hours for stale, runs for failing). */
  threshold: number;
  /** For failing: the runs that failed in a row (each job's latest attempt), newest first. */
  failedRunIds?: string[];
}

/** Thresholds that apply to one centre: the centre file's, else the service's. */
export interface AlertThresholds {
  staleAfterHours: number;
  failuresInARow: number;
}

/** The thresholds for a centre (centre override, else service config). */
export function resolveThresholds(
  centre: Pick<CentreConfig, 'alerts'>,
  defaults: ServiceConfig['alerts'],
): AlertThresholds {
  return {
    staleAfterHours: centre.alerts.staleAfterHours ?? defaults.staleAfterHours,
    failuresInARow: centre.alerts.failuresInARow ?? defaults.failuresInARow,
  };
}

/** What the rules look at for one centre. */
export interface CentreAlertInput {
  centreId: string;
  thresholds: AlertThresholds;
  latestSuccess?: Pick<RunRecord, 'endedAt' | 'startedAt'>;
  /** ISO time lhn-bridge first knew this centre (the clock for a centre that never synced). */
  firstSeenAt: string;
  /**
   * Recent runs, most recently started first (enough to hold `failuresInARow` jobs with all
   * their attempts, if any). Runs of one job (same `jobId`) count once; a run without a job
   * id counts by itself.
   */
  recentRuns: Pick<RunRecord, 'runId' | 'status' | 'errors' | 'jobId'>[];
  now: Date;
}

/** Evaluates the rules for one centre; returns the alerts that should be raised now. */
export function evaluateCentreAlerts(input: CentreAlertInput): Alert[] {
  const alerts: Alert[] = [];
  const nowIso = input.now.toISOString();
  const lastSuccessAt = input.latestSuccess?.endedAt ?? input.latestSuccess?.startedAt;
  const since = lastSuccessAt ?? input.firstSeenAt;
  const ageHours = (input.now.getTime() - Date.parse(since)) / 3_600_000;
  if (ageHours > input.thresholds.staleAfterHours) {
    alerts.push({
      centreId: input.centreId,
      kind: 'stale',
      message: lastSuccessAt
        ? `no successful sync for ${Math.floor(ageHours)} h (threshold ${input.thresholds.staleAfterHours} h); last success ${lastSuccessAt}`
        : `no successful sync since lhn-bridge started watching this centre ${Math.floor(ageHours)} h ago (threshold ${input.thresholds.staleAfterHours} h)`,
      raisedAt: nowIso,
      ...(lastSuccessAt ? { lastSuccessAt } : {}),
      threshold: input.thresholds.staleAfterHours,
    });
  }
  // The latest finished attempt of each job, newest job first.
  const seenJobs = new Set<string>();
  const finished = input.recentRuns.filter((r) => {
    if (r.status !== 'succeeded' && r.status !== 'failed') return false;
    if (r.jobId === undefined) return true;
    if (seenJobs.has(r.jobId)) return false;
    seenJobs.add(r.jobId);
    return true;
  });
  const n = input.thresholds.failuresInARow;
  const lastN = finished.slice(0, n);
  if (lastN.length === n && lastN.every((r) => r.status === 'failed')) {
    const latest = lastN[0];
    const lastError = latest?.errors.at(-1);
    alerts.push({
      centreId: input.centreId,
      kind: 'failing',
      // The step and run id only: an alert goes to a webhook (often a third-party chat), and
      // a run's error message can quote what the EHR said. The dashboard shows the message.
      message:
        `the last ${n} sync${n === 1 ? '' : 's'} failed` +
        (lastError && latest
          ? `; latest error at ${lastError.step} in run ${latest.runId} (its message is on the dashboard)`
          : ''),
      raisedAt: nowIso,
      ...(lastSuccessAt ? { lastSuccessAt } : {}),
      threshold: n,
      failedRunIds: lastN.map((r) => r.runId),
    });
  }
  return alerts;
}
