// Errors of the FHIR access layer. They carry what an operator or a retry loop needs (status,
// parsed OperationOutcome issues, whether a retry may help) but never PHI: URLs keep their
// path and the *names* of query parameters only, because values such as `identifier=` or
// `patient=` can identify a person. Response bodies are never copied into a message.
import { STATUS_CODES } from 'node:http';

/**
 * One OperationOutcome issue, reduced to the fields an operator needs. Only `severity`, `code`
 * and the coded `details` go into messages (which reach run records, the dashboard and alert
 * webhooks); the free text (`details.text`, a coding's `display`, `diagnostics`) is EHR prose
 * that can name a patient, so it stays on the error object and is never formatted.
 */
export interface OutcomeIssue {
  severity: string;
  code: string;
  /** The codes of `details.coding`, as `system|code` (or `code`), comma-separated; never text. */
  details?: string;
  /** `details.text`, else the first coding's display: free text, never in a message. */
  text?: string;
  /** Free text from the server; kept on the error object, not in its message. */
  diagnostics?: string;
  expression?: string[];
}

/**
 * Whether a response's reason phrase is the standard one for its status ("Not Found"): only
 * then is it quoted. The phrase is free text the server picks, and some servers and gateways
 * put application messages there (Java's sendError), which may name a patient.
 */
function standardReason(status: number, text: string | undefined): boolean {
  if (!text) return false;
  const standard = STATUS_CODES[status];
  return standard !== undefined && standard.toLowerCase() === text.trim().toLowerCase();
}

/**
 * A coding's code as `system|code`, or undefined: each must be one printable token (FHIR codes
 * and system URIs have no spaces), else it is dropped, so that prose an EHR puts in a code
 * ("Patient Jane Roe not found") never reaches a message.
 */
function codingCode(coding: unknown): string | undefined {
  if (typeof coding !== 'object' || coding === null) return undefined;
  const { system, code } = coding as { system?: unknown; code?: unknown };
  if (typeof code !== 'string' || code.trim() === '') return undefined;
  const token = (value: string, max: number) =>
    value.length <= max && /^[\x21-\x7e]+$/.test(value) ? value : undefined;
  const c = token(code.trim(), 64);
  if (c === undefined) return undefined;
  const sys = typeof system === 'string' ? token(system.trim(), 120) : undefined;
  return sys ? `${sys}|${c}` : c;
}

/**
 * A URL safe to log: origin + path + query parameter names (values dropped).
 * `https://ehr/fhir/Observation?patient=123&_count=50` -> `https://ehr/fhir/Observation?patient=…&_count=…`.
 */
export function redactUrl(url: string | URL): string {
  let parsed: URL;
  try {
    parsed = typeof url === 'string' ? new URL(url) : url;
  } catch {
    return '(unparseable url)';
  }
  const names = [...new Set([...parsed.searchParams.keys()])];
  const query = names.length > 0 ? `?${names.map((n) => `${n}=…`).join('&')}` : '';
  return `${parsed.origin}${parsed.pathname}${query}`;
}

/** Parses an OperationOutcome-shaped value into issues; anything else yields []. */
export function parseOutcomeIssues(body: unknown): OutcomeIssue[] {
  if (typeof body !== 'object' || body === null) return [];
  const outcome = body as { resourceType?: unknown; issue?: unknown };
  if (outcome.resourceType !== 'OperationOutcome' || !Array.isArray(outcome.issue)) return [];
  return outcome.issue.flatMap((raw: unknown): OutcomeIssue[] => {
    if (typeof raw !== 'object' || raw === null) return [];
    const issue = raw as Record<string, any>;
    const codings: unknown[] = Array.isArray(issue.details?.coding) ? issue.details.coding : [];
    const codes = codings
      .map(codingCode)
      .filter((c): c is string => c !== undefined)
      .slice(0, 3);
    const details = codes.length > 0 ? codes.join(', ') : undefined;
    const first = codings[0] as { display?: unknown } | undefined;
    const text =
      typeof issue.details?.text === 'string'
        ? issue.details.text
        : typeof first?.display === 'string'
          ? first.display
          : undefined;
    const expression = Array.isArray(issue.expression)
      ? issue.expression.filter((e: unknown): e is string => typeof e === 'string')
      : undefined;
    return [
      {
        severity: typeof issue.severity === 'string' ? issue.severity : 'error',
        code: typeof issue.code === 'string' ? issue.code : 'unknown',
        ...(details !== undefined ? { details } : {}),
        ...(text !== undefined ? { text } : {}),
        ...(typeof issue.diagnostics === 'string' ? { diagnostics: issue.diagnostics } : {}),
        ...(expression && expression.length > 0 ? { expression } : {}),
      },
    ];
  });
}

