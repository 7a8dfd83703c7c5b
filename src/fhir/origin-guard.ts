// The bearer token may go only to the origin it was issued for (the FHIR base URL's origin).
// Servers hand us URLs to follow (search `next` links, bulk status and file URLs); each is
// checked here before a request is built. A foreign URL is refused, or, for bulk files the
// manifest declares public (`requiresAccessToken: false`), fetched without the token. A bulk
// file download that the FHIR server redirects to another origin (a pre-signed object-store
// URL, as Oracle Health does) is followed without the token, as fetch drops Authorization
// on a cross-origin redirect. Every outcome is logged (origin only) and kept so a run record
// can show them.
import type { Logger } from '../util/logger.js';
import { isLoopbackHost } from '../config/centre.js';
import { OriginRefusedError, PlainHttpRefusedError, type OriginPurpose } from './errors.js';

/** One decision about a URL on a foreign origin, kept for the run record. */
export interface OriginEvent {
  at: string;
  purpose: OriginPurpose;
  /** The foreign origin (scheme://host:port), never a path or query. */
  origin: string;
  allowedOrigin: string;
  action: 'refused' | 'fetched-without-token';
}

/** How a URL may be fetched. */
export interface OriginDecision {
  url: URL;
  /** Whether the Authorization header may be attached. */
  sendToken: boolean;
}

/**
 * Purposes whose cross-origin redirects are followed without the token: bulk files, which
 * the Bulk Data IG lets servers serve from other file servers. Everything else (search
 * pages, reads, status polls) refuses a redirect to another origin.
 */
export const TOKENLESS_REDIRECT_PURPOSES: ReadonlySet<OriginPurpose> = new Set<OriginPurpose>([
  'bulk-file',
  'bulk-error-file',
  'bulk-deleted-file',
]);

/** Checks URLs against the token's origin and remembers what it refused. */
export interface OriginGuard {
  readonly allowedOrigin: string;
  /**
   * Decides how `url` may be fetched. `tokenRequired: false` (bulk manifest
   * `requiresAccessToken: false`) allows a foreign origin without the token; otherwise a
   * foreign origin throws OriginRefusedError.
   */
  check(
    url: string | URL,
    purpose: OriginPurpose,
    options?: { tokenRequired?: boolean },
  ): OriginDecision;
  /**
   * Decides whether the next hop of a redirect (`from` answered 3xx with `to`) still needs
   * the token; the hop is then checked with check(). A bulk file redirected to another
   * origin goes on without the token (and without it for the rest of the chain); an
   * https-to-http redirect of such a file is refused, since the file holds patient data.
   * For other purposes the answer is unchanged, so check() refuses a foreign origin.
   */
  redirect(
    from: URL,
    to: URL,
    purpose: OriginPurpose,
    options: { tokenRequired: boolean },
  ): { tokenRequired: boolean };
  /**
   * Foreign-origin decisions, oldest first; only the most recent `maxEvents` are kept (a
   * client lives as long as its process). Use `onEvent` to record every one in a run.
   */
  readonly events: readonly OriginEvent[];
}

/** Options for createOriginGuard. */
export interface OriginGuardOptions {
  /** The FHIR base URL; its origin is the only one the token goes to. */
  baseUrl: string;
  logger?: Logger;
  centreId?: string;
  /** Called for every foreign-origin decision (e.g. to add it to a run record). */
  onEvent?: (event: OriginEvent) => void;
  now?: () => number;
  /** How many recent events `events` keeps (default 200). */
  maxEvents?: number;
}

/** Creates the guard for one centre's FHIR base URL. */
export function createOriginGuard(options: OriginGuardOptions): OriginGuard {
  const allowedOrigin = new URL(options.baseUrl).origin;
  const events: OriginEvent[] = [];
  const now = options.now ?? Date.now;

  const record = (event: Omit<OriginEvent, 'at' | 'allowedOrigin'>) => {
    const full: OriginEvent = { at: new Date(now()).toISOString(), allowedOrigin, ...event };
    events.push(full);
    if (events.length > (options.maxEvents ?? 200)) events.shift();
    options.logger?.warn(
      {
        centre: options.centreId,
        purpose: full.purpose,
        origin: full.origin,
        allowedOrigin,
        action: full.action,
      },
      full.action === 'refused'
        ? 'refused to send the access token to a foreign origin'
        : 'fetching from a foreign origin without the access token',
    );
    options.onEvent?.(full);
  };

  return {
    allowedOrigin,
    events,
    check(input, purpose, checkOptions = {}) {
      const url = typeof input === 'string' ? new URL(input, ensureSlash(options.baseUrl)) : input;
      if (url.protocol !== 'https:' && url.protocol !== 'http:') {
        record({ purpose, origin: `${url.protocol}`, action: 'refused' });
        throw new OriginRefusedError({ origin: url.protocol, allowedOrigin, purpose });
      }
      // Bulk files hold patient data: never over plain http off this machine, token or not.
      if (
        url.protocol === 'http:' &&
        TOKENLESS_REDIRECT_PURPOSES.has(purpose) &&
        !isLoopbackHost(url.hostname)
      ) {
        record({ purpose, origin: url.origin, action: 'refused' });
        throw new PlainHttpRefusedError({ origin: url.origin, allowedOrigin, purpose });
      }
      const tokenRequired = checkOptions.tokenRequired ?? true;
      if (url.origin === allowedOrigin) return { url, sendToken: tokenRequired };
      if (!tokenRequired) {
        record({ purpose, origin: url.origin, action: 'fetched-without-token' });
        return { url, sendToken: false };
      }
      record({ purpose, origin: url.origin, action: 'refused' });
      throw new OriginRefusedError({ origin: url.origin, allowedOrigin, purpose });
    },
    redirect(from, to, purpose, redirectOptions) {
      if (!redirectOptions.tokenRequired || to.origin === allowedOrigin) return redirectOptions;
      if (!TOKENLESS_REDIRECT_PURPOSES.has(purpose)) return redirectOptions;
      if (from.protocol === 'https:' && to.protocol === 'http:') {
        record({ purpose, origin: to.origin, action: 'refused' });
        throw new OriginRefusedError({ origin: to.origin, allowedOrigin, purpose });
      }
      return { tokenRequired: false };
    },
  };
}

/** `https://ehr/fhir` -> `https://ehr/fhir/`, so relative links resolve under the base. */
export function ensureSlash(baseUrl: string): string {
  return baseUrl.endsWith('/') ? baseUrl : `${baseUrl}/`;
}
