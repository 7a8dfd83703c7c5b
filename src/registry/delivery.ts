// Delivery of one submission to the registry's ingest API (docs/registry-contract.md).
// The outcome decides what the queue does: accepted or duplicate -> done; the registry
// rejecting the submission itself (4xx validation) -> RegistryRejectedError, a BullMQ
// UnrecoverableError, so the job fails at once and stays failed for a person; anything that
// may pass later (5xx, 429, timeouts, connection errors, auth or URL problems an operator
// can fix) -> RegistryUnavailableError, retried with backoff.
import { UnrecoverableError } from 'bullmq';
import { hasUserInfo, isHeaderToken, type ServiceConfig } from '../config/service.js';
import type { RegistrySubmission } from './submission.js';

/**
 * An incarnation id of the bridge's Redis state: 16 lowercase hex digits (made by
 * src/sync/secret-fingerprint.ts ensureIncarnation; docs/registry-contract.md, Idempotency).
 */
export const INCARNATION_PATTERN = /^[0-9a-f]{16}$/;

/** Longest registry reason kept in a job's failed reason. */
const MAX_REASON_CHARS = 500;
/** A cached OAuth2 token is refreshed this long before it expires. */
const TOKEN_EXPIRY_MARGIN_MS = 30_000;

export type RegistryConfig = ServiceConfig['registry'];

/** What the registry answered for a delivered submission. */
export interface DeliveryOutcome {
  /** `accepted`: stored now; `duplicate`: the registry already had this submission id. */
  status: 'accepted' | 'duplicate';
  httpStatus: number;
}

/**
 * How the failed reason of a submission the registry refused begins (a RegistryRejectedError's
 * message, which BullMQ keeps as the job's failedReason): src/sync/submission-admin.ts tells a
 * refusal from any other failure (a job that stalled too often, bad job data) by it.
 */
export const REGISTRY_REJECTED_REASON_PREFIX = 'registry rejected the submission (HTTP ';

/** The registry refused this submission; retrying the same content cannot help. */
export class RegistryRejectedError extends UnrecoverableError {
  constructor(
    readonly httpStatus: number,
    /** The registry's reason (problem detail / errors), shortened. */
    readonly reason: string,
  ) {
    super(`${REGISTRY_REJECTED_REASON_PREFIX}${httpStatus}): ${reason}`);
    this.name = 'UnrecoverableError';
  }
}

/** The registry could not take the submission now; the job retries with backoff. */
export class RegistryUnavailableError extends Error {
  constructor(
    message: string,
    /** HTTP status, when the registry answered at all. */
    readonly httpStatus?: number,
    /** The registry's Retry-After, in ms (capped at MAX_RETRY_AFTER_MS), when it sent one. */
    readonly retryAfterMs?: number,
    /**
     * True when the request may still be stored: it timed out, or the connection broke after
     * the body could have been sent (or a gateway gave up on the registry: GATEWAY_IN_DOUBT). The
     * delivery worker keeps the visit claimed until such a request can no longer land.
     */
    readonly outcomeUnknown = false,
  ) {
    super(message);
    this.name = 'RegistryUnavailableError';
  }
}

/** Longest Retry-After honoured (an absurd value must not park a submission for days). */
export const MAX_RETRY_AFTER_MS = 3_600_000;

/** Retry-After as seconds or an HTTP date, in ms from `now`, capped; undefined if absent/bad. */
export function parseRetryAfterMs(value: string | null, now = Date.now()): number | undefined {
  if (!value) return undefined;
  const trimmed = value.trim();
  let ms: number;
  if (/^\d+$/.test(trimmed)) ms = Number(trimmed) * 1000;
  else {
    const at = Date.parse(trimmed);
    if (!Number.isFinite(at)) return undefined;
    ms = at - now;
  }
  return Math.min(Math.max(ms, 0), MAX_RETRY_AFTER_MS);
}

/** TLS handshake failures: the certificate is refused before any byte of the request goes. */
const TLS_CODES = new Set([
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'CERT_HAS_EXPIRED',
  'CERT_NOT_YET_VALID',
  'CERT_REVOKED',
  'CERT_UNTRUSTED',
  'ERR_TLS_CERT_ALTNAME_INVALID',
  'ERR_SSL_WRONG_VERSION_NUMBER',
]);

