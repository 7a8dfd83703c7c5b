// The FHIR access layer for one centre: every request to the EHR goes through `execute`,
// which applies, in order, the origin guard (the token goes only to its own origin; a bulk
// file redirected to another origin is fetched there without it), the per-centre limiter,
// a fresh access token, a timeout, and the retry policy (408/429/5xx and network errors,
// Retry-After capped; a 401 invalidates the token and retries once).
//
// Why plain fetch (undici) and not fhir-kit-client for requests: fhir-kit-client sets one
// bearer token for every URL it is handed (including next links on other hosts), its debug
// logging prints request headers (the token) and response bodies (PHI), its errors carry full
// URLs with query values, and it reads every body whole (no NDJSON streaming) and hides
// Retry-After. fhir-kit-client is still used where it fits: CapabilityTool to read the
// CapabilityStatement (see src/onboarding/check.ts).
import type { CentreConfig } from '../config/centre.js';
import type { ServiceConfig } from '../config/service.js';
import { silentLogger, type Logger } from '../util/logger.js';
import type { Metrics } from '../util/metrics.js';
import {
  describeIssue,
  FhirHttpError,
  FhirNetworkError,
  IncompleteSearchError,
  isIncompleteIssue,
  MalformedFhirResponseError,
  OriginRefusedError,
  parseOutcomeIssues,
  redactUrl,
  type OriginPurpose,
  type OutcomeIssue,
} from './errors.js';
import type { FhirLimiter, LimiterLease } from './limiter.js';
import {
  createOriginGuard,
  ensureSlash,
  type OriginEvent,
  type OriginGuard,
} from './origin-guard.js';
import {
  createRetryPolicy,
  decideRetryDelay,
  isRetryableNetworkCode,
  isRetryableStatus,
  networkErrorCode,
  parseRetryAfter,
  type RetryPolicy,
} from './retry.js';
import {
  isRetryableTokenFailure,
  type FhirBundle,
  type FhirResource,
  type FhirTokenSource,
} from './types.js';
import { followAbort } from '../util/abort.js';

/** Search parameters; arrays repeat the parameter (`_type=a&_type=b`). */
export type SearchParams = Record<
  string,
  string | number | boolean | (string | number)[] | undefined
>;

/** Per-request options. */
export interface FhirRequestInit {
  method?: 'GET' | 'POST' | 'DELETE';
  headers?: Record<string, string>;
  body?: string;
  signal?: AbortSignal;
  /** Why this URL is fetched (for origin-guard records); default `request`. */
  purpose?: OriginPurpose;
  /**
   * Whether the request needs the access token (default true). False sends no token, and
   * allows a foreign origin (bulk files with `requiresAccessToken: false`).
   */
  tokenRequired?: boolean;
  /** Resource type for the metrics label; guessed from the URL path otherwise. */
  resourceType?: string;
  /** Overrides the service's maxRetries for this request (e.g. 0 for a cancel). */
  maxRetries?: number;
  /**
   * Cleanup that must go out even when the centre's sync window has closed (the DELETE that
   * cancels a bulk export); rate and concurrency limits still apply.
   */
  cleanup?: boolean;
}

/** A parsed JSON answer. */
export interface FhirJsonResponse<T = unknown> {
  status: number;
  headers: Headers;
  /** Parsed body; undefined when the body was empty. */
  body: T | undefined;
  /** The final URL (after redirects). */
  url: string;
}

/** The FHIR client of one centre. */
export interface FhirClient {
  readonly centreId: string;
  /** FHIR base URL without a trailing slash. */
  readonly baseUrl: string;
  /** Recent foreign-origin decisions (see OriginGuard.events; use onOriginEvent to record all). */
  readonly originEvents: readonly OriginEvent[];
  /**
   * Sends a request and returns the 2xx (or 3xx-free) response with its body unread.
   * The body is guarded by an idle timeout and releases the limiter slot when consumed or
   * cancelled: always read or cancel it. Non-2xx answers throw FhirHttpError.
   */
  request(url: string | URL, init?: FhirRequestInit): Promise<Response>;
  /** Like request(), but reads and parses the JSON body inside the retry loop. */
  requestJson<T = unknown>(url: string | URL, init?: FhirRequestInit): Promise<FhirJsonResponse<T>>;
  /**
   * Pages of a type-level search, following `next` links (origin-guarded). A page whose
   * OperationOutcome entries say the result is incomplete throws IncompleteSearchError;
   * information and warning entries are logged.
   */
  searchPages(
    resourceType: string,
    params: SearchParams,
    options?: SearchOptions,
  ): AsyncIterable<FhirBundle>;
  /** The resources of a search (entries with search.mode `outcome` are skipped). */
  searchResources(
    resourceType: string,
    params: SearchParams,
    options?: SearchOptions,
  ): AsyncIterable<FhirResource>;
  /** Reads one resource; undefined on 404/410. */
  read(
    resourceType: string,
    id: string,
    options?: { signal?: AbortSignal },
  ): Promise<FhirResource | undefined>;
  /** The server's CapabilityStatement (`GET [base]/metadata`). */
  capabilities(options?: { signal?: AbortSignal }): Promise<FhirResource>;
  /** Resolves a (possibly relative) URL against the base URL. */
  resolveUrl(url: string): URL;
  /**
   * Calls `listener` with each information or warning issue a search page carries (every
   * time, not only when logged), until the returned function is called: a sync run subscribes
   * to record the warnings that say data was withheld.
   */
  onSearchNotice?(listener: SearchNoticeListener): () => void;
}

