// SMART Backend Services client for one centre: discovers the token endpoint, signs a
// short-lived client assertion (private_key_jwt) and trades it for an access token with the
// client_credentials grant. Tokens are cached until shortly before they expire, concurrent
// callers share one refresh, and the FHIR layer calls invalidate() on a 401 to force one
// fresh token. When the EHR's Date header shows our clock is off by more than a few seconds,
// assertions are signed with the EHR's time (iat/exp), so a drifting clock does not stop
// every sync until NTP is fixed. Failures become SmartAuthError with a hint centre IT can
// act on.
import { randomUUID } from 'node:crypto';
import { SignJWT } from 'jose';
import { isLoopbackHost, type CentreConfig } from '../config/centre.js';
import { silentLogger, type Logger } from '../util/logger.js';
import {
  describeSkew,
  networkFailure,
  redactServerText,
  SmartAuthError,
  tokenFailure,
  wwwAuthenticateError,
} from './errors.js';
import { KeyFileError, loadPrivateKey, SIGNING_ALGS, type LoadedPrivateKey } from './keys.js';
import { findMissingScopes, splitScopes } from './scopes.js';

/** The parts of `.well-known/smart-configuration` the bridge uses. */
export interface SmartConfiguration {
  token_endpoint: string;
  token_endpoint_auth_methods_supported?: string[];
  token_endpoint_auth_signing_alg_values_supported?: string[];
  scopes_supported?: string[];
  grant_types_supported?: string[];
  capabilities?: string[];
  [key: string]: unknown;
}

/** An access token and what it may be used for. */
export interface AccessToken {
  token: string;
  /** Epoch ms when the server says it expires (our clock). */
  expiresAt: number;
  /** Scopes granted (as the server reported them, or as asked when it did not say). */
  scopes: string[];
  /** Asked-for scopes no granted scope covers (empty when everything was granted). */
  missingScopes: string[];
  /** Origin of the FHIR base URL: the only origin this token may be sent to. */
  origin: string;
}

/** The SMART client for one centre. */
export interface SmartAuth {
  /** Fetches (once, then cached) the EHR's SMART configuration. */
  discover(): Promise<SmartConfiguration>;
  /** A valid access token: cached, or fetched (one request however many callers wait). */
  getAccessToken(): Promise<AccessToken>;
  /** Drops `token` from the cache if it is the current one (call on a 401, then retry once). */
  invalidate(token: string): void;
  /** The token endpoint in use (after discovery or from the centre file). */
  readonly tokenUrl: string | undefined;
  /** Where tokenUrl came from (for messages: which document to check). */
  readonly tokenUrlSource: TokenUrlSource | undefined;
  /** Server clock minus ours (ms) from the last response with a Date header, if any. */
  readonly clockSkewMs: number | undefined;
}

/** Where the token endpoint was found. */
export type TokenUrlSource = 'centre-file' | 'smart-configuration' | 'capability-statement';

/** Names a TokenUrlSource for people: "from the CapabilityStatement (metadata)". */
export function describeTokenUrlSource(source: TokenUrlSource): string {
  switch (source) {
    case 'centre-file':
      return 'fhir.tokenUrl in the centre file';
    case 'smart-configuration':
      return '.well-known/smart-configuration';
    case 'capability-statement':
      return "the CapabilityStatement's oauth-uris extension (the EHR has no .well-known/smart-configuration)";
  }
}

/** The SMART 1.0 extension on CapabilityStatement.rest.security that names OAuth endpoints. */
export const OAUTH_URIS_EXTENSION =
  'http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris';

/** The `token` URI of a CapabilityStatement's oauth-uris extension, if any. */
export function oauthTokenUri(statement: unknown): string | undefined {
  if (typeof statement !== 'object' || statement === null) return undefined;
  const { resourceType, rest } = statement as { resourceType?: unknown; rest?: unknown };
  if (resourceType !== 'CapabilityStatement' || !Array.isArray(rest)) return undefined;
  for (const entry of rest as { security?: { extension?: unknown } }[]) {
    const extensions = entry?.security?.extension;
    if (!Array.isArray(extensions)) continue;
    for (const ext of extensions as { url?: unknown; extension?: unknown }[]) {
      if (ext?.url !== OAUTH_URIS_EXTENSION || !Array.isArray(ext.extension)) continue;
      for (const inner of ext.extension as { url?: unknown; valueUri?: unknown }[])
        if (inner?.url === 'token' && typeof inner.valueUri === 'string') return inner.valueUri;
    }
  }
  return undefined;
}

