// Which cohort patients a centre's syncs have pulled in full, by pseudonymous patient key (the
// HMAC the submissions carry, never a source id), in the Redis set
// `${prefix}:state:${centreId}:patients`. An incremental sync pulls the patients whose data
// changed since the watermark; a patient who joined the cohort since (a Group member added,
// a roster line added) or whose last pull was refused has nothing to show there, so an
// incremental sync also pulls in full every cohort member that is not in this set.
import type { Redis } from 'ioredis';
import type { VisitState } from './visit-state.js';

/** Redis key of a centre's set of patients pulled in full. */
export function cohortMembersKey(prefix: string, centreId: string): string {
  return `${prefix}:state:${centreId}:patients`;
}

/** Keys asked of Redis at once. */
const CHUNK = 1000;

export interface CohortMembers {
  /** The keys, of those given, that are not in the set (in their order). */
  missing(keys: readonly string[]): Promise<string[]>;
  /**
   * Adds `pulled` (patients pulled, mapped and enqueued in full) and removes `redo` (patients
   * whose pull or mapping failed: the next sync pulls them in full), in one transaction;
   * `replace`: the set becomes exactly that (a full sync of the whole cohort).
   */
  record(pulled: readonly string[], redo: readonly string[], replace?: boolean): Promise<void>;
  /**
   * A centre synced before this set existed has none: fills it once with the patients the
   * visit state has sent visits for (patients without any are pulled again once). Returns how
   * many were added; does nothing when the set is not empty.
   */
  seedFrom(state: VisitState, patientKey: (patientId: string) => string): Promise<number>;
}

export function openCohortMembers(redis: Redis, prefix: string, centreId: string): CohortMembers {
  const key = cohortMembersKey(prefix, centreId);
  const add = async (keys: readonly string[]): Promise<void> => {
    for (let i = 0; i < keys.length; i += CHUNK) await redis.sadd(key, ...keys.slice(i, i + CHUNK));
  };
  return {
    async missing(keys) {
      const out: string[] = [];
      for (let i = 0; i < keys.length; i += CHUNK) {
        const chunk = keys.slice(i, i + CHUNK);
        const present = await redis.smismember(key, ...chunk);
        for (const [j, k] of chunk.entries()) if (present[j] !== 1) out.push(k);
      }
      return out;
    },
    async record(pulled, redo, replace = false) {
      const removed = new Set(redo);
      const kept = pulled.filter((k) => !removed.has(k));
      if (kept.length === 0 && removed.size === 0 && !replace) return;
      const tx = redis.multi();
      if (replace) tx.del(key);
      for (let i = 0; i < kept.length; i += CHUNK) tx.sadd(key, ...kept.slice(i, i + CHUNK));
      const gone = [...removed];
      for (let i = 0; i < gone.length; i += CHUNK) tx.srem(key, ...gone.slice(i, i + CHUNK));
      const results = await tx.exec();
      const failed = results?.find(([err]) => err !== null)?.[0];
      if (failed) throw failed;
    },
    async seedFrom(state, patientKey) {
      if ((await redis.scard(key)) > 0) return 0;
      // Visits name their patient many times: one key (an HMAC) per patient.
      const patients = new Set<string>();
      for await (const chunk of state.scan()) for (const [, e] of chunk) if (e.p) patients.add(e.p);
      await add([...patients].map(patientKey));
      return patients.size;
    },
  };
}