/** Options of one search. */
export interface SearchOptions {
  signal?: AbortSignal;
  /**
   * Called with each information or warning issue this search's pages carry (the searcher
   * can tell which patient's data the EHR said it withheld; onSearchNotice cannot).
   */
  onNotice?: (issue: OutcomeIssue) => void;
}

/** An information or warning issue of a search page, with the type searched. */
export type SearchNoticeListener = (notice: { resourceType: string; issue: OutcomeIssue }) => void;

/** Options for createFhirClient. */
export interface CreateFhirClientOptions {
  centre: Pick<CentreConfig, 'id' | 'fhir'>;
  auth: FhirTokenSource;
  limiter?: FhirLimiter;
  logger?: Logger;
  metrics?: Pick<Metrics, 'fhirRequests' | 'fhirRequestSeconds'>;
  config: ServiceConfig['fhir'];
  /** Test hooks: sleep, random, now, backoff bounds. */
  retry?: Partial<RetryPolicy>;
  fetch?: typeof fetch;
  /** Called for each foreign-origin decision. */
  onOriginEvent?: (event: OriginEvent) => void;
}

const MAX_REDIRECTS = 5;
/** Most pages one search follows (fhir.maxPagesPerSearch): a guard against endless paging. */
export const DEFAULT_MAX_PAGES_PER_SEARCH = 10_000;
const MAX_ERROR_BODY_BYTES = 64 * 1024;

/** A known FHIR resource type name at the start of a path segment. */
const TYPE_SEGMENT = /^[A-Z][A-Za-z]+$/;

type AttemptOutcome<T> =
  | { kind: 'done'; value: T }
  | { kind: 'retry'; delayMs: number; reason: string }
  | { kind: 'redirect'; location: URL }
  | { kind: 'reauth' };