/** `ref` resolved against `base`, when that gives an http(s) URL. */
function absoluteHttpUrl(ref: string, base: string): string | undefined {
  try {
    const url = new URL(ref, base);
    return url.protocol === 'https:' || url.protocol === 'http:' ? url.href : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Refuses a discovered token endpoint on plain http to a host other than loopback, as the
 * centre file refuses such a fhir.tokenUrl: the client assertion (and the token that comes
 * back) must not cross the network unencrypted. `document` is where the URL was found.
 */
function refusePlainHttpTokenEndpoint(endpoint: string, document: string): void {
  const url = new URL(endpoint);
  if (url.protocol === 'https:' || isLoopbackHost(url.hostname)) return;
  throw new SmartAuthError({
    step: 'discovery',
    code: 'insecure_token_endpoint',
    description: 'the token endpoint is plain http on a non-loopback host',
    hint: `The EHR names a plain-http token endpoint (${endpoint}); ask centre IT for its https URL, or set fhir.tokenUrl. It was found in ${document}; lhn-bridge never sends a client assertion over plain http (http is allowed only for localhost / 127.0.0.1 / ::1).`,
  });
}

export interface CreateSmartAuthOptions {
  centre: CentreConfig;
  logger?: Logger;
  fetch?: typeof fetch;
  /** Our clock (epoch ms); tests skew it. */
  now?: () => number;
  /** Per-request timeout for discovery and token requests (default 30 s). */
  timeoutMs?: number;
  /** Refresh this long before expiry, at most (default 60 s; capped to a fifth of the lifetime). */
  refreshMarginMs?: number;
  /** Assumed lifetime when the server omits expires_in (default 300 s). */
  defaultLifetimeSeconds?: number;
}

/** How long our client assertions live: under the 5 minutes SMART allows. */
export const ASSERTION_LIFETIME_SECONDS = 240;
/**
 * A measured skew (EHR Date minus our clock) beyond which assertions are signed with the
 * EHR's time. The Date header has one-second resolution, so smaller differences are noise.
 */
export const CLOCK_CORRECTION_THRESHOLD_MS = 5_000;
const CLIENT_ASSERTION_TYPE = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer';

interface CachedToken {
  value: AccessToken;
  refreshAt: number;
}

/** Creates the SMART Backend Services client for one centre. */
export function createSmartAuth(options: CreateSmartAuthOptions): SmartAuth {
  const { centre } = options;
  const logger = (options.logger ?? silentLogger).child({ centreId: centre.id, component: 'auth' });
  const doFetch = options.fetch ?? globalThis.fetch;
  const now = options.now ?? Date.now;
  const timeoutMs = options.timeoutMs ?? 30_000;
  const maxMarginMs = options.refreshMarginMs ?? 60_000;
  const defaultLifetime = options.defaultLifetimeSeconds ?? 300;
  const baseUrl = centre.fhir.baseUrl.replace(/\/+$/, '');
  const origin = new URL(baseUrl).origin;
  const requestedScopes = centre.auth.scopes;

  let discovered: Promise<SmartConfiguration> | undefined;
  let configuration: SmartConfiguration | undefined;
  let key: Promise<LoadedPrivateKey> | undefined;
  let cached: CachedToken | undefined;
  let inflight: Promise<AccessToken> | undefined;
  let tokenUrl: string | undefined = centre.fhir.tokenUrl;
  let tokenUrlSource: TokenUrlSource | undefined = centre.fhir.tokenUrl ? 'centre-file' : undefined;
  let clockSkewMs: number | undefined;
  // The correction last warned about, so a steady skew is logged once, not per token.
  let warnedCorrectionMs = 0;

  function noteServerDate(res: Response): void {
    const date = res.headers.get('date');
    if (!date) return;
    const server = Date.parse(date);
    if (Number.isNaN(server)) return;
    // Date has one-second resolution; anything within a second is no skew.
    const diff = server - now();
    clockSkewMs = Math.abs(diff) < 1000 ? 0 : diff;
  }

  /** The correction (ms) to add to our clock when signing: the skew, when it is real. */
  function assertionCorrectionMs(): number {
    const skew = clockSkewMs ?? 0;
    const correction = Math.abs(skew) > CLOCK_CORRECTION_THRESHOLD_MS ? skew : 0;
    if (Math.abs(correction - warnedCorrectionMs) > CLOCK_CORRECTION_THRESHOLD_MS) {
      warnedCorrectionMs = correction;
      if (correction !== 0)
        logger.warn(
          { clockSkewMs: correction },
          `clock skew: ${describeSkew(correction)}; signing client assertions with the EHR's time until NTP is fixed on this machine`,
        );
      else logger.info("clock skew gone; signing client assertions with this machine's clock");
    }
    return correction;
  }

  async function fetchDiscovery(): Promise<{
    config: SmartConfiguration;
    source: TokenUrlSource;
  }> {
    const url = `${baseUrl}/.well-known/smart-configuration`;
    let res: Response;
    try {
      res = await doFetch(url, {
        headers: { accept: 'application/json' },
        signal: AbortSignal.timeout(timeoutMs),
      });
    } catch (err) {
      throw networkFailure('discovery', url, 'SMART discovery', err);
    }
    noteServerDate(res);
    if (!res.ok) {
      await res.body?.cancel();
      if (res.status === 404 && !centre.fhir.tokenUrl) {
        // SMART App Launch 1.0 servers may name the token endpoint only in their
        // CapabilityStatement (rest.security oauth-uris extension).
        const fromMetadata = await tokenEndpointFromCapabilities();
        if (fromMetadata)
          return { config: { token_endpoint: fromMetadata }, source: 'capability-statement' };
      }
      throw new SmartAuthError({
        step: 'discovery',
        code: res.status === 404 ? 'not_found' : `http_${res.status}`,
        status: res.status,
        hint:
          res.status === 404
            ? `The EHR publishes no ${url}${centre.fhir.tokenUrl ? '' : `, and its CapabilityStatement (${baseUrl}/metadata) names no token endpoint (SMART oauth-uris extension)`}. Check fhir.baseUrl (it must be the FHIR base, e.g. ending in /R4 or /api/FHIR/R4), or ask centre IT for the token endpoint and set fhir.tokenUrl.`
            : `SMART discovery at ${url} answered HTTP ${res.status}; check fhir.baseUrl and ask centre IT whether the FHIR server is up.`,
        retryable: res.status === 429 || res.status >= 500,
        retryAfter: res.headers.get('retry-after') ?? undefined,
      });
    }
    let body: unknown;
    try {
      body = await res.json();
    } catch {
      throw new SmartAuthError({
        step: 'discovery',
        code: 'invalid_configuration',
        status: res.status,
        hint: `${url} did not return JSON; fhir.baseUrl may point at a web page or a proxy login, not the FHIR base.`,
      });
    }
    const config = body as Partial<SmartConfiguration> | null;
    if (
      typeof config !== 'object' ||
      config === null ||
      (typeof config.token_endpoint !== 'string' && !centre.fhir.tokenUrl)
    ) {
      throw new SmartAuthError({
        step: 'discovery',
        code: 'invalid_configuration',
        status: res.status,
        hint: `${url} has no token_endpoint; ask centre IT whether SMART Backend Services is enabled, or set fhir.tokenUrl.`,
      });
    }
    if (centre.fhir.tokenUrl)
      return { config: { ...config, token_endpoint: centre.fhir.tokenUrl }, source: 'centre-file' };
    // A relative token_endpoint is relative to the document that names it (RFC 3986).
    const endpoint = absoluteHttpUrl(config.token_endpoint as string, url);
    if (!endpoint)
      throw new SmartAuthError({
        step: 'discovery',
        code: 'invalid_configuration',
        status: res.status,
        description: 'token_endpoint is not an http(s) URL',
        hint: `${url} names a token_endpoint that is not a usable URL; ask centre IT to correct the smart-configuration, or set fhir.tokenUrl.`,
      });
    refusePlainHttpTokenEndpoint(endpoint, url);
    return { config: { ...config, token_endpoint: endpoint }, source: 'smart-configuration' };
  }

  /** The token URL of the CapabilityStatement's oauth-uris extension, if it names one. */
  async function tokenEndpointFromCapabilities(): Promise<string | undefined> {
    const url = `${baseUrl}/metadata`;
    let endpoint: string | undefined;
    try {
      const res = await doFetch(url, {
        headers: { accept: 'application/fhir+json, application/json' },
        signal: AbortSignal.timeout(timeoutMs),
      });
      if (!res.ok) {
        await res.body?.cancel();
        return undefined;
      }
      noteServerDate(res);
      const token = oauthTokenUri(await res.json());
      endpoint = token === undefined ? undefined : absoluteHttpUrl(token, url);
    } catch {
      return undefined; // not reachable or not JSON: report the missing smart-configuration
    }
    if (endpoint) refusePlainHttpTokenEndpoint(endpoint, `the CapabilityStatement (${url})`);
    return endpoint;
  }

  function discover(): Promise<SmartConfiguration> {
    discovered ??= fetchDiscovery().then(
      ({ config, source }) => {
        configuration = config;
        tokenUrl = config.token_endpoint;
        tokenUrlSource = source;
        if (source === 'capability-statement')
          logger.info(
            { tokenUrl: config.token_endpoint },
            'no .well-known/smart-configuration; using the token endpoint of the CapabilityStatement',
          );
        return config;
      },
      (err: unknown) => {
        discovered = undefined; // let the next call try again
        throw err;
      },
    );
    return discovered;
  }

  /** The token endpoint: discovery, unless the centre file names it (then discovery is best effort). */
  async function resolveTokenUrl(): Promise<string> {
    if (configuration) return configuration.token_endpoint;
    if (centre.fhir.tokenUrl) {
      try {
        await discover();
      } catch (err) {
        logger.warn(
          { code: (err as SmartAuthError).code },
          'SMART discovery failed; using fhir.tokenUrl from the centre file',
        );
      }
      return centre.fhir.tokenUrl;
    }
    return (await discover()).token_endpoint;
  }

  function checkServerSupport(): void {
    if (!configuration) return;
    const algs = configuration.token_endpoint_auth_signing_alg_values_supported;
    if (Array.isArray(algs) && algs.length > 0 && !algs.includes(centre.auth.alg)) {
      throw new SmartAuthError({
        step: 'key',
        code: 'unsupported_alg',
        description: `the EHR supports ${algs.join(', ')}; the centre key is ${centre.auth.alg}`,
        hint: unsupportedAlgHint(centre.id, algs),
      });
    }
    const methods = configuration.token_endpoint_auth_methods_supported;
    if (Array.isArray(methods) && methods.length > 0 && !methods.includes('private_key_jwt')) {
      throw new SmartAuthError({
        step: 'discovery',
        code: 'unsupported_auth_method',
        description: `the EHR lists token_endpoint_auth_methods_supported: ${methods.join(', ')}`,
        hint: 'The EHR does not advertise private_key_jwt (SMART Backend Services); ask centre IT to enable backend services for this client.',
      });
    }
  }

  async function loadKey(): Promise<LoadedPrivateKey> {
    key ??= loadPrivateKey(centre.auth.privateKeyFile, centre.auth.alg, { logger }).catch(
      (err: unknown) => {
        key = undefined;
        const reason = err instanceof KeyFileError ? err.message : (err as Error).message;
        throw new SmartAuthError({
          step: 'key',
          code: 'key_unusable',
          description: reason,
          hint: keyUnusableHint(centre),
          cause: err,
        });
      },
    );
    return key;
  }

  /**
   * Signs the client assertion. iat/exp use the EHR's time (our clock plus `correctionMs`),
   * so exp is never more than ASSERTION_LIFETIME_SECONDS (< 5 min) ahead of the EHR's clock.
   */
  async function signAssertion(
    audience: string,
    signingKey: LoadedPrivateKey,
    correctionMs: number,
  ): Promise<string> {
    const issuedAt = Math.floor((now() + correctionMs) / 1000);
    const header: { alg: string; kid: string; typ: string; jku?: string } = {
      alg: centre.auth.alg,
      kid: centre.auth.kid,
      typ: 'JWT',
    };
    if (centre.auth.jku) header.jku = centre.auth.jku;
    return new SignJWT({})
      .setProtectedHeader(header)
      .setIssuer(centre.auth.clientId)
      .setSubject(centre.auth.clientId)
      .setAudience(audience)
      .setIssuedAt(issuedAt)
      .setExpirationTime(issuedAt + ASSERTION_LIFETIME_SECONDS)
      .setJti(randomUUID())
      .sign(signingKey.key);
  }

  async function requestToken(): Promise<AccessToken> {
    let signedWith = 0;
    try {
      return await requestTokenOnce((correction) => (signedWith = correction));
    } catch (err) {
      // The first Date header may come with the refusal itself (no discovery answer before
      // it): when that reveals a skew the assertion did not allow for, sign again, once.
      const rejected =
        err instanceof SmartAuthError &&
        err.step === 'token' &&
        (err.code === 'invalid_client' || err.code === 'invalid_grant');
      if (
        !rejected ||
        Math.abs(assertionCorrectionMs() - signedWith) <= CLOCK_CORRECTION_THRESHOLD_MS
      )
        throw err;
      logger.info(
        'the token request was refused with a clock skew not yet allowed for; signing again with the EHR time',
      );
      return requestTokenOnce(() => undefined);
    }
  }

  /** One token request; `onSigned` learns the clock correction the assertion used. */
  async function requestTokenOnce(onSigned: (correctionMs: number) => void): Promise<AccessToken> {
    const url = await resolveTokenUrl();
    checkServerSupport();
    const signingKey = await loadKey();
    if (signingKey.kid !== centre.auth.kid)
      logger.warn(
        { fileKid: signingKey.kid, centreKid: centre.auth.kid },
        'the key file names a different kid than auth.kid; the EHR looks keys up by auth.kid',
      );
    // After discovery, whose Date header is the first measure of the EHR's clock.
    const correctionMs = assertionCorrectionMs();
    onSigned(correctionMs);
    const assertion = await signAssertion(url, signingKey, correctionMs);
    const form = new URLSearchParams({
      grant_type: 'client_credentials',
      scope: requestedScopes.join(' '),
      client_assertion_type: CLIENT_ASSERTION_TYPE,
      client_assertion: assertion,
    });
    const sentAt = now();
    let res: Response;
    try {
      res = await doFetch(url, {
        method: 'POST',
        headers: {
          'content-type': 'application/x-www-form-urlencoded',
          accept: 'application/json',
        },
        body: form.toString(),
        signal: AbortSignal.timeout(timeoutMs),
      });
    } catch (err) {
      throw networkFailure(
        'token',
        url,
        `the token endpoint${tokenUrlSource ? ` (from ${describeTokenUrlSource(tokenUrlSource)})` : ''}`,
        err,
      );
    }
    noteServerDate(res);
    const text = await res.text();
    let body: Record<string, unknown> | undefined;
    try {
      const parsed: unknown = JSON.parse(text);
      if (typeof parsed === 'object' && parsed !== null) body = parsed as Record<string, unknown>;
    } catch {
      body = undefined;
    }
    const accessToken = body?.access_token;
    const hasToken = typeof accessToken === 'string' && accessToken.length > 0;
    // The OAuth error: the JSON body's, else the WWW-Authenticate header's (some servers
    // answer a 401 with an empty body and say why only there).
    const header =
      typeof body?.error === 'string'
        ? {}
        : wwwAuthenticateError(res.headers.get('www-authenticate'));
    const rawError = typeof body?.error === 'string' ? body.error : header.error;
    const rawDescription =
      typeof body?.error_description === 'string' ? body.error_description : header.description;
    // A 2xx that carries an OAuth error and no token is a refusal too (seen in the field).
    if (!res.ok || (!hasToken && rawError !== undefined)) {
      // A bare 401 from a token endpoint is a client-authentication refusal (RFC 6749 §5.2).
      const error =
        rawError !== undefined
          ? redactServerText(rawError, assertion, 100)
          : res.status === 401
            ? 'invalid_client'
            : undefined;
      const description =
        rawDescription !== undefined
          ? redactServerText(rawDescription, assertion)
          : rawError === undefined && res.status === 401
            ? 'the token endpoint answered 401 without an OAuth error code'
            : undefined;
      const failure = tokenFailure({
        status: res.status,
        error,
        description,
        tokenUrl: url,
        ...(tokenUrlSource ? { tokenUrlSource: describeTokenUrlSource(tokenUrlSource) } : {}),
        clientId: centre.auth.clientId,
        kid: centre.auth.kid,
        alg: centre.auth.alg,
        requestedScopes,
        supportedScopes: configuration?.scopes_supported,
        clockSkewMs,
        retryAfter: res.headers.get('retry-after') ?? undefined,
      });
      logger.warn(
        { step: failure.step, code: failure.code, status: res.status },
        'token request failed',
      );
      throw failure;
    }
    const tokenType = body?.token_type;
    if (!hasToken || typeof accessToken !== 'string')
      throw new SmartAuthError({
        step: 'token',
        code: 'invalid_token_response',
        status: res.status,
        hint: `The token endpoint ${url} answered ${res.status} without an access_token; ask centre IT to check the authorization server.`,
      });
    if (typeof tokenType === 'string' && tokenType.toLowerCase() !== 'bearer')
      throw new SmartAuthError({
        step: 'token',
        code: 'unsupported_token_type',
        description: `token_type ${tokenType}`,
        hint: 'The EHR issued a non-bearer token; lhn-bridge supports bearer tokens only.',
      });
    const expiresIn =
      typeof body?.expires_in === 'number' && body.expires_in > 0
        ? body.expires_in
        : typeof body?.expires_in === 'string' && Number(body.expires_in) > 0
          ? Number(body.expires_in)
          : undefined;
    if (expiresIn === undefined)
      logger.info({ assumedSeconds: defaultLifetime }, 'token response has no expires_in');
    const lifetimeMs = (expiresIn ?? defaultLifetime) * 1000;
    const granted =
      typeof body?.scope === 'string' ? splitScopes(body.scope) : [...requestedScopes];
    const missingScopes = findMissingScopes(granted, requestedScopes);
    if (missingScopes.length > 0)
      logger.warn({ missingScopes }, 'the EHR granted fewer scopes than asked for');
    const margin = Math.min(maxMarginMs, lifetimeMs / 5);
    const value: AccessToken = {
      token: accessToken,
      expiresAt: sentAt + lifetimeMs,
      scopes: granted,
      missingScopes,
      origin,
    };
    cached = { value, refreshAt: sentAt + lifetimeMs - margin };
    logger.debug({ expiresInSeconds: lifetimeMs / 1000 }, 'access token obtained');
    return value;
  }

  function getAccessToken(): Promise<AccessToken> {
    if (cached && now() < cached.refreshAt) return Promise.resolve(cached.value);
    // Within the refresh margin the old token still works: if the EHR is briefly
    // unavailable (a retryable failure), keep using it rather than failing the pull.
    const previous = cached?.value;
    inflight ??= requestToken()
      .catch((err: unknown) => {
        const stillValid =
          previous && cached?.value === previous && now() < previous.expiresAt - 5_000;
        if (stillValid && err instanceof SmartAuthError && err.retryable) {
          logger.warn({ code: err.code }, 'token refresh failed; the current token is still valid');
          return previous;
        }
        throw err;
      })
      .finally(() => {
        inflight = undefined;
      });
    return inflight;
  }

  function invalidate(token: string): void {
    if (cached?.value.token === token) {
      cached = undefined;
      logger.debug('access token invalidated');
    }
  }

  return {
    discover,
    getAccessToken,
    invalidate,
    get tokenUrl() {
      return tokenUrl;
    },
    get tokenUrlSource() {
      return tokenUrlSource;
    },
    get clockSkewMs() {
      return clockSkewMs;
    },
  };
}

/**
 * What to do when the centre's private key cannot be used: check the file, or generate a new
 * key with the `keys generate` command for the centre's algorithm (it defaults to ES384).
 */
export function keyUnusableHint(centre: CentreConfig): string {
  const alg = centre.auth.alg === 'ES384' ? '' : ` --alg ${centre.auth.alg}`;
  return `Check auth.privateKeyFile in ${centre.sourceFile}: the file must exist, be readable by this process and hold the ${centre.auth.alg} private key; or generate a new key (\`lhn-bridge keys generate --centre ${centre.id}${alg}\`), register it with the EHR and update auth.kid and auth.privateKeyFile.`;
}

/**
 * What to do when the EHR's `token_endpoint_auth_signing_alg_values_supported` does not list
 * the centre key's algorithm: the `keys generate` command for one it lists (with `--alg`, as
 * the command defaults to ES384), or, when it lists none lhn-bridge supports, which it lists.
 */
export function unsupportedAlgHint(centreId: string, listed: readonly string[]): string {
  const usable = listed.find((a) => (SIGNING_ALGS as readonly string[]).includes(a));
  return usable
    ? `Generate a key the EHR accepts (\`lhn-bridge keys generate --centre ${centreId} --alg ${usable}\`), register it, and update auth.alg/kid/privateKeyFile.`
    : `The EHR lists no algorithm lhn-bridge supports: it lists ${listed.join(', ')}, and lhn-bridge signs with ${SIGNING_ALGS.join(' or ')} only; ask centre IT to enable one of them for this client.`;
}
