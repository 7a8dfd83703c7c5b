// The bearer token may go only to the origin it was issued for (the FHIR base URL's origin).
// Servers hand us URLs to follow (search `next` links, bulk status and file URLs); each is
// checked here before a request is built. A foreign URL is refused, or, for bulk files the
// manifest declares public (`requiresAccessToken: false`), fetched without the token. Both
// outcomes are logged (origin only) and kept so a run record can show them.
import type { Logger } from '../util/logger.js';
import { OriginRefusedError, type OriginPurpose } from './errors.js';

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
      const tokenRequired = checkOptions.tokenRequired ?? true;
      if (url.origin === allowedOrigin) return { url, sendToken: tokenRequired };
      if (!tokenRequired) {
        record({ purpose, origin: url.origin, action: 'fetched-without-token' });
        return { url, sendToken: false };
      }
      record({ purpose, origin: url.origin, action: 'refused' });
      throw new OriginRefusedError({ origin: url.origin, allowedOrigin, purpose });
    },
  };
}

/** `https://ehr/fhir` -> `https://ehr/fhir/`, so relative links resolve under the base. */
export function ensureSlash(baseUrl: string): string {
  return baseUrl.endsWith('/') ? baseUrl : `${baseUrl}/`;
}