/** Creates the FHIR client for one centre. */
export function createFhirClient(options: CreateFhirClientOptions): FhirClient {
  const logger = options.logger ?? silentLogger;
  const centreId = options.centre.id;
  const baseUrl = options.centre.fhir.baseUrl.replace(/\/+$/, '');
  const policy = createRetryPolicy(options.config, options.retry);
  const doFetch = options.fetch ?? globalThis.fetch;
  const guard: OriginGuard = createOriginGuard({
    baseUrl,
    logger,
    centreId,
    ...(options.onOriginEvent ? { onEvent: options.onOriginEvent } : {}),
  });
  const timeoutMs = options.config.requestTimeoutMs;
  const maxPages = options.config.maxPagesPerSearch ?? DEFAULT_MAX_PAGES_PER_SEARCH;

  const resolveUrl = (url: string): URL => new URL(url, ensureSlash(baseUrl));

  const labelFor = (url: URL, init: FhirRequestInit): string => {
    if (init.resourceType) return init.resourceType;
    if (url.origin === guard.allowedOrigin && url.pathname.startsWith(new URL(baseUrl).pathname)) {
      const rest = url.pathname.slice(new URL(baseUrl).pathname.length).split('/').filter(Boolean);
      const first = rest[0];
      if (first === 'metadata') return 'metadata';
      if (first && TYPE_SEGMENT.test(first)) return first;
    }
    return init.purpose ?? 'other';
  };

  /** One attempt: send, classify, and hand the successful response to `consume`. */
  async function attempt<T>(
    url: URL,
    init: FhirRequestInit,
    state: { retry: number; reauthDone: boolean; maxRetries: number },
    consume: Consume<T>,
  ): Promise<AttemptOutcome<T>> {
    const method = init.method ?? 'GET';
    const decision = guard.check(url, init.purpose ?? 'request', {
      tokenRequired: init.tokenRequired ?? true,
    });
    let lease: LimiterLease | undefined;
    let handedOff = false;
    const release = async () => {
      const held = lease;
      lease = undefined;
      if (held) await held.release();
    };
    const label = labelFor(url, init);
    // Only failures while talking to the EHR count as network errors; a Redis or token
    // failure while preparing the request propagates unchanged (its own error says why),
    // except a retryable token failure (429/5xx/network at the token endpoint), which is
    // retried like a 429 from the EHR: same backoff, Retry-After and maxRetries.
    let phase: 'prepare' | 'exchange' = 'prepare';
    let tokenFailure: unknown;
    try {
      if (options.limiter)
        lease = await options.limiter.acquire(
          init.signal,
          init.cleanup ? { ignoreSyncWindow: true } : undefined,
        );
      const headers: Record<string, string> = {
        accept: 'application/fhir+json',
        ...lower(init.headers),
      };
      let token: string | undefined;
      if (decision.sendToken) {
        const access = await options.auth.getAccessToken().catch((err: unknown) => {
          tokenFailure = err;
          throw err;
        });
        if (access.origin !== undefined && access.origin !== guard.allowedOrigin) {
          // The token was issued for another origin than this client's base URL.
          throw new OriginRefusedError({
            origin: guard.allowedOrigin,
            allowedOrigin: access.origin,
            purpose: init.purpose ?? 'request',
          });
        }
        token = access.token;
        headers.authorization = `Bearer ${token}`;
      } else {
        delete headers.authorization;
      }

      const controller = new AbortController();
      const unfollow = followAbort(init.signal, controller);
      let timer: NodeJS.Timeout | undefined = setTimeout(
        () => controller.abort(new DOMException('request timed out', 'TimeoutError')),
        timeoutMs,
      );
      const clearTimer = () => {
        if (timer) clearTimeout(timer);
        timer = undefined;
      };
      const started = performance.now();
      phase = 'exchange';
      let response: Response;
      try {
        response = await doFetch(url, {
          method,
          headers,
          ...(init.body !== undefined ? { body: init.body } : {}),
          signal: controller.signal,
          redirect: 'manual',
        });
      } catch (err) {
        clearTimer();
        unfollow();
        options.metrics?.fhirRequests.inc({
          centre: centreId,
          resource_type: label,
          status: 'error',
        });
        throw err;
      }
      clearTimer();
      options.metrics?.fhirRequests.inc({
        centre: centreId,
        resource_type: label,
        status: String(response.status),
      });
      options.metrics?.fhirRequestSeconds.observe(
        { centre: centreId, resource_type: label },
        (performance.now() - started) / 1000,
      );
      logger.debug(
        {
          centre: centreId,
          method,
          url: redactUrl(url),
          status: response.status,
          ms: Math.round(performance.now() - started),
          retry: state.retry,
        },
        'FHIR request',
      );

      if (response.status >= 300 && response.status < 400 && response.headers.has('location')) {
        await response.body?.cancel();
        unfollow();
        return { kind: 'redirect', location: new URL(response.headers.get('location')!, url) };
      }

      if (response.status === 401 && token !== undefined && !state.reauthDone) {
        await response.body?.cancel();
        unfollow();
        options.auth.invalidate(token);
        logger.info(
          { centre: centreId, url: redactUrl(url) },
          'EHR answered 401; fetching a fresh token and retrying once',
        );
        return { kind: 'reauth' };
      }

      if (!response.ok) {
        const bodyTimer = setTimeout(
          () => controller.abort(new DOMException('error body stalled', 'TimeoutError')),
          timeoutMs,
        );
        const text = await readLimited(response, MAX_ERROR_BODY_BYTES).catch(() => '');
        clearTimeout(bodyTimer);
        unfollow();
        let issues: ReturnType<typeof parseOutcomeIssues> = [];
        try {
          issues = parseOutcomeIssues(JSON.parse(text));
        } catch {
          // not JSON: keep no issues (the body is never copied into the error)
        }
        const retryAfterHeader = response.headers.get('retry-after');
        if (isRetryableStatus(response.status) && state.retry < state.maxRetries) {
          const { delayMs } = decideRetryDelay({
            retry: state.retry + 1,
            policy,
            retryAfterHeader,
            logger,
            context: { centre: centreId, url: redactUrl(url), status: response.status },
          });
          return { kind: 'retry', delayMs, reason: `HTTP ${response.status}` };
        }
        const retryAfter = parseRetryAfter(retryAfterHeader, {
          now: policy.now(),
          maxSeconds: policy.maxRetryAfterSeconds,
        });
        const hint = hintForStatus(response.status, state.reauthDone, method, url, token, issues);
        throw new FhirHttpError({
          status: response.status,
          method,
          url,
          issues,
          statusText: response.statusText,
          ...(retryAfter ? { retryAfterSeconds: retryAfter.seconds } : {}),
          ...(hint ? { hint } : {}),
        });
      }

      // Success: guard the body with an idle timeout and free the slot when it ends.
      const guarded = guardBody(
        response,
        url,
        timeoutMs,
        async () => {
          unfollow();
          await release();
        },
        controller,
      );
      handedOff = true;
      const value = await consume(guarded, release, (reason) => controller.abort(reason));
      return { kind: 'done', value };
    } catch (err) {
      if (init.signal?.aborted) throw init.signal.reason ?? err;
      if (phase === 'prepare') {
        if (
          err === tokenFailure &&
          isRetryableTokenFailure(err) &&
          state.retry < state.maxRetries
        ) {
          const { delayMs } = decideRetryDelay({
            retry: state.retry + 1,
            policy,
            retryAfterHeader: err.retryAfter ?? null,
            logger,
            context: { centre: centreId, url: redactUrl(url), step: 'token' },
          });
          const code = (err as { code?: unknown }).code;
          return {
            kind: 'retry',
            delayMs,
            reason: `access token: ${typeof code === 'string' ? code : err.name}`,
          };
        }
        throw err;
      }
      if (
        err instanceof FhirHttpError ||
        err instanceof OriginRefusedError ||
        err instanceof MalformedFhirResponseError
      )
        throw err;
      const code = networkErrorCode(err);
      if (code === undefined) throw err;
      const retryable = isRetryableNetworkCode(code);
      if (retryable && state.retry < state.maxRetries) {
        const { delayMs } = decideRetryDelay({ retry: state.retry + 1, policy });
        return { kind: 'retry', delayMs, reason: code };
      }
      throw new FhirNetworkError({
        code,
        method,
        url,
        retryable,
        detail: code === 'timeout' ? timeoutDetail(err) : `after ${state.retry + 1} attempt(s)`,
        cause: err,
      });
    } finally {
      if (!handedOff) await release();
    }
  }

  /** What a timeout was: no answer, a body that stalled, or one that never ended in time. */
  function timeoutDetail(err: unknown): string {
    const message = err instanceof Error ? err.message : '';
    if (message === BODY_STALLED) return `the answer stalled for ${timeoutMs} ms`;
    if (message === BODY_TOO_SLOW)
      return `the answer did not arrive whole within ${timeoutMs * JSON_BODY_DEADLINE_FACTOR} ms`;
    return `no answer within ${timeoutMs} ms`;
  }

  async function execute<T>(
    input: string | URL,
    init: FhirRequestInit,
    consume: Consume<T>,
  ): Promise<T> {
    let url = typeof input === 'string' ? resolveUrl(input) : input;
    const state = { retry: 0, reauthDone: false, maxRetries: init.maxRetries ?? policy.maxRetries };
    let redirects = 0;
    // What the current hop sends: a bulk file redirected to another origin loses the token.
    let hop = init;
    for (;;) {
      init.signal?.throwIfAborted();
      const outcome = await attempt(url, hop, state, consume);
      switch (outcome.kind) {
        case 'done':
          return outcome.value;
        case 'reauth':
          state.reauthDone = true;
          break;
        case 'redirect':
          if (++redirects > MAX_REDIRECTS)
            throw new FhirNetworkError({
              code: 'too_many_redirects',
              method: init.method ?? 'GET',
              url,
              retryable: false,
            });
          {
            const tokenRequired = hop.tokenRequired ?? true;
            const next = guard.redirect(url, outcome.location, hop.purpose ?? 'request', {
              tokenRequired,
            });
            if (next.tokenRequired !== tokenRequired)
              hop = { ...hop, tokenRequired: next.tokenRequired };
          }
          url = outcome.location;
          break;
        case 'retry':
          state.retry += 1;
          logger.warn(
            {
              centre: centreId,
              url: redactUrl(url),
              reason: outcome.reason,
              retry: state.retry,
              delayMs: outcome.delayMs,
            },
            'transient EHR failure; retrying',
          );
          await policy.sleep(outcome.delayMs, init.signal);
          break;
      }
    }
  }

  const request = (url: string | URL, init: FhirRequestInit = {}) =>
    execute(url, init, (response) => Promise.resolve(response));

  const requestJson = <T>(url: string | URL, init: FhirRequestInit = {}) =>
    execute(url, init, async (response, _release, abort): Promise<FhirJsonResponse<T>> => {
      // The idle timeout bounds each pause in the body; this bounds the whole of it (a gateway
      // that trickles a byte at a time would hold the limiter slot and the centre for ever).
      const deadline = setTimeout(
        () => abort(new DOMException(BODY_TOO_SLOW, 'TimeoutError')),
        timeoutMs * JSON_BODY_DEADLINE_FACTOR,
      );
      let text: string;
      try {
        text = await response.text();
      } finally {
        clearTimeout(deadline);
      }
      let body: T | undefined;
      if (text.trim() !== '') {
        try {
          body = JSON.parse(text) as T;
        } catch {
          throw new MalformedFhirResponseError({
            url: response.url || String(url),
            reason: 'the body is not valid JSON',
          });
        }
      }
      return {
        status: response.status,
        headers: response.headers,
        body,
        url: response.url || String(url),
      };
    });

  async function* searchPages(
    resourceType: string,
    params: SearchParams,
    searchOptions: SearchOptions = {},
  ): AsyncGenerator<FhirBundle> {
    const firstUrl = buildSearchUrl(baseUrl, resourceType, params);
    let url: URL = firstUrl;
    let purpose: OriginPurpose = 'request';
    let seen = new Set<string>();
    // What this search has yielded, so that a restart after an expired paging cursor yields
    // each resource once. Undefined once that cannot be told (a resource without an id, or
    // more than MAX_TRACKED_IDS resources): a restart then is refused rather than duplicating.
    let yielded: Set<string> | undefined = new Set<string>();
    let restarted = false;
    // The data resources of this pass over the search (reset on a restart), to notice an EHR
    // whose next links change while its pages repeat: undefined once that cannot be told.
    let pass: Set<string> | undefined = new Set<string>();
    let repeatsInARow = 0;
    /** Bundle.total of the first page, when the EHR gives one. */
    let firstTotal: number | undefined;
    for (let page = 1; ; page++) {
      if (page > maxPages)
        throw new MalformedFhirResponseError({
          url,
          page,
          resourceType,
          reason: `the search has more than ${maxPages} pages (fhir.maxPagesPerSearch); the EHR's paging does not seem to end`,
        });
      seen.add(url.href);
      let response: FhirJsonResponse;
      try {
        response = await requestJson(url, {
          purpose,
          resourceType,
          ...(searchOptions.signal ? { signal: searchOptions.signal } : {}),
        });
      } catch (err) {
        if (err instanceof MalformedFhirResponseError)
          throw new MalformedFhirResponseError({
            url,
            page,
            resourceType,
            reason: 'the body is not valid JSON',
          });
        if (err instanceof FhirHttpError && err.status === 410 && purpose === 'next-link') {
          // An expired paging cursor (HAPI: "Search ID ... may have expired"): read the
          // search again from its first page, once.
          if (!restarted && yielded) {
            restarted = true;
            logger.warn(
              { centre: centreId, resourceType, page },
              "the EHR's paging cursor expired (HTTP 410 on a next link); restarting this search from its first page",
            );
            url = firstUrl;
            purpose = 'request';
            seen = new Set<string>();
            pass = new Set<string>();
            repeatsInARow = 0;
            page = 0;
            continue;
          }
          throw pagingCursorExpired(err, url, page, resourceType, restarted);
        }
        throw err;
      }
      const bundle = assertSearchBundle(response.body, { url, page, resourceType });
      if (page === 1 && typeof bundle.total === 'number') firstTotal = bundle.total;
      checkSearchOutcomes(bundle, { url, page, resourceType }, searchOptions.onNotice);
      if (pass) {
        const fresh = notePass(bundle, pass);
        if (fresh === undefined) pass = undefined;
        else if (page > 1 && fresh.data > 0 && fresh.added === 0) {
          // A page of repeats alone is what offset paging gives when resources are added
          // while it pages (newest first, they shift the rest down): read on. Several in a row
          // are an EHR whose next links never end.
          repeatsInARow += 1;
          if (repeatsInARow >= REPEAT_ONLY_PAGES_TO_STOP) {
            // Next links that never end, or a paging token the EHR (or a gateway) ignores so
            // that every page is the first one again: the two look alike. Only a total the
            // EHR gave, and that many distinct resources read, shows the search was read
            // whole; otherwise it fails, as a search that could not be read to its end must
            // (taken as complete, it would retract and blank out visits that still exist).
            const total = typeof bundle.total === 'number' ? bundle.total : firstTotal;
            if (total !== undefined && pass.size >= total) {
              logger.warn(
                { centre: centreId, resourceType, page, resources: fresh.data, total },
                `${REPEAT_ONLY_PAGES_TO_STOP} pages of a search in a row hold only resources this search already returned, and all ${total} it counts were read; paging stopped there (the EHR keeps linking to new pages that repeat old results)`,
              );
              return;
            }
            throw new MalformedFhirResponseError({
              url,
              page,
              resourceType,
              reason: `${REPEAT_ONLY_PAGES_TO_STOP} pages in a row hold only resources this search already returned (${pass.size} distinct${total !== undefined ? ` of the ${total} it counts` : ', and the EHR gives no total'}), while the next links keep changing: the EHR's paging does not advance (a paging token it or a gateway ignores?), so the search cannot be read to its end`,
              hint: 'The run fails so that nothing is retracted and the watermarks stay; ask centre IT to check the next links the FHIR server returns',
            });
          }
        } else repeatsInARow = 0;
      }
      yield restarted && yielded ? withoutYielded(bundle, yielded) : bundle;
      if (yielded) yielded = noteYielded(bundle, yielded);
      const next = bundle.link?.find((l) => l.relation === 'next')?.url;
      if (!next) return;
      let nextUrl: URL;
      try {
        // RFC 3986: a relative link resolves against the URL of the page that holds it.
        nextUrl = new URL(next, response.url);
      } catch {
        throw new MalformedFhirResponseError({
          url,
          page,
          resourceType,
          reason: 'the next link is not a valid URL',
        });
      }
      if (seen.has(nextUrl.href))
        throw new MalformedFhirResponseError({
          url,
          page,
          resourceType,
          reason: 'the next link points to a page already read (the server would loop forever)',
        });
      url = nextUrl;
      purpose = 'next-link';
    }
  }

  // Notices (information, warning) in searchsets, by what they say: a server that adds the
  // same warning to every search would otherwise log it once per patient and type.
  const notices = new Map<string, number>();
  const MAX_NOTICE_KINDS = 200;
  const noticeListeners = new Set<SearchNoticeListener>();

  /**
   * The OperationOutcome entries of a search page: an issue that says the result is
   * incomplete (error, fatal; incomplete, too-costly, throttled) fails the search before the
   * page is used; information and warnings are logged (1st, 10th, 100th... time).
   */
  function checkSearchOutcomes(
    bundle: FhirBundle,
    where: { url: URL; page: number; resourceType: string },
    onNotice: SearchOptions['onNotice'],
  ): void {
    const issues = searchOutcomeIssues(bundle);
    if (issues.length === 0) return;
    const incomplete = issues.filter(isIncompleteIssue);
    if (incomplete.length > 0) throw new IncompleteSearchError({ ...where, issues: incomplete });
    for (const issue of issues) {
      onNotice?.(issue);
      for (const listener of noticeListeners) {
        try {
          listener({ resourceType: where.resourceType, issue });
        } catch {
          // A listener's failure is its own; the search goes on.
        }
      }
      const text = describeIssue(issue);
      const key = `${where.resourceType}\u0000${text}`;
      const times = (notices.get(key) ?? 0) + 1;
      if (notices.size < MAX_NOTICE_KINDS || notices.has(key)) notices.set(key, times);
      if (!/^10*$/.test(String(times))) continue;
      logger.warn(
        { centre: centreId, resourceType: where.resourceType, issue: text, times },
        'the EHR added a notice to a search result (not an error; the search goes on)',
      );
    }
  }

  async function* searchResources(
    resourceType: string,
    params: SearchParams,
    searchOptions: SearchOptions = {},
  ): AsyncGenerator<FhirResource> {
    for await (const bundle of searchPages(resourceType, params, searchOptions)) {
      yield* searchMatches(bundle);
    }
  }

  return {
    centreId,
    baseUrl,
    originEvents: guard.events,
    request,
    requestJson,
    searchPages,
    searchResources,
    resolveUrl,
    onSearchNotice(listener) {
      noticeListeners.add(listener);
      return () => noticeListeners.delete(listener);
    },
    async read(resourceType, id, readOptions = {}) {
      try {
        const { body } = await requestJson<FhirResource>(
          `${baseUrl}/${resourceType}/${encodeURIComponent(id)}`,
          { resourceType, ...(readOptions.signal ? { signal: readOptions.signal } : {}) },
        );
        if (!body || body.resourceType !== resourceType)
          throw new MalformedFhirResponseError({
            url: `${baseUrl}/${resourceType}/…`,
            reason: `expected a ${resourceType} resource`,
          });
        return body;
      } catch (err) {
        if (err instanceof FhirHttpError && (err.status === 404 || err.status === 410))
          return undefined;
        throw err;
      }
    },
    async capabilities(capOptions = {}) {
      const { body } = await requestJson<FhirResource>(`${baseUrl}/metadata`, {
        resourceType: 'metadata',
        ...(capOptions.signal ? { signal: capOptions.signal } : {}),
      });
      if (!body || body.resourceType !== 'CapabilityStatement')
        throw new MalformedFhirResponseError({
          url: `${baseUrl}/metadata`,
          reason: 'expected a CapabilityStatement',
        });
      return body;
    },
  };
}