/** Connection errors that come before any byte of the request is sent. */
const NOT_SENT_CODES = new Set([
  'ECONNREFUSED',
  'ENOTFOUND',
  'EAI_AGAIN',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'UND_ERR_CONNECT_TIMEOUT',
  ...TLS_CODES,
]);

/** The error codes of a failed fetch (its cause, or each of an AggregateError's). */
function errorCodes(err: Error): string[] {
  const cause = (err as { cause?: unknown }).cause as
    { code?: unknown; errors?: { code?: unknown }[] } | undefined;
  return [cause?.code, ...(cause?.errors ?? []).map((e) => e.code)].filter(
    (c): c is string => typeof c === 'string',
  );
}

/**
 * Whether fetch refused to make the request at all (a TypeError without a network cause): a
 * URL it will not send (user:password in it), a header value with a character HTTP does not
 * allow. Nothing left the process, so the outcome is known: not stored.
 */
function isLocalRequestError(err: Error): boolean {
  return err.name === 'TypeError' && (err as { cause?: unknown }).cause === undefined;
}

/**
 * Why a fetch failed, for the job's reason: undici's "fetch failed" says nothing, so the
 * error code is added, with what to do about a certificate the process does not trust. The
 * error's own message is never copied: fetch quotes the URL (user:password included) or the
 * header value (the token) it refused, and the reason is shown to every API viewer.
 */
function describeFetchError(err: Error, timeoutMs: number): string {
  if (err.name === 'TimeoutError') return `timed out after ${timeoutMs} ms`;
  if (err.name === 'AbortError') return 'the request was aborted';
  const codes = errorCodes(err).filter((c) => /^[A-Z0-9_]+$/.test(c));
  const tls = codes.find((c) => TLS_CODES.has(c));
  if (tls)
    return `the TLS certificate was refused (${tls}): if the registry uses a private CA, give its certificate to lhn-bridge with NODE_EXTRA_CA_CERTS; otherwise ask the registry to fix its certificate`;
  // The outbound proxy's own refusal (src/util/outbound.ts) is worded by us, with the proxy
  // shown without credentials: it says what the proxy answered and what to check.
  const cause = (err as { cause?: unknown }).cause;
  if (
    cause instanceof Error &&
    ['PROXY_REFUSED', 'PROXY_UNAVAILABLE'].includes(String((cause as { code?: unknown }).code))
  )
    return `${cause.message} (${String((cause as { code?: unknown }).code)})`;
  if (codes.length > 0) return `fetch failed (${codes.join(', ')})`;
  if (isLocalRequestError(err))
    return 'fetch refused to build the request (a URL with user:password in it, or a header value with a character HTTP does not allow)';
  return `${err.name === 'Error' || !/^\w+$/.test(err.name) ? 'an error' : err.name} without an error code`;
}

/** Why a response body could not be read whole, for the job's reason (never its message). */
function describeReadError(err: unknown, timeoutMs: number): string {
  const e = err instanceof Error ? err : new Error('body read failed');
  if (e.name === 'TimeoutError') return `timed out after ${timeoutMs} ms`;
  const codes = errorCodes(e).filter((c) => /^[A-Z0-9_]+$/.test(c));
  return codes.length > 0 ? `the connection broke (${codes.join(', ')})` : 'the connection broke';
}

/**
 * Whether a failed fetch may still have reached the registry: a timeout, a reset or a socket
 * error after connecting may leave the registry storing the body; a refused connection, a
 * failed DNS lookup or a request fetch would not build cannot. Unknown errors count as "may
 * have landed".
 */
function mayHaveLanded(err: Error): boolean {
  if (err.name === 'TimeoutError' || err.name === 'AbortError') return true;
  if (isLocalRequestError(err)) return false;
  const codes = errorCodes(err);
  return !(codes.length > 0 && codes.every((c) => NOT_SENT_CODES.has(c)));
}

/** The contract's acknowledgement statuses (docs/registry-contract.md, Responses). */
const ACK_STATUSES = new Set(['created', 'updated', 'retracted', 'duplicate']);

