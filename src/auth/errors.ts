// Auth failures are the first thing centre IT meets, and an opaque `invalid_client` costs
// them days. Every SMART failure becomes one SmartAuthError that names the step, the
// server's own words (error / error_description, never a token) and a hint saying what to
// check, built here so the wording is the same in logs, the onboarding check and the API.

/** Where in the SMART flow a failure happened. */
export type SmartAuthStep = 'discovery' | 'token' | 'scopes' | 'key';

export interface SmartAuthErrorInit {
  step: SmartAuthStep;
  /** OAuth error code (invalid_client, invalid_scope...) or our own (unreachable, tls...). */
  code: string;
  status?: number;
  /** The server's error_description (or our short description when there is none). */
  description?: string;
  /** What centre IT should check or do. */
  hint: string;
  /** True when trying again later may succeed (network, 429, 5xx). */
  retryable?: boolean;
  /** The server's Retry-After header (raw), on a 429 or 5xx. */
  retryAfter?: string | undefined;
  cause?: unknown;
}

/** A SMART Backend Services failure with an actionable hint. */
export class SmartAuthError extends Error {
  readonly step: SmartAuthStep;
  readonly code: string;
  readonly status: number | undefined;
  readonly description: string | undefined;
  readonly hint: string;
  readonly retryable: boolean;
  /**
   * Retry-After (raw header value) of a 429/5xx answer: the FHIR client waits this long
   * (capped) before retrying a data request whose token could not be fetched.
   */
  readonly retryAfter: string | undefined;

  constructor(init: SmartAuthErrorInit) {
    const status = init.status !== undefined ? ` (HTTP ${init.status})` : '';
    const description = init.description ? `: ${init.description}` : '';
    super(`SMART ${init.step} failed: ${init.code}${status}${description}. ${init.hint}`, {
      cause: init.cause,
    });
    this.name = 'SmartAuthError';
    this.step = init.step;
    this.code = init.code;
    this.status = init.status;
    this.description = init.description;
    this.hint = init.hint;
    this.retryable = init.retryable ?? false;
    this.retryAfter = init.retryAfter;
  }
}

/** TLS error codes from Node/OpenSSL and what they usually mean. */
const TLS_CODES: Record<string, string> = {
  CERT_HAS_EXPIRED: "the server's certificate has expired",
  CERT_NOT_YET_VALID: "the server's certificate is not valid yet (check this machine's clock)",
  DEPTH_ZERO_SELF_SIGNED_CERT: 'the server uses a self-signed certificate',
  SELF_SIGNED_CERT_IN_CHAIN: 'the certificate chain contains a self-signed (private) CA',
  UNABLE_TO_VERIFY_LEAF_SIGNATURE:
    'the server did not send its intermediate certificates, or the CA is unknown',
  UNABLE_TO_GET_ISSUER_CERT_LOCALLY: 'the issuing CA is not trusted on this machine',
  UNABLE_TO_GET_ISSUER_CERT: 'the issuing CA certificate could not be found',
  ERR_TLS_CERT_ALTNAME_INVALID: "the certificate does not name this host (check the URL's host)",
  CERT_REVOKED: "the server's certificate has been revoked",
  ERR_SSL_WRONG_VERSION_NUMBER: 'the port does not speak TLS (http vs https mix-up?)',
  EPROTO: 'the TLS handshake failed (protocol mismatch or a proxy in the way)',
};

const NETWORK_CODES: Record<string, string> = {
  ENOTFOUND: 'the host name does not resolve (DNS)',
  EAI_AGAIN: 'DNS lookup failed temporarily',
  ECONNREFUSED: 'nothing accepts connections at that host and port',
  ECONNRESET: 'the connection was reset (firewall or proxy?)',
  ETIMEDOUT: 'the connection timed out (firewall, VPN or allow-list?)',
  EHOSTUNREACH: 'the host is unreachable from this network',
  ENETUNREACH: 'the network is unreachable from this machine',
  UND_ERR_CONNECT_TIMEOUT: 'the connection timed out (firewall, VPN or allow-list?)',
  UND_ERR_SOCKET: 'the connection closed unexpectedly',
  TimeoutError: 'no answer within the time limit',
  PROXY_REFUSED: 'the outbound proxy refused the tunnel (HTTPS_PROXY: credentials? host allowed?)',
  PROXY_UNAVAILABLE: 'the outbound proxy could not reach the host',
};

/** Finds the first Node error code in an error's cause chain (fetch wraps them). */
export function findErrorCode(err: unknown): string | undefined {
  let current: unknown = err;
  for (let depth = 0; depth < 6 && current; depth++) {
    if (typeof current === 'object') {
      const code = (current as { code?: unknown }).code;
      if (typeof code === 'string' && code.length > 0) return code;
      const name = (current as { name?: unknown }).name;
      if (name === 'TimeoutError' || name === 'AbortError') return 'TimeoutError';
      current = (current as { cause?: unknown }).cause;
    } else break;
  }
  return undefined;
}