/** `[base]/[type]?params`, arrays repeating the parameter, undefined values dropped. */
export function buildSearchUrl(baseUrl: string, resourceType: string, params: SearchParams): URL {
  const url = new URL(`${baseUrl.replace(/\/+$/, '')}/${resourceType}`);
  for (const [name, value] of Object.entries(params)) {
    if (value === undefined) continue;
    for (const v of Array.isArray(value) ? value : [value])
      url.searchParams.append(name, String(v));
  }
  return url;
}

/** Checks that a search answer is a Bundle whose entries hold resources. */
/**
 * The data resources of a search page. An OperationOutcome in a searchset is the server's
 * notice ("no results", a parameter ignored), not data, whether or not the server marked it
 * search.mode outcome; searchPages has already failed a page whose notice says the result is
 * incomplete (see checkSearchOutcomes).
 */
export function searchMatches(bundle: FhirBundle): FhirResource[] {
  const out: FhirResource[] = [];
  for (const entry of bundle.entry ?? []) {
    if (entry.search?.mode === 'outcome' || !entry.resource) continue;
    if (entry.resource.resourceType === 'OperationOutcome') continue;
    out.push(entry.resource);
  }
  return out;
}

/**
 * The issues of a search page's OperationOutcome entries (marked search.mode outcome or not).
 */