/** Statuses worth retrying: timeouts, throttling and transient server failures. */
export const RETRYABLE_STATUSES: ReadonlySet<number> = new Set([408, 429, 500, 502, 503, 504]);

/** A non-2xx answer from the EHR. */
export class FhirHttpError extends Error {
  /** HTTP status code. */
  readonly status: number;
  /** HTTP method of the request. */
  readonly method: string;
  /** The request URL with query values removed (see redactUrl). */
  readonly url: string;
  /** Issues of an OperationOutcome body, if the server sent one. */
  readonly issues: OutcomeIssue[];
  /** True when retrying the same request may succeed (408/429/5xx). */
  readonly retryable: boolean;
  /** Seconds from a Retry-After header, after capping, when one was sent. */
  readonly retryAfterSeconds: number | undefined;
  /** The sentence for the person reading the message (also at the end of the message). */
  readonly hint: string | undefined;

  constructor(options: {
    status: number;
    method: string;
    url: string | URL;
    issues?: OutcomeIssue[];
    retryAfterSeconds?: number;
    statusText?: string;
    /** Extra sentence for the person reading the message (e.g. what a 401 means). */
    hint?: string;
  }) {
    const issues = options.issues ?? [];
    const url = redactUrl(options.url);
    const summary = summariseIssues(issues);
    super(
      `FHIR ${options.method} ${url} failed with HTTP ${options.status}` +
        (standardReason(options.status, options.statusText) ? ` ${options.statusText}` : '') +
        (summary ? ` (OperationOutcome: ${summary})` : '') +
        (options.hint ? `. ${options.hint}` : ''),
    );
    this.name = 'FhirHttpError';
    this.status = options.status;
    this.method = options.method;
    this.url = url;
    this.issues = issues;
    this.retryable = RETRYABLE_STATUSES.has(options.status);
    this.retryAfterSeconds = options.retryAfterSeconds;
    this.hint = options.hint;
  }
}

/** A request that never got an HTTP answer: connection reset, refused, DNS, timeout. */
export class FhirNetworkError extends Error {
  /** The low-level code, e.g. ECONNRESET, UND_ERR_SOCKET, or `timeout`. */
  readonly code: string;
  readonly method: string;
  readonly url: string;
  readonly retryable: boolean;

  constructor(options: {
    code: string;
    method: string;
    url: string | URL;
    retryable: boolean;
    detail?: string;
    cause?: unknown;
  }) {
    const url = redactUrl(options.url);
    super(
      `FHIR ${options.method} ${url} failed: ${options.code}` +
        (options.detail ? ` (${options.detail})` : ''),
      { cause: options.cause },
    );
    this.name = 'FhirNetworkError';
    this.code = options.code;
    this.method = options.method;
    this.url = url;
    this.retryable = options.retryable;
  }
}

/** What the refused URL was for; shown in logs and run records. */
export type OriginPurpose =
  'next-link' | 'bulk-status' | 'bulk-file' | 'bulk-error-file' | 'bulk-deleted-file' | 'request';

/**
 * What to do about a refused URL. Paging links and export status URLs on another origin
 * (`http://` for an https base, `localhost:8080`, an internal host name) almost always mean the
 * EHR builds its links from a wrong idea of its own address, as a FHIR server behind a
 * TLS-terminating proxy does when it is not told its public URL.
 */
