// Cross-site request forgery guard for the state-changing /api routes (POST, PUT, PATCH,
// DELETE). The API takes its key from a header a page on another site cannot set without a
// CORS preflight (which is refused), and HTTP Basic only on Bull Board; this is the second
// line: a browser request from another site (Origin of another host, or
// `Sec-Fetch-Site: cross-site`) is refused with 403, and a body must be JSON (415 otherwise),
// so no "simple" cross-site request (a form post, text/plain) ever reaches a handler.
import type { NextFunction, Request, RequestHandler, Response } from 'express';
import { HttpProblem } from './problem.js';

const STATE_CHANGING = new Set(['POST', 'PUT', 'PATCH', 'DELETE']);

/** Options of the guard. */
export interface CsrfGuardOptions {
  /** The service's public base URL (api.publicUrl): its origin is accepted too. */
  publicUrl?: string | undefined;
}

/** 403: a browser request from another site. */
function crossSiteProblem(): HttpProblem {
  return new HttpProblem(
    403,
    'cross-site',
    'Cross-site request refused',
    'a state-changing request must come from this service itself (the dashboard) or from a client that is not a browser; requests from another site are refused',
  );
}

/** 415: a body that is not JSON. */
function unsupportedTypeProblem(): HttpProblem {
  return new HttpProblem(
    415,
    'unsupported-media-type',
    'Unsupported media type',
    'a request body must be JSON, sent with "Content-Type: application/json"',
  );
}

/** True when the request has a body (a non-zero Content-Length, or chunked). */
function hasBody(req: Request): boolean {
  if (req.headers['transfer-encoding'] !== undefined) return true;
  const length = req.headers['content-length'];
  return length !== undefined && length.trim() !== '' && Number(length) !== 0;
}

/** The host (host[:port], lower-case) of an Origin header, or undefined when it is not a URL. */
function originHost(origin: string): string | undefined {
  try {
    const url = new URL(origin);
    return url.protocol === 'http:' || url.protocol === 'https:' ? url.host : undefined;
  } catch {
    return undefined;
  }
}

/** The service's own hosts as the request sees them: Host, the forwarded host, publicUrl. */
function ownHosts(req: Request, publicUrl: string | undefined): Set<string> {
  const hosts = new Set<string>();
  const host = req.get('host');
  if (host) hosts.add(normaliseHost(host));
  // With trust proxy configured, express reads X-Forwarded-Host from the proxy.
  if (req.host) hosts.add(normaliseHost(req.host));
  if (publicUrl) {
    const fromPublic = originHost(publicUrl);
    if (fromPublic) hosts.add(fromPublic);
  }
  return hosts;
}

/** Lower-cases a Host value and drops a default port, as URL does for an Origin. */
function normaliseHost(host: string): string {
  const h = host.trim().toLowerCase();
  return originHost(`http://${h}`) ?? h;
}

/**
 * Middleware for the /api router: 403 for a state-changing request from another site, 415 for
 * one whose body is not JSON. Safe methods (GET, HEAD, OPTIONS) pass untouched.
 */
export function csrfGuard(options: CsrfGuardOptions = {}): RequestHandler {
  return (req: Request, _res: Response, next: NextFunction) => {
    if (!STATE_CHANGING.has(req.method)) {
      next();
      return;
    }
    if (req.get('sec-fetch-site')?.trim().toLowerCase() === 'cross-site') {
      next(crossSiteProblem());
      return;
    }
    const origin = req.get('origin');
    if (origin !== undefined) {
      const host = originHost(origin.trim());
      // "null" (a sandboxed frame, a file: page) and anything unparseable count as foreign.
      if (host === undefined || !ownHosts(req, options.publicUrl).has(host)) {
        next(crossSiteProblem());
        return;
      }
    }
    if (hasBody(req) && !req.is('application/json')) {
      next(unsupportedTypeProblem());
      return;
    }
    next();
  };
}