export function searchOutcomeIssues(bundle: FhirBundle): OutcomeIssue[] {
  const issues: OutcomeIssue[] = [];
  for (const entry of bundle.entry ?? []) {
    if (entry.resource?.resourceType === 'OperationOutcome')
      issues.push(...parseOutcomeIssues(entry.resource));
  }
  return issues;
}

/** Most resource ids one search remembers for de-duplicating a restart (about 10 MB). */
const MAX_TRACKED_IDS = 100_000;

/**
 * A JSON answer (a search page, a read) must arrive whole within this many request timeouts
 * (fhir.requestTimeoutMs) once its headers have; NDJSON bulk files have only the idle timeout.
 */
const JSON_BODY_DEADLINE_FACTOR = 4;
const BODY_STALLED = 'response body stalled';
const BODY_TOO_SLOW = 'response body too slow';

/** Reads a successful response; `abort` stops its request (the retry policy decides next). */
type Consume<T> = (
  response: Response,
  release: () => Promise<void>,
  abort: (reason: unknown) => void,
) => Promise<T>;

/**
 * Pages in a row holding only resources the search already returned after which paging
 * stops (an EHR whose next links never end); fewer are read through, as offset paging repeats
 * a page's worth when resources are added while it pages.
 */
const REPEAT_ONLY_PAGES_TO_STOP = 3;

