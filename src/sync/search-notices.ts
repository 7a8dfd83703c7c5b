// Search warnings that say the EHR left data out (Epic 4119 "Additional data may be present",
// a suppressed or restricted result) become run-record warnings, so a data manager sees that
// the run's data was partial; the client only logs them. PHI-free: the message names the
// resource type searched, the issue's severity and code and its coded details, never its
// free text. One warning per distinct message per run.
import type { FhirClient } from '../fhir/client.js';
import { saysDataWithheld } from '../fhir/errors.js';
import type { Logger } from '../util/logger.js';
import type { RunStore } from './run-store.js';

/** The run-record step of these warnings. */
export const WITHHELD_STEP = 'pull';

/** Most distinct withheld-data warnings one run records. */
const MAX_DISTINCT = 20;

/**
 * Subscribes to the client's search notices for one run; `stop()` unsubscribes and waits for
 * the warnings to be written.
 */
export function recordWithheldData(
  client: Pick<FhirClient, 'onSearchNotice'>,
  runStore: Pick<RunStore, 'addWarnings'>,
  runId: string,
  log: Logger,
): { stop(): Promise<void> } {
  const seen = new Set<string>();
  let writes: Promise<unknown> = Promise.resolve();
  const unsubscribe = client.onSearchNotice?.(({ resourceType, issue }) => {
    if (!saysDataWithheld(issue)) return;
    const coded = issue.details ? ` (${issue.details.slice(0, 200)})` : '';
    const message =
      `the EHR warned that its ${resourceType} search results may not hold all data: ` +
      `${issue.severity} ${issue.code}${coded}; the visits built from it may be incomplete ` +
      "(the EHR's server log has the full OperationOutcome; on Epic, 4119 means the app's user lacks access to some data)";
    if (seen.has(message) || seen.size >= MAX_DISTINCT) return;
    seen.add(message);
    log.warn({ resourceType, severity: issue.severity, code: issue.code }, message);
    writes = writes
      .then(() => runStore.addWarnings(runId, [{ step: WITHHELD_STEP, message }]))
      .catch((err: unknown) =>
        log.warn({ err: (err as Error).message }, 'could not record a run warning'),
      );
  });
  return {
    async stop() {
      unsubscribe?.();
      await writes;
    },
  };
}