function originRefusedHint(options: {
  origin: string;
  allowedOrigin: string;
  purpose: OriginPurpose;
}): string {
  if (options.purpose === 'next-link' || options.purpose === 'bulk-status') {
    const what = options.purpose === 'next-link' ? 'paging (next) links' : 'export status URLs';
    return (
      `The EHR builds its ${what} from a wrong base address (${options.origin} instead of ` +
      `${options.allowedOrigin}, the fhir.baseUrl in the centre file): ask centre IT to set the ` +
      "FHIR server's public base URL (HAPI FHIR: hapi.fhir.server_address) or, behind a reverse " +
      'proxy, to forward X-Forwarded-Host and X-Forwarded-Proto (and X-Forwarded-Port / ' +
      "X-Forwarded-Prefix where needed). The link is not followed: the token goes only to fhir.baseUrl's origin."
    );
  }
  if (TOKENLESS_PURPOSES.has(options.purpose))
    return (
      'Ask the EHR team why the server links to another host, or let it serve export files ' +
      'without a token (requiresAccessToken: false in the manifest).'
    );
  return 'Ask the EHR team why the server sends us to another host.';
}

const TOKENLESS_PURPOSES: ReadonlySet<OriginPurpose> = new Set<OriginPurpose>([
  'bulk-file',
  'bulk-error-file',
  'bulk-deleted-file',
]);

/** A URL on another origin than the one the access token was issued for. */
export class OriginRefusedError extends Error {
  /** Origin the URL pointed to (no path, no query). */
  readonly origin: string;
  /** Origin the token belongs to (the FHIR base URL's origin). */
  readonly allowedOrigin: string;
  readonly purpose: OriginPurpose;

  constructor(options: { origin: string; allowedOrigin: string; purpose: OriginPurpose }) {
    super(
      `refused to send the access token to ${options.origin} (${options.purpose}): ` +
        `the token was issued for ${options.allowedOrigin} only. ` +
        originRefusedHint(options),
    );
    this.name = 'OriginRefusedError';
    this.origin = options.origin;
    this.allowedOrigin = options.allowedOrigin;
    this.purpose = options.purpose;
  }
}

/**
 * A bulk file URL that is plain `http://` on a host that is not loopback: refused whether or
 * not the manifest asks for the token, because the file holds patient data and would cross
 * the network unencrypted. A kind of OriginRefusedError, so it is handled as one (not retried).
 */
export class PlainHttpRefusedError extends OriginRefusedError {
  constructor(options: { origin: string; allowedOrigin: string; purpose: OriginPurpose }) {
    super(options);
    this.name = 'PlainHttpRefusedError';
    this.message =
      `refused to download a ${options.purpose} from ${options.origin}: it is plain http:// on a ` +
      'host that is not loopback, so patient data would cross the network unencrypted (with or ' +
      'without the access token). Ask the EHR team to serve export files over https.';
  }
}

/**
 * A 2xx answer whose body is not what FHIR promises (bad JSON, not a Bundle...). When the
 * body was an OperationOutcome (a server explaining why it gave no results, with HTTP 200),
 * its issues are kept, and summarised in the message as FhirHttpError does.
 */
export class MalformedFhirResponseError extends Error {
  readonly url: string;
  /** 1-based page number for search results, when known. */
  readonly page: number | undefined;
  /** Issues of an OperationOutcome the server sent instead of the expected resource. */
  readonly issues: OutcomeIssue[];

  constructor(options: {
    url: string | URL;
    reason: string;
    page?: number;
    resourceType?: string;
    issues?: OutcomeIssue[];
    /** Extra sentence for the person reading the message. */
    hint?: string;
  }) {
    const where =
      options.page !== undefined
        ? `page ${options.page} of the ${options.resourceType ?? ''} search`.replace('  ', ' ')
        : 'response';
    const issues = options.issues ?? [];
    const summary = summariseIssues(issues);
    super(
      `malformed FHIR ${where} from ${redactUrl(options.url)}: ${options.reason}` +
        (summary ? ` (OperationOutcome: ${summary})` : '') +
        (options.hint ? `. ${options.hint}` : '') +
        ' (the body is not shown because it may contain patient data)',
    );
    this.name = 'MalformedFhirResponseError';
    this.url = redactUrl(options.url);
    this.page = options.page;
    this.issues = issues;
  }
}

/**
 * A search the EHR itself marked incomplete: an OperationOutcome entry in a searchset with an
 * issue of severity error or fatal, or code incomplete, too-costly or throttled ("some results
 * could not be returned"). Taking such an answer as complete would retract visits that still
 * exist, so the search fails. The message names the resource type, the page and the issues
 * (severity, code, coded details), never the query values or any free text.
 */