const entryKey = (resource: FhirResource): string | undefined =>
  typeof resource.id === 'string' ? `${resource.resourceType}/${resource.id}` : undefined;

/**
 * Adds a page's data resources to `pass`: how many it holds and how many were new; undefined
 * when they cannot all be tracked (a resource without an id, too many resources).
 */
function notePass(
  bundle: FhirBundle,
  pass: Set<string>,
): { data: number; added: number } | undefined {
  let data = 0;
  let added = 0;
  for (const resource of searchMatches(bundle)) {
    const key = entryKey(resource);
    if (key === undefined || pass.size >= MAX_TRACKED_IDS) return undefined;
    data += 1;
    if (!pass.has(key)) {
      pass.add(key);
      added += 1;
    }
  }
  return { data, added };
}

/** Adds a page's data resources to `yielded`; undefined when they cannot all be tracked. */
function noteYielded(bundle: FhirBundle, yielded: Set<string>): Set<string> | undefined {
  for (const resource of searchMatches(bundle)) {
    const key = entryKey(resource);
    if (key === undefined || yielded.size >= MAX_TRACKED_IDS) return undefined;
    yielded.add(key);
  }
  return yielded;
}

/** The page without the data resources an earlier (pre-restart) read already yielded. */
function withoutYielded(bundle: FhirBundle, yielded: ReadonlySet<string>): FhirBundle {
  if (!bundle.entry) return bundle;
  return {
    ...bundle,
    entry: bundle.entry.filter((entry) => {
      const key = entry.resource ? entryKey(entry.resource) : undefined;
      return key === undefined || entry.search?.mode === 'outcome' || !yielded.has(key);
    }),
  };
}

