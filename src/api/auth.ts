// API-key authentication for the admin API. Keys live in config only as SHA-256 hashes; a
// presented key is hashed and compared with every configured hash in constant time (no early
// exit), so response timing tells nothing about which bytes matched. Roles are ordered:
// viewer (read) < operator (sync, retry, resolve) < admin (centre checks).
import { createHash, timingSafeEqual } from 'node:crypto';
import type { NextFunction, Request, RequestHandler, Response } from 'express';
import type { ApiRole, ServiceConfig } from '../config/service.js';
import { forbiddenProblem, tooManyRequestsProblem, unauthorizedProblem } from './problem.js';
import type { FailureLimiter } from './rate-limit.js';

/** Who made the request (set by the authentication middleware). */
export interface ApiCaller {
  name: string;
  role: ApiRole;
}

type ConfiguredKey = ServiceConfig['api']['keys'][number];

const ROLE_RANK: Record<ApiRole, number> = { viewer: 0, operator: 1, admin: 2 };

/** True when `role` may do what `required` allows. */
export function roleAllows(role: ApiRole, required: ApiRole): boolean {
  return ROLE_RANK[role] >= ROLE_RANK[required];
}

/** SHA-256 of an API key, hex: what a deployment puts in `api.keys[].sha256`. */
export function hashApiKey(key: string): string {
  return createHash('sha256').update(key, 'utf8').digest('hex');
}

/**
 * Finds the configured key whose hash matches the presented key. Every configured hash is
 * compared, whatever matched before, using `compare` (crypto.timingSafeEqual by default).
 */
export function matchApiKey(
  presented: string,
  keys: readonly ConfiguredKey[],
  compare: (a: Buffer, b: Buffer) => boolean = timingSafeEqual,
): ConfiguredKey | undefined {
  const digest = createHash('sha256').update(presented, 'utf8').digest();
  let found: ConfiguredKey | undefined;
  for (const key of keys) {
    const expected = Buffer.from(key.sha256, 'hex');
    // Config validates 64 hex digits, so lengths match; compare anyway for safety.
    const same = expected.length === digest.length && compare(digest, expected);
    if (same && !found) found = key;
  }
  return found;
}

/**
 * Reads the presented key from `Authorization: Bearer <key>`, `X-API-Key`, or, with
 * `allowBasic`, HTTP Basic (any user name, the key as password: what a browser sends after a
 * Basic challenge). Basic is for Bull Board only: a browser replays cached Basic credentials
 * on requests other sites make it send, which is never true of a Bearer header.
 */
export function readPresentedKey(req: Request, allowBasic = false): string | undefined {
  const header = req.get('authorization');
  if (header !== undefined) {
    const bearer = /^Bearer\s+(\S+)\s*$/i.exec(header);
    if (bearer) return bearer[1];
    if (!allowBasic) return undefined;
    const basic = /^Basic\s+([A-Za-z0-9+/=]+)\s*$/i.exec(header);
    if (!basic?.[1]) return undefined;
    const decoded = Buffer.from(basic[1], 'base64').toString('utf8');
    const colon = decoded.indexOf(':');
    const password = colon >= 0 ? decoded.slice(colon + 1) : '';
    return password === '' ? undefined : password;
  }
  const apiKey = req.get('x-api-key');
  return apiKey && apiKey.trim() !== '' ? apiKey.trim() : undefined;
}

/** The caller of an authenticated request; throws if auth did not run (a wiring bug). */
export function getCaller(res: Response): ApiCaller {
  const caller = res.locals.caller as ApiCaller | undefined;
  if (!caller) throw new Error('authentication middleware did not run for this route');
  return caller;
}

/** Options of the authentication middleware. */
export interface AuthenticateOptions {
  keys: readonly ConfiguredKey[];
  limiter: FailureLimiter;
  /**
   * The WWW-Authenticate scheme of 401s; default Bearer. `Basic` also accepts HTTP Basic
   * credentials (Bull Board only: everywhere else they are ignored, as a CSRF defence).
   */
  challenge?: 'Bearer' | 'Basic';
}

/**
 * Middleware: identifies the caller from their API key, or answers 401 (no or unknown key)
 * or 429 (too many wrong keys from this address; checked before the key, so a locked-out
 * client cannot keep guessing).
 */
export function authenticate(options: AuthenticateOptions): RequestHandler {
  return (req: Request, res: Response, next: NextFunction) => {
    const client = req.ip ?? req.socket.remoteAddress ?? 'unknown';
    const wait = options.limiter.retryAfter(client);
    if (wait > 0) {
      next(tooManyRequestsProblem(wait));
      return;
    }
    const allowBasic = options.challenge === 'Basic';
    const presented = readPresentedKey(req, allowBasic);
    if (presented === undefined) {
      // Not a guess, so not counted as a failed attempt.
      const basicSent = !allowBasic && /^Basic\s/i.test(req.get('authorization') ?? '');
      next(
        unauthorizedProblem(
          basicSent
            ? 'HTTP Basic credentials are accepted only by Bull Board (/admin/queues); send the API key as "Authorization: Bearer <key>" or in the X-API-Key header'
            : 'send an API key as "Authorization: Bearer <key>" or in the X-API-Key header',
          options.challenge,
        ),
      );
      return;
    }
    const key = matchApiKey(presented, options.keys);
    if (!key) {
      options.limiter.recordFailure(client);
      next(unauthorizedProblem('the API key is not valid', options.challenge));
      return;
    }
    const caller: ApiCaller = { name: key.name, role: key.role };
    res.locals.caller = caller;
    next();
  };
}

/** Middleware: 403 unless the authenticated caller's role is at least `required`. */
export function requireRole(required: ApiRole): RequestHandler {
  return (_req: Request, res: Response, next: NextFunction) => {
    const caller = getCaller(res);
    if (!roleAllows(caller.role, required)) {
      next(forbiddenProblem(`this action needs the ${required} role; the key has ${caller.role}`));
      return;
    }
    next();
  };
}