/** True for an error code that names a certificate / TLS problem. */
export function isTlsErrorCode(code: string | undefined): boolean {
  if (!code) return false;
  return (
    code in TLS_CODES ||
    code.startsWith('ERR_TLS') ||
    code.startsWith('ERR_SSL') ||
    code.includes('CERT')
  );
}

/**
 * Turns a network-level failure (no HTTP response at all) into a SmartAuthError naming the
 * error code and what to check. `what` describes the URL's role, e.g. "SMART discovery".
 */
export function networkFailure(
  step: SmartAuthStep,
  url: string,
  what: string,
  err: unknown,
): SmartAuthError {
  const code = findErrorCode(err) ?? 'network_error';
  let host = url;
  try {
    host = new URL(url).host;
  } catch {
    // keep the raw string
  }
  if (isTlsErrorCode(code)) {
    const meaning = TLS_CODES[code] ?? 'the TLS connection could not be verified';
    return new SmartAuthError({
      step,
      code: 'tls_error',
      description: `${code}: ${meaning}`,
      hint:
        `TLS failure reaching ${what} at ${host} (${code}). Ask centre IT to check the ` +
        `server certificate (expiry, host name, full chain). If the EHR uses a private CA, ` +
        `give this service its CA bundle with NODE_EXTRA_CA_CERTS; never disable verification.`,
      retryable: false,
      cause: err,
    });
  }
  if (code === 'ERR_INVALID_URL')
    return new SmartAuthError({
      step,
      code: 'invalid_url',
      description: `${code}: not a valid absolute URL`,
      hint: `The URL of ${what} (${url}) is not a valid absolute URL: check fhir.baseUrl and fhir.tokenUrl in the centre file, or ask centre IT to correct the EHR's smart-configuration.`,
      retryable: false,
      cause: err,
    });
  const meaning = NETWORK_CODES[code] ?? 'the request failed before any HTTP response';
  return new SmartAuthError({
    step,
    code: code === 'TimeoutError' ? 'timeout' : 'unreachable',
    description: `${code}: ${meaning}`,
    hint:
      `Cannot reach ${what} at ${host} (${code}). Check the URL in the centre file, DNS, ` +
      `that this machine's address is on the EHR's allow-list, and any VPN or proxy in between.`,
    retryable: true,
    cause: err,
  });
}

/**
 * The `error` and `error_description` parameters of a `WWW-Authenticate` header
 * (`Bearer error="invalid_client", error_description="unknown kid"`, RFC 6750 §3), which some
 * authorization servers send on a 401 with an empty body.
 */
export function wwwAuthenticateError(header: string | null | undefined): {
  error?: string;
  description?: string;
} {
  if (!header) return {};
  const param = (name: string): string | undefined => {
    const m = new RegExp(
      `(?:^|[\\s,])${name}\\s*=\\s*(?:"((?:[^"\\\\]|\\\\.)*)"|([^\\s,]+))`,
      'i',
    ).exec(header);
    if (!m) return undefined;
    const value = m[1] !== undefined ? m[1].replace(/\\(.)/g, '$1') : m[2];
    return value || undefined;
  };
  const error = param('error');
  const description = param('error_description');
  return { ...(error ? { error } : {}), ...(description ? { description } : {}) };
}

/** Anything shaped like a JWT (a token or our assertion echoed back), for redaction. */
const JWT_LIKE = /eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*/g;

/**
 * A server-supplied text (error, error_description) made safe for messages and logs: JWT-like
 * strings (an echoed assertion or token) and `secret` are replaced, and the length is capped.
 */
export function redactServerText(text: string, secret?: string, max = 500): string {
  let out = secret ? text.split(secret).join('[redacted]') : text;
  out = out.replace(JWT_LIKE, '[redacted]');
  return out.slice(0, max);
}

/** Words in an error_description that point at the assertion's time claims. */
const TIME_WORDS = /\b(exp|iat|nbf|expired|not yet valid|future|clock|time|skew)\b/i;

export interface TokenErrorContext {
  status: number;
  error: string | undefined;
  description: string | undefined;
  tokenUrl: string;
  /** Where the token URL was found, for people ("fhir.tokenUrl in the centre file"...). */
  tokenUrlSource?: string;
  clientId: string;
  kid: string;
  alg: string;
  requestedScopes: string[];
  /** Scopes the server's smart-configuration lists, if it lists any. */
  supportedScopes: string[] | undefined;
  /** Server Date minus our clock, in ms, when the response carried a Date header. */
  clockSkewMs: number | undefined;
  retryAfter?: string | undefined;
}

/** Formats a skew for people: "ours is 10 min behind the server". */
export function describeSkew(skewMs: number): string {
  const abs = Math.abs(skewMs);
  const amount = abs >= 120_000 ? `${Math.round(abs / 60_000)} min` : `${Math.round(abs / 1000)} s`;
  return `this machine's clock is ${amount} ${skewMs > 0 ? 'behind' : 'ahead of'} the EHR's`;
}

/** The allowed clock difference before we call it skew. */
export const CLOCK_SKEW_TOLERANCE_MS = 60_000;

