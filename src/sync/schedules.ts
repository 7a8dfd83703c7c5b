// Keeps one BullMQ job scheduler per centre in step with the centre files: a centre with a
// `schedule.cron` gets a scheduler (cron in the centre's time zone) that adds a sync job on
// each tick; a changed cron, time zone or mode updates it; a centre removed (or whose cron
// was removed) loses it. Run at worker start, every few minutes and after a Redis reconnect
// (a Redis that came back empty has lost them: src/worker.ts); idempotent, so many workers
// may run it.
// A worker that loaded no centre at all (an unmounted or mistyped centres folder) leaves
// every scheduler alone, with a warning: it must not stop the other centres' syncs.
import type { Queue } from 'bullmq';
import type { CentreConfig } from '../config/centre.js';
import type { SyncJobData } from '../../queues/sync.js';
import { silentLogger, type Logger } from '../util/logger.js';

/** Scheduler ids are `sync-<centreId>`; nothing else in the sync queue uses this prefix. */
export const SCHEDULER_PREFIX = 'sync-';

export function schedulerId(centreId: string): string {
  return `${SCHEDULER_PREFIX}${centreId}`;
}

export interface ScheduleChanges {
  added: string[];
  updated: string[];
  removed: string[];
  unchanged: string[];
}

/** Makes the sync queue's schedulers match the centres; returns centre ids by change. */
export async function syncCentreSchedules(
  queue: Queue<SyncJobData>,
  centres: Iterable<CentreConfig>,
  options: { logger?: Logger } = {},
): Promise<ScheduleChanges> {
  const logger = options.logger ?? silentLogger;
  const list = [...centres];
  const changes: ScheduleChanges = { added: [], updated: [], removed: [], unchanged: [] };
  const existing = new Map<
    string,
    { pattern?: string | null; tz?: string | null; mode?: string }
  >();
  const all = await queue.getJobSchedulers(0, -1);
  for (const s of all) {
    if (!s.key.startsWith(SCHEDULER_PREFIX)) continue;
    const mode = s.template?.data?.mode;
    existing.set(s.key, {
      pattern: s.pattern ?? null,
      tz: s.tz ?? null,
      ...(mode ? { mode } : {}),
    });
  }

  if (list.length === 0) {
    const kept = [...existing.keys()].map((id) => id.slice(SCHEDULER_PREFIX.length)).sort();
    logger.warn(
      { schedules: kept.length },
      'no centres loaded (check LHN_CENTRES_DIR and that the folder is mounted): the sync schedules of other centres are left alone',
    );
    changes.unchanged.push(...kept);
    return changes;
  }

  const wanted = new Set<string>();
  for (const centre of list) {
    const cron = centre.schedule.cron;
    if (!cron) continue;
    const id = schedulerId(centre.id);
    wanted.add(id);
    const current = existing.get(id);
    if (
      current &&
      current.pattern === cron &&
      current.tz === centre.timeZone &&
      current.mode === centre.schedule.mode
    ) {
      changes.unchanged.push(centre.id);
      continue;
    }
    await queue.upsertJobScheduler(
      id,
      { pattern: cron, tz: centre.timeZone },
      {
        name: 'sync',
        data: { centreId: centre.id, mode: centre.schedule.mode, reason: 'schedule' },
      },
    );
    (current ? changes.updated : changes.added).push(centre.id);
  }

  for (const id of existing.keys()) {
    if (wanted.has(id)) continue;
    const centreId = id.slice(SCHEDULER_PREFIX.length);
    logger.warn(
      { centreId },
      'removed the sync schedule of a centre this worker has no centre file (or no schedule.cron) for',
    );
    await queue.removeJobScheduler(id);
    changes.removed.push(centreId);
  }
  return changes;
}
