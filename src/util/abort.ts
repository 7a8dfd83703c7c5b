// Linking an outer AbortSignal to an inner AbortController. A listener added to a signal
// that has already aborted never fires, so a plain addEventListener misses an abort that
// came while the caller was awaiting something else (a token, a lock, a limiter slot):
// the inner work would then run to its end, and a shutting-down worker would wait for it.

/**
 * Aborts `controller` with the outer signal's reason when `outer` aborts, at once when it
 * already has. Returns the function that stops following (call it when the work is done).
 */
export function followAbort(
  outer: AbortSignal | undefined,
  controller: AbortController,
): () => void {
  if (!outer) return () => undefined;
  if (outer.aborted) {
    controller.abort(outer.reason);
    return () => undefined;
  }
  const onAbort = () => controller.abort(outer.reason);
  outer.addEventListener('abort', onAbort, { once: true });
  return () => outer.removeEventListener('abort', onAbort);
}

/** The abort reason of sync jobs a worker hands back when it shuts down (SIGTERM). */
export const WORKER_SHUTDOWN_REASON = 'worker shutting down';

/**
 * Signals that stop `serve` and `worker` cleanly. SIGHUP too: a closed terminal or a
 * supervisor's reload would otherwise kill the process at once, mid-delivery (there is no
 * configuration to reload in place; restart to pick up changes).
 */
export const STOP_SIGNALS: readonly NodeJS.Signals[] = ['SIGTERM', 'SIGINT', 'SIGHUP'];
