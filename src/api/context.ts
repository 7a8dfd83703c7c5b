// What the routers share: the services createApp builds from its deps, passed to each
// router factory (no globals), plus the id schemas used in params and queries.
import type { Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import { z } from 'zod';
import type { CentreConfig } from '../config/centre.js';
import type { ServiceConfig } from '../config/service.js';
import type { SyncJobData } from '../../queues/sync.js';
import type { SubmissionJobData } from '../../queues/submissions.js';
import type { RunStore } from '../sync/run-store.js';
import type { Logger } from '../util/logger.js';
import type { Metrics } from '../util/metrics.js';
import type { AlertMonitor } from '../alerts/alert-monitor.js';
import type { CheckReport } from '../onboarding/check.js';
import type { FailedSubmissionStore } from './services/failed-submissions.js';
import { notFoundProblem } from './problem.js';

/** Runs the onboarding check of one centre and returns its report (the onboarding module's runCheck). */
export type CheckCentre = (centre: CentreConfig) => Promise<CheckReport>;

/** Services available to every router. */
export interface ApiContext {
  config: ServiceConfig;
  redis: Redis;
  prefix: string;
  queues: { sync: Queue<SyncJobData>; submissions: Queue<SubmissionJobData> };
  runStore: RunStore;
  centres: ReadonlyMap<string, CentreConfig>;
  metrics: Metrics;
  logger: Logger;
  alerts: AlertMonitor;
  failedSubmissions: FailedSubmissionStore;
  checkCentre?: CheckCentre;
}

/** A centre id as centre files allow it. */
export const centreIdSchema = z
  .string()
  .regex(/^[a-z0-9][a-z0-9-]{1,62}$/, 'expected a centre id (lower-case letters, digits, dashes)');

/** A run id (UUIDs from the run store; other safe tokens accepted). */
export const runIdSchema = z.string().regex(/^[A-Za-z0-9_-]{1,128}$/, 'expected a run id');

/**
 * A BullMQ job id of a submission: its submission id (32 hex of the visit key, a dash, 16 hex
 * of the content hash; registry/keys.ts submissionId), and `-r<seq>` for a version enqueued
 * again after a revert (sync/enqueue.ts revertJobId). Nothing else, so no id can name one of
 * BullMQ's own keys (`meta`, `events`...).
 */
export const jobIdSchema = z
  .string()
  .regex(
    /^[0-9a-f]{32}-[0-9a-f]{16}(-r[0-9]{1,15})?$/,
    'expected a submission id (32 hex digits, a dash, 16 hex digits)',
  );

/** A `limit` query parameter. */
export const limitSchema = z.coerce.number().int().min(1).max(1000);

/** An `offset` query parameter: how many items to skip (paging with `limit`). */
export const offsetSchema = z.coerce.number().int().min(0).max(10_000_000);

/** A `true` / `false` query parameter. */
export const booleanQuerySchema = z
  .enum(['true', 'false'], { message: 'expected true or false' })
  .transform((v) => v === 'true');

/** The configured centre with this id, or a 404 problem. */
export function requireCentre(ctx: ApiContext, id: string): CentreConfig {
  const centre = ctx.centres.get(id);
  if (!centre) throw notFoundProblem(`no centre with id "${id}" is configured`);
  return centre;
}