/** The error for a paging cursor that expired and could not be (or was already) restarted. */
function pagingCursorExpired(
  err: FhirHttpError,
  url: URL,
  page: number,
  resourceType: string,
  restarted: boolean,
): FhirHttpError {
  return new FhirHttpError({
    status: err.status,
    method: err.method,
    url,
    issues: err.issues,
    statusText: 'Gone',
    hint:
      `The EHR's paging cursor expired: page ${page} of the ${resourceType} search is gone ` +
      (restarted
        ? 'again after the search was restarted from its first page once. '
        : 'and the search cannot be restarted without passing on resources twice (too many, or some without an id). ') +
      'The EHR keeps paged search results for less time than reading them takes: raise limits.requestsPerSecond, or ask centre IT to keep search results (the paging cache) longer',
  });
}

function assertSearchBundle(
  body: unknown,
  where: { url: URL; page: number; resourceType: string },
): FhirBundle {
  const fail = (reason: string): never => {
    throw new MalformedFhirResponseError({ ...where, reason });
  };
  if (typeof body !== 'object' || body === null)
    return fail('the body is empty or not a JSON object');
  const bundle = body as Record<string, unknown>;
  if (bundle.resourceType === 'OperationOutcome') {
    const issues = parseOutcomeIssues(body);
    throw new MalformedFhirResponseError({
      ...where,
      reason: 'the EHR answered with an OperationOutcome instead of a Bundle',
      issues,
      ...(issues.some((i) => i.code === 'too-costly')
        ? {
            hint: 'The EHR found the search too costly: narrow it with pull.searches in the centre file (e.g. a category or code), or ask centre IT about its search limits',
          }
        : {}),
    });
  }
  if (bundle.resourceType !== 'Bundle')
    return fail(
      `expected a Bundle, got ${typeof bundle.resourceType === 'string' ? bundle.resourceType.slice(0, 40) : 'no resourceType'}`,
    );
  if (bundle.link !== undefined && !Array.isArray(bundle.link)) fail('Bundle.link is not an array');
  for (const [i, link] of ((bundle.link as unknown[] | undefined) ?? []).entries()) {
    const l = link as { relation?: unknown; url?: unknown } | null;
    if (typeof l?.relation !== 'string' || typeof l.url !== 'string')
      fail(`Bundle.link[${i}] lacks relation or url`);
  }
  if (bundle.entry !== undefined && !Array.isArray(bundle.entry))
    fail('Bundle.entry is not an array');
  for (const [i, entry] of ((bundle.entry as unknown[] | undefined) ?? []).entries()) {
    if (typeof entry !== 'object' || entry === null) fail(`Bundle.entry[${i}] is not an object`);
    const resource = (entry as { resource?: unknown }).resource;
    if (resource === undefined) continue;
    if (
      typeof resource !== 'object' ||
      resource === null ||
      typeof (resource as { resourceType?: unknown }).resourceType !== 'string'
    )
      fail(`Bundle.entry[${i}].resource has no resourceType`);
  }
  return body as FhirBundle;
}