export class IncompleteSearchError extends Error {
  readonly url: string;
  readonly page: number;
  readonly resourceType: string;
  readonly issues: OutcomeIssue[];

  constructor(options: {
    url: string | URL;
    page: number;
    resourceType: string;
    issues: OutcomeIssue[];
  }) {
    const hint = options.issues.some((i) => i.code === 'too-costly')
      ? 'The EHR found the search too costly: narrow it with pull.searches in the centre file (e.g. a category or code), or ask centre IT about its search limits'
      : options.issues.some((i) => i.code === 'throttled')
        ? 'The EHR throttled the search: lower limits.requestsPerSecond or limits.maxConcurrentRequests in the centre file, or ask centre IT about its rate limits'
        : 'Ask centre IT to look the search up in the FHIR server log; the run fails so that nothing is retracted and the watermarks stay';
    super(
      `the EHR returned an incomplete ${options.resourceType} search (page ${options.page}, ` +
        `${redactUrl(options.url)}): OperationOutcome ${summariseIssues(options.issues)}. ${hint}`,
    );
    this.name = 'IncompleteSearchError';
    this.url = redactUrl(options.url);
    this.page = options.page;
    this.resourceType = options.resourceType;
    this.issues = options.issues;
  }
}

/** Issue severities and codes that mean a search answer is incomplete (not a mere notice). */
const INCOMPLETE_SEVERITIES: ReadonlySet<string> = new Set(['error', 'fatal']);
const INCOMPLETE_CODES: ReadonlySet<string> = new Set(['incomplete', 'too-costly', 'throttled']);

/** True when an OperationOutcome issue in a searchset means the results are incomplete. */
export function isIncompleteIssue(issue: OutcomeIssue): boolean {
  return INCOMPLETE_SEVERITIES.has(issue.severity) || INCOMPLETE_CODES.has(issue.code);
}

/** Issue codes of a search warning that mean results were left out (not already failing). */
const WITHHELD_CODES: ReadonlySet<string> = new Set(['suppressed', 'security', 'forbidden']);
/** Detail codes that say so: Epic's 4119, "Additional data may be present" (any system). */
const WITHHELD_DETAIL = /(^|[|,] ?)4119($|,)/;
/** Free text that says so; matched only, never quoted (it may name a patient). */
const WITHHELD_TEXT =
  /additional data may be present|withheld|suppressed|restricted|not (all|every)\b|(data|results?|resources?) (were |was )?(not returned|omitted|left out)|may be (incomplete|partial)/i;

/**
 * True when a warning issue in a searchset says the server left data out (Epic 4119
 * "Additional data may be present", a suppressed or restricted result): the search goes on,
 * but the visits built from it may be partial. Not "no results" or an ignored parameter.
 */
export function saysDataWithheld(issue: OutcomeIssue): boolean {
  if (issue.severity !== 'warning') return false;
  if (WITHHELD_CODES.has(issue.code)) return true;
  if (issue.details !== undefined && WITHHELD_DETAIL.test(issue.details)) return true;
  return [issue.text, issue.diagnostics].some((t) => t !== undefined && WITHHELD_TEXT.test(t));
}

/**
 * `severity code: system|code` of one issue. Only coded values: `details.text`, a coding's
 * display and `diagnostics` are free text that can name a patient, so they stay out.
 */
export function describeIssue(issue: OutcomeIssue): string {
  return `${issue.severity} ${issue.code}${issue.details ? `: ${truncate(issue.details, 200)}` : ''}`;
}

/** What a message says when it leaves an outcome's free text out. */
export const OUTCOME_TEXT_LEFT_OUT =
  "the outcome's free text is left out because it may contain patient data; the EHR's server log has the full OperationOutcome";

/** `severity code: system|code` of the first three issues, and a note when free text was dropped. */
export function summariseIssues(issues: readonly OutcomeIssue[]): string {
  const shown = issues.slice(0, 3);
  const dropped = shown.some((i) => i.text !== undefined || i.diagnostics !== undefined);
  return shown.map(describeIssue).join('; ') + (dropped ? ` [${OUTCOME_TEXT_LEFT_OUT}]` : '');
}

function truncate(text: string, max: number): string {
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}