/** Builds the SmartAuthError for a failed token request. */
export function tokenFailure(ctx: TokenErrorContext): SmartAuthError {
  const code = ctx.error ?? `http_${ctx.status}`;
  const skewed =
    ctx.clockSkewMs !== undefined && Math.abs(ctx.clockSkewMs) > CLOCK_SKEW_TOLERANCE_MS;
  const skewNote = skewed ? ` Clock skew: ${describeSkew(ctx.clockSkewMs!)}; fix NTP here.` : '';
  const timeMentioned = ctx.description !== undefined && TIME_WORDS.test(ctx.description);
  const base = { step: 'token' as const, code, status: ctx.status, description: ctx.description };
  // The token URL, and where it came from, so the hint says which setting or document to fix.
  const tokenAt = ctx.tokenUrlSource
    ? `${ctx.tokenUrl} (from ${ctx.tokenUrlSource})`
    : ctx.tokenUrl;

  switch (code) {
    case 'unauthorized_client':
      // The EHR authenticated the client (key and client id are fine) but does not let it
      // use this grant here: a permission on the EHR side, not a key-registration problem.
      return new SmartAuthError({
        ...base,
        hint:
          `The EHR accepted the key but does not let client "${ctx.clientId}" use the client_credentials grant (SMART Backend Services) here. ` +
          `Ask centre IT to enable the system (backend) account of this client for this tenant/domain and to allow the client_credentials grant; the key and kid need no change.${skewNote}`,
      });
    case 'invalid_client':
    case 'invalid_grant': {
      const checks: string[] = [];
      if (skewed || timeMentioned)
        checks.push(
          skewed
            ? `clock skew (${describeSkew(ctx.clockSkewMs!)}: the assertion's iat/exp look wrong to the EHR; fix NTP on this machine)`
            : `clock skew? The EHR mentions the assertion's time claims; compare this machine's clock with the EHR's (NTP)`,
        );
      checks.push(
        `is the public key with kid "${ctx.kid}" (${ctx.alg}) registered for client id "${ctx.clientId}"? ` +
          `Give the EHR our JWKS (\`lhn-bridge keys jwks\`) or JWKS URL`,
        `is the client id "${ctx.clientId}" exactly what the EHR issued (and approved/enabled)?`,
        `does the EHR expect the token URL ${tokenAt} as the assertion audience?`,
      );
      if (!skewed && !timeMentioned)
        checks.push(`clock skew? Compare this machine's clock with the EHR's (NTP)`);
      return new SmartAuthError({
        ...base,
        hint: `The EHR rejected our client credentials. Check: ${checks.map((c, i) => `(${i + 1}) ${c}`).join('; ')}.`,
      });
    }
    case 'invalid_scope': {
      const notListed = ctx.supportedScopes
        ? ctx.requestedScopes.filter((s) => !ctx.supportedScopes!.includes(s))
        : [];
      const supported = ctx.supportedScopes
        ? ` The EHR's smart-configuration lists: ${ctx.supportedScopes.join(' ') || '(none)'}.`
        : '';
      const unlisted =
        notListed.length > 0 ? ` Not listed by the EHR: ${notListed.join(' ')}.` : '';
      return new SmartAuthError({
        ...base,
        step: 'scopes',
        hint:
          `The EHR refused the scopes asked for: ${ctx.requestedScopes.join(' ')}.${supported}${unlisted} ` +
          `Ask centre IT to grant these scopes to client "${ctx.clientId}", or change auth.scopes ` +
          `in the centre file (v1 ".read" vs v2 ".rs" forms, if the EHR supports only one).`,
      });
    }
    case 'unsupported_grant_type':
      return new SmartAuthError({
        ...base,
        hint: `The EHR does not accept the client_credentials grant at ${tokenAt}: ask centre IT to enable SMART Backend Services for client "${ctx.clientId}", or check fhir.tokenUrl.${skewNote}`,
      });
    case 'invalid_request':
      return new SmartAuthError({
        ...base,
        hint: `The EHR found the token request malformed; check the token URL ${tokenAt} and that the EHR supports private_key_jwt with ${ctx.alg}.${skewNote}`,
      });
    default:
      break;
  }
  if (ctx.status === 429 || ctx.status >= 500)
    return new SmartAuthError({
      ...base,
      code: ctx.error ?? (ctx.status === 429 ? 'rate_limited' : 'server_error'),
      hint: `The EHR's token endpoint is unavailable or busy (HTTP ${ctx.status}${ctx.retryAfter ? `, Retry-After ${ctx.retryAfter}` : ''}); this is retried later. If it persists, ask centre IT about the authorization server.`,
      retryable: true,
      retryAfter: ctx.retryAfter,
    });
  if (ctx.status === 404 || ctx.status === 405)
    return new SmartAuthError({
      ...base,
      hint: `No token endpoint answers at ${tokenAt}; check fhir.tokenUrl or the EHR's smart-configuration.`,
    });
  return new SmartAuthError({
    ...base,
    hint: `Unexpected answer from the token endpoint ${tokenAt}.${skewNote} Ask centre IT to look up this request in the authorization server's log (client id "${ctx.clientId}").`,
  });
}