function hintForStatus(
  status: number,
  reauthDone: boolean,
  method: string,
  url: URL,
  token: string | undefined,
  issues: readonly OutcomeIssue[] = [],
): string | undefined {
  // A search (GET [base]/Type?...) refused as a bad request: usually a parameter the EHR
  // wants or does not support, which the centre file can supply.
  const searched = /\/([A-Z][A-Za-z]+)$/.exec(url.pathname)?.[1];
  if (status === 400 && method === 'GET' && searched) {
    // The issues' free text is matched, never quoted (it may name a patient).
    const aboutCount = issues.some((i) =>
      [i.diagnostics, i.text, ...(i.expression ?? [])].some((t) => t?.includes('_count')),
    );
    if (aboutCount)
      return `The EHR refused the ${searched} search's page size (_count): lower pull.pageSize in the centre file (some EHRs allow less per type)`;
    return (
      `The EHR refused the ${searched} search: it may need a parameter lhn-bridge does not send, or not support one it sends (the OperationOutcome codes may say which)` +
      (searched === 'Observation'
        ? '; some EHRs need a category or code on Observation (Epic does): give them as pull.searches.Observation in the centre file'
        : `; give extra parameters as pull.searches.${searched} in the centre file`) +
      ', or lower pull.pageSize if the EHR limits _count'
    );
  }
  if (status === 401)
    return reauthDone
      ? 'The EHR rejected a freshly issued access token too: check that the client is enabled for this FHIR endpoint'
      : 'The EHR rejected the request as unauthenticated';
  // Sent without a token: a bulk file on storage (pre-signed URL), where scopes play no part.
  if ((status === 403 || status === 401) && token === undefined)
    return 'The file server refused a request sent without a token: a pre-signed storage URL (bulk export files) may have expired, which happens when the files are read long after the export finished; run the sync again for a fresh export, and ask centre IT how long export links stay valid';
  if (status === 403)
    return 'The EHR refused access: check the scopes granted to the client and any patient/data access policy';
  return undefined;
}

function lower(headers: Record<string, string> | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(headers ?? {})) out[k.toLowerCase()] = v;
  return out;
}

/** Reads at most `max` bytes of a body as text, cancelling the rest. */
async function readLimited(response: Response, max: number): Promise<string> {
  if (!response.body) return '';
  const reader = response.body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    chunks.push(value);
    size += value.byteLength;
    if (size >= max) {
      await reader.cancel();
      break;
    }
  }
  return new TextDecoder().decode(Buffer.concat(chunks).subarray(0, max));
}

/**
 * Wraps a response body so that (a) a pause longer than `idleMs` between chunks aborts the
 * request, and (b) `onEnd` runs once when the body ends, fails or is cancelled.
 */
function guardBody(
  response: Response,
  requestUrl: URL,
  idleMs: number,
  onEnd: () => Promise<void>,
  controller: AbortController,
): Response {
  let ended = false;
  const end = () => {
    if (ended) return;
    ended = true;
    void onEnd().catch(() => undefined);
  };
  if (!response.body) {
    end();
    if (!response.url) Object.defineProperty(response, 'url', { value: requestUrl.href });
    return response;
  }
  const reader = response.body.getReader();
  const body = new ReadableStream<Uint8Array>({
    async pull(ctrl) {
      const timer = setTimeout(
        () => controller.abort(new DOMException(BODY_STALLED, 'TimeoutError')),
        idleMs,
      );
      try {
        const { done, value } = await reader.read();
        if (done) {
          ctrl.close();
          end();
        } else ctrl.enqueue(value);
      } catch (err) {
        end();
        throw err;
      } finally {
        clearTimeout(timer);
      }
    },
    async cancel(reason) {
      end();
      await reader.cancel(reason);
    },
  });
  const wrapped = new Response(body, {
    status: response.status,
    statusText: response.statusText,
    headers: response.headers,
  });
  // The URL this answer came from (after redirects): relative links in it resolve against it.
  Object.defineProperty(wrapped, 'url', { value: response.url || requestUrl.href });
  return wrapped;
}