/** An acknowledgement body: its status, and the ids it names (when it echoes them). */
interface Ack {
  status: string;
  submissionId?: unknown;
  visitKey?: unknown;
}

/** The acknowledgement a body holds, or undefined when the body is not one. */
function ackOf(text: string): Ack | undefined {
  try {
    const body = JSON.parse(text) as Partial<Ack> | null;
    const status = body?.status;
    return typeof status === 'string' && ACK_STATUSES.has(status)
      ? { status, submissionId: body!.submissionId, visitKey: body!.visitKey }
      : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Which id an acknowledgement names that is not the one sent (a registry that echoes
 * `submissionId` or `visitKey` must echo this request's), or undefined when it matches or
 * names none.
 */
function mismatchedId(ack: Ack, submission: RegistrySubmission): string | undefined {
  if (ack.submissionId !== undefined && ack.submissionId !== submission.submissionId)
    return 'submissionId';
  if (ack.visitKey !== undefined && ack.visitKey !== submission.visitKey) return 'visitKey';
  return undefined;
}

/** What a body was, for a message (never its content: it may echo submission data). */
function describeBody(contentType: string | null, text: string): string {
  if (text.trim() === '') return 'an empty body';
  const type = contentType?.split(';')[0]?.trim();
  return `a body of ${text.length} characters, ${type ? `content type ${type}` : 'no content type'}`;
}

/** ` to <origin><path>` of a Location header (query left out), or '' without one. */
function describeLocation(location: string | null, base: string): string {
  if (!location) return '';
  try {
    const url = new URL(location, base);
    return ` to ${url.origin}${url.pathname}`;
  } catch {
    return '';
  }
}

/**
 * The `Idempotency-Key` of one delivery (docs/registry-contract.md, Idempotency): the id of
 * the queue job that delivers it, then `.` and the incarnation of the Redis state the job was
 * enqueued in (src/sync/secret-fingerprint.ts ensureIncarnation), the same on every attempt
 * of that job. The job id is the `submissionId` for a version's first job,
 * `<submissionId>-r<seq>` for a revert (a version enqueued again after a newer one,
 * src/sync/enqueue.ts revertJobId). A revert thus never repeats the key of the earlier
 * version's delivery, and after the Redis lost its state (jobs and sequence counters gone, so
 * job ids repeat) the new incarnation keeps every key new: a registry whose idempotency layer
 * replays the cached answer of a repeated key (the IETF Idempotency-Key draft, common
 * middleware) applies the delivery instead of answering it with an earlier `created`. A job
 * id of any other form (a job added by hand) falls back to the `submissionId`; a job without
 * a (valid) incarnation, enqueued before there was one, gets the job id alone.
 */
export function deliveryIdempotencyKey(
  submissionId: string,
  jobId: string | undefined,
  incarnation?: string,
): string {
  const base =
    jobId !== undefined &&
    jobId.startsWith(`${submissionId}-r`) &&
    /^[1-9]\d*$/.test(jobId.slice(submissionId.length + 2))
      ? jobId
      : submissionId;
  return incarnation !== undefined && INCARNATION_PATTERN.test(incarnation)
    ? `${base}.${incarnation}`
    : base;
}

/** How one delivery is sent. */
export interface DeliverOptions {
  /**
   * The request's `Idempotency-Key` (deliveryIdempotencyKey of the job); the `submissionId`
   * when absent.
   */
  idempotencyKey?: string;
}

/** Posts submissions to the registry ingest endpoint. */
export interface RegistryClient {
  deliver(submission: RegistrySubmission, options?: DeliverOptions): Promise<DeliveryOutcome>;
}

export interface RegistryClientOptions {
  config: RegistryConfig;
  fetch?: typeof fetch;
  now?: () => number;
}

/**
 * Gateway answers after which the registry behind the gateway may still store the request, so
 * the visit's claim is kept in doubt (queues/submissions.ts) and no newer version is posted
 * before this one can no longer land. Erring this way costs one claim lease (about a minute)
 * for that one visit; erring the other way lets an older version overwrite a newer one.
 * - 504 (nginx, ALB, most proxies), 524 (Cloudflare): the origin took the request and did not
 *   answer in time; it may commit after.
 * - 520 (Cloudflare): the origin sent an empty or invalid answer, or reset the connection,
 *   after the request was forwarded.
 * - 522 (Cloudflare): besides "no TCP handshake", also "the origin did not acknowledge the
 *   request within 90 s" once connected: the bytes may have arrived.
 * - 502: nginx and ALB answer it when the upstream closes or resets mid-request ("upstream
 *   prematurely closed connection"), which a registry crashing after its commit also gives.
 *   It is also the answer to "connection refused", where nothing was sent; the two cannot be
 *   told apart from here, and the claim lease is cheap, so it counts as in doubt.
 * - 598, 599 (informal, some proxies and load balancers): a network read timeout behind the
 *   gateway, so the request was on its way.
 * - 500, 503 unless the registry itself said so (isRegistryProblem): a gateway answers these
 *   too after it forwarded the request, when its own timeout ran out (Heroku's router: 503
 *   while the app goes on and commits), so an HTML or text 5xx may still be stored.
 * Not in doubt: a 500 or 503 with the registry's problem+json body (its own answer: not
 * stored, docs/registry-contract.md), 521 (origin refused the connection), 523 (origin
 * unreachable), 525/526 (TLS handshake with the origin failed).
 */
const GATEWAY_IN_DOUBT = new Set([502, 504, 520, 522, 524, 598, 599]);
/** In doubt unless the registry's own problem+json body says it answered itself. */
const IN_DOUBT_UNLESS_REGISTRY = new Set([500, 503]);

/**
 * Whether an error answer is the registry's own, as the contract has it send them: an
 * `application/problem+json` body holding a JSON object. A gateway's page (HTML, text, empty)
 * is not.
 */
function isRegistryProblem(contentType: string | null, text: string): boolean {
  if (contentType?.split(';')[0]?.trim().toLowerCase() !== 'application/problem+json') return false;
  try {
    const body = JSON.parse(text) as unknown;
    return typeof body === 'object' && body !== null && !Array.isArray(body);
  } catch {
    return false;
  }
}

/** Statuses that say "this submission is wrong", not "try again later". */
function isRejection(status: number): boolean {
  return status >= 400 && status < 500 && ![401, 403, 404, 408, 409, 425, 429].includes(status);
}

/**
 * Extracts a short, human-readable reason from a problem+json or JSON error body. A body that
 * is not JSON (an HTML error page, a proxy's text) is described (content type, length), not
 * quoted: it becomes the failed reason viewers see, and could echo anything.
 */
function reasonFromBody(text: string, contentType: string | null = null): string {
  let reason = describeBody(contentType, text);
  try {
    const body = JSON.parse(text) as Record<string, unknown>;
    const parts: string[] = [];
    for (const field of ['title', 'detail', 'error', 'error_description', 'message'])
      if (typeof body[field] === 'string') parts.push(body[field]);
    if (Array.isArray(body.errors))
      for (const e of body.errors.slice(0, 5) as unknown[]) {
        if (typeof e === 'string') parts.push(e);
        else if (typeof e === 'object' && e !== null) {
          const { path, message } = e as { path?: unknown; message?: unknown };
          parts.push(
            `${typeof path === 'string' ? path : ''}: ${typeof message === 'string' ? message : ''}`,
          );
        }
      }
    if (parts.length > 0) reason = parts.join('; ');
  } catch {
    // Not JSON: described above.
  }
  reason = reason.replace(/\s+/g, ' ').trim() || '(no reason given)';
  return reason.length > MAX_REASON_CHARS ? `${reason.slice(0, MAX_REASON_CHARS)}...` : reason;
}

/** The ingest endpoint for a registry base URL. */
export function submissionsEndpoint(baseUrl: string): string {
  return new URL('submissions', baseUrl.endsWith('/') ? baseUrl : `${baseUrl}/`).href;
}

/**
 * Creates a registry client. Bearer tokens go only to the registry URL; a client-credentials
 * token is cached until shortly before it expires and fetched again once after a 401.
 */
export function createRegistryClient(options: RegistryClientOptions): RegistryClient {
  const { config } = options;
  const doFetch = options.fetch ?? fetch;
  const now = options.now ?? Date.now;
  if (!config.url) throw new Error('registry.url is not configured (LHN_REGISTRY_URL)');
  const endpoint = submissionsEndpoint(config.url);
  let cached: { token: string; expiresAt: number } | undefined;
  let pending: Promise<string> | undefined;

  async function fetchToken(): Promise<string> {
    const auth = config.auth;
    if (auth.type !== 'client-credentials') throw new Error('no client credentials configured');
    // fetch would refuse it with a message that quotes the URL, password included.
    if (hasUserInfo(auth.tokenUrl))
      throw new RegistryUnavailableError(
        'registry.auth.tokenUrl must not contain user:password (the client is authenticated with clientId and clientSecret)',
      );
    const form = new URLSearchParams({ grant_type: 'client_credentials' });
    if (auth.scope) form.set('scope', auth.scope);
    const basic = Buffer.from(
      `${encodeURIComponent(auth.clientId)}:${encodeURIComponent(auth.clientSecret)}`,
    ).toString('base64');
    let res: Response;
    try {
      res = await doFetch(auth.tokenUrl, {
        method: 'POST',
        headers: {
          'content-type': 'application/x-www-form-urlencoded',
          accept: 'application/json',
          authorization: `Basic ${basic}`,
        },
        body: form.toString(),
        signal: AbortSignal.timeout(config.timeoutMs),
      });
    } catch (err) {
      const e = err as Error;
      throw new RegistryUnavailableError(
        `${isLocalRequestError(e) ? 'registry token request could not be made' : 'registry token endpoint unreachable'}: ${describeFetchError(e, config.timeoutMs)}`,
      );
    }
    let text: string;
    try {
      text = await res.text();
    } catch (err) {
      throw new RegistryUnavailableError(
        `registry token endpoint answered HTTP ${res.status} but its body could not be read: ${describeReadError(err, config.timeoutMs)}`,
        res.status,
      );
    }
    if (!res.ok)
      throw new RegistryUnavailableError(
        `registry token request failed (HTTP ${res.status}): ${reasonFromBody(text, res.headers.get('content-type'))}`,
        res.status,
      );
    let body: { access_token?: unknown; expires_in?: unknown };
    try {
      body = JSON.parse(text) as typeof body;
    } catch {
      throw new RegistryUnavailableError('registry token response is not JSON', res.status);
    }
    if (typeof body.access_token !== 'string' || body.access_token === '')
      throw new RegistryUnavailableError('registry token response has no access_token');
    // Not cached, and never quoted: it would go into the Authorization header, and fetch's
    // error for a bad header value quotes the value.
    if (!isHeaderToken(body.access_token))
      throw new RegistryUnavailableError(
        'registry token response has an access_token with a character not allowed in an HTTP header (whitespace, a line break, a control or a non-ASCII character); the token endpoint must be fixed',
        res.status,
      );
    const expiresIn = typeof body.expires_in === 'number' ? body.expires_in : 300;
    cached = {
      token: body.access_token,
      expiresAt: now() + expiresIn * 1000 - TOKEN_EXPIRY_MARGIN_MS,
    };
    return cached.token;
  }

  async function bearer(): Promise<string | undefined> {
    const auth = config.auth;
    switch (auth.type) {
      case 'none':
        return undefined;
      case 'bearer':
        // The config refuses such a token; this guards a config built some other way.
        if (!isHeaderToken(auth.token))
          throw new RegistryUnavailableError(
            'registry.auth.token has a character not allowed in an HTTP header (whitespace, a line break, a control or a non-ASCII character)',
          );
        return auth.token;
      case 'client-credentials':
        if (cached && cached.expiresAt > now()) return cached.token;
        pending ??= fetchToken().finally(() => {
          pending = undefined;
        });
        return pending;
    }
  }

  async function post(submission: RegistrySubmission, idempotencyKey: string): Promise<Response> {
    // fetch would refuse it with a message that quotes the URL, password included.
    if (hasUserInfo(endpoint))
      throw new RegistryUnavailableError(
        'registry.url must not contain user:password (use registry.auth for credentials)',
      );
    const token = await bearer();
    const headers: Record<string, string> = {
      'content-type': 'application/json',
      accept: 'application/json',
      // Unique per delivered version (a revert's key is `<submissionId>-r<seq>`), the same on
      // every retry of it: see deliveryIdempotencyKey.
      'idempotency-key': idempotencyKey,
    };
    if (token) headers.authorization = `Bearer ${token}`;
    try {
      return await doFetch(endpoint, {
        method: 'POST',
        headers,
        body: JSON.stringify(submission),
        signal: AbortSignal.timeout(config.timeoutMs),
        // Not followed (the token stays with the registry URL), but seen, so the error can
        // say where the registry pointed.
        redirect: 'manual',
      });
    } catch (err) {
      const e = err as Error;
      throw new RegistryUnavailableError(
        `${isLocalRequestError(e) ? 'registry request could not be made (nothing was sent)' : 'registry unreachable'}: ${describeFetchError(e, config.timeoutMs)}`,
        undefined,
        undefined,
        mayHaveLanded(e),
      );
    }
  }

  return {
    async deliver(submission, deliverOptions = {}) {
      const key = deliverOptions.idempotencyKey ?? submission.submissionId;
      let res = await post(submission, key);
      if (res.status === 401 && config.auth.type === 'client-credentials') {
        await res.body?.cancel();
        cached = undefined;
        res = await post(submission, key);
      }
      if (res.status >= 300 && res.status < 400) {
        await res.body?.cancel();
        throw new RegistryUnavailableError(
          `registry answered HTTP ${res.status}, a redirect${describeLocation(res.headers.get('location'), endpoint)}; redirects are not followed: set registry.url to the ingest endpoint itself`,
          res.status,
        );
      }
      let text = '';
      let unread: string | undefined;
      try {
        text = await res.text();
      } catch (err) {
        unread = describeReadError(err, config.timeoutMs);
      }
      // A 2xx whose body was cut off (a timeout, a reset) may well have been stored: the
      // acknowledgement that would say so is lost, so the visit is held in doubt, and the
      // retry learns the answer (`duplicate` if it was).
      if (res.ok && unread !== undefined)
        throw new RegistryUnavailableError(
          `registry answered HTTP ${res.status} but its body could not be read whole (${unread}); it may have stored the submission`,
          res.status,
          undefined,
          true,
        );
      if (res.ok) {
        // Only the contract's acknowledgement counts as stored: a login page, a maintenance
        // notice or an empty 2xx from a gateway in front of the registry must not mark the
        // visit as sent (later syncs would find it unchanged and never send it again).
        const ack = ackOf(text);
        if (ack === undefined)
          throw new RegistryUnavailableError(
            `registry answered HTTP ${res.status} without an ingest acknowledgement (${describeBody(res.headers.get('content-type'), text)}; expected JSON with status created, updated, retracted or duplicate)`,
            res.status,
          );
        // An acknowledgement of another submission (a proxy cache, a registry bug) does not
        // say this one was stored.
        const other = mismatchedId(ack, submission);
        if (other !== undefined)
          throw new RegistryUnavailableError(
            `registry acknowledged HTTP ${res.status} with another ${other} than the one sent; not counted as stored`,
            res.status,
          );
        return {
          status: ack.status === 'duplicate' ? 'duplicate' : 'accepted',
          httpStatus: res.status,
        };
      }
      const contentType = res.headers.get('content-type');
      const reason =
        unread === undefined
          ? reasonFromBody(text, contentType)
          : `its body could not be read whole (${unread})`;
      // A 409 is a duplicate only when it says so as the contract's acknowledgement; any other
      // conflict (even one whose text has the word) is retried.
      if (res.status === 409) {
        const ack = ackOf(text);
        if (ack?.status === 'duplicate' && mismatchedId(ack, submission) === undefined)
          return { status: 'duplicate', httpStatus: res.status };
      }
      if (isRejection(res.status)) throw new RegistryRejectedError(res.status, reason);
      throw new RegistryUnavailableError(
        `registry answered HTTP ${res.status}: ${reason}`,
        res.status,
        parseRetryAfterMs(res.headers.get('retry-after'), now()),
        // A gateway that gave up after forwarding: the registry behind it may still store it.
        GATEWAY_IN_DOUBT.has(res.status) ||
          (IN_DOUBT_UNLESS_REGISTRY.has(res.status) &&
            (unread !== undefined || !isRegistryProblem(contentType, text))),
      );
    },
  };
}
