// Who retried or resolved which failed submissions, and when: a capped Redis list (newest
// first) next to the resolved records. Entries name the API key (its configured name and
// role, never the key) and carry job ids, centre ids and counts only: no clinical content,
// and not a resolve's note (free text that could name a patient).
import type { Redis } from 'ioredis';
import type { ApiCaller } from '../auth.js';
import { readNewestFirst } from '../../sync/submission-admin.js';

/** Entries kept (newest first); older ones are trimmed. */
const KEEP_AUDIT = 10_000;

/** One action on failed submissions. */
export interface SubmissionAuditEntry {
  action: 'retry' | 'retry-all' | 'resolve';
  /** The job ids acted on (retry, resolve). */
  jobIds?: string[];
  /** How many were sent back (retry-all). */
  count?: number;
  /** The centre of the job, or retry-all's centre filter. */
  centreId?: string;
  by: ApiCaller;
  at: string;
}

function auditKey(prefix: string): string {
  return `${prefix}:submissions-audit`;
}

/** Records an action (stamped now), keeping the newest `keep` entries. */
export async function recordSubmissionAudit(
  redis: Redis,
  prefix: string,
  entry: Omit<SubmissionAuditEntry, 'at' | 'by'> & { by: ApiCaller },
  keep = KEEP_AUDIT,
): Promise<SubmissionAuditEntry> {
  const record: SubmissionAuditEntry = {
    action: entry.action,
    ...(entry.jobIds ? { jobIds: entry.jobIds } : {}),
    ...(entry.count !== undefined ? { count: entry.count } : {}),
    ...(entry.centreId ? { centreId: entry.centreId } : {}),
    by: { name: entry.by.name, role: entry.by.role },
    at: new Date().toISOString(),
  };
  await redis
    .multi()
    .lpush(auditKey(prefix), JSON.stringify(record))
    .ltrim(auditKey(prefix), 0, keep - 1)
    .exec();
  return record;
}

/** Audit entries, newest first. */
export function listSubmissionAudit(
  redis: Redis,
  prefix: string,
  options: { offset?: number; limit?: number } = {},
): Promise<SubmissionAuditEntry[]> {
  return readNewestFirst<SubmissionAuditEntry>(redis, auditKey(prefix), options);
}
