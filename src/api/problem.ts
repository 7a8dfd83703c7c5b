// The admin API's one error model: RFC 9457 problem details. Handlers throw an HttpProblem
// built by one of the factories below; the error middleware turns it (or a zod error, or
// anything unexpected) into `application/problem+json` without stacks or request data.
import type { z } from 'zod';

/** One field-level problem, e.g. from zod validation. `path` is dotted (`body.mode`). */
export interface ProblemIssue {
  path: string;
  message: string;
}

/** The JSON body of a problem response. */
export interface ProblemBody {
  type: string;
  title: string;
  status: number;
  detail?: string;
  instance?: string;
  issues?: ProblemIssue[];
  [extension: string]: unknown;
}

const TYPE_BASE = 'https://lhn-bridge.dev/problems/';

/** An error that carries the problem response to send. */
export class HttpProblem extends Error {
  constructor(
    readonly status: number,
    /** Short, stable slug; the problem `type` is built from it. */
    readonly slug: string,
    readonly title: string,
    readonly detail?: string,
    readonly extensions: Record<string, unknown> = {},
    /** Extra response headers (WWW-Authenticate, Retry-After). */
    readonly headers: Record<string, string> = {},
  ) {
    super(detail ?? title);
    this.name = 'HttpProblem';
  }

  /** The body to send; `instance` is the request path. */
  toBody(instance?: string): ProblemBody {
    return {
      type: `${TYPE_BASE}${this.slug}`,
      title: this.title,
      status: this.status,
      ...(this.detail !== undefined ? { detail: this.detail } : {}),
      ...(instance !== undefined ? { instance } : {}),
      ...this.extensions,
    };
  }
}

/** Turns zod issues into problem issues, prefixing each path with where it came from. */
export function issuesFromZodError(error: z.ZodError, where: string): ProblemIssue[] {
  return error.issues.map((issue) => ({
    path: [where, ...issue.path.map((p) => String(p))].join('.'),
    message: issue.message,
  }));
}

/** 400: the request did not validate. */
export function validationProblem(issues: ProblemIssue[]): HttpProblem {
  return new HttpProblem(
    400,
    'validation',
    'The request is not valid',
    `${issues.length} problem${issues.length === 1 ? '' : 's'} in the request; see issues`,
    { issues },
  );
}

/** 400: a body that is not JSON (or too large) never reaches a handler. */
export function badRequestProblem(detail: string): HttpProblem {
  return new HttpProblem(400, 'bad-request', 'Bad request', detail);
}

/**
 * 401: no credentials or unknown ones. `scheme` is the challenge sent: Bearer for the API,
 * Basic where a browser should prompt for the key itself (Bull Board).
 */
export function unauthorizedProblem(
  detail: string,
  scheme: 'Bearer' | 'Basic' = 'Bearer',
): HttpProblem {
  return new HttpProblem(
    401,
    'unauthorized',
    'Authentication required',
    detail,
    {},
    {
      'WWW-Authenticate': `${scheme} realm="lhn-bridge"${scheme === 'Basic' ? ', charset="UTF-8"' : ''}`,
    },
  );
}

/** 403: the key is valid but its role may not do this. */
export function forbiddenProblem(detail: string): HttpProblem {
  return new HttpProblem(403, 'forbidden', 'Not allowed for this role', detail);
}

/** 404: no such route or resource. */
export function notFoundProblem(detail: string): HttpProblem {
  return new HttpProblem(404, 'not-found', 'Not found', detail);
}

/** 409: the action conflicts with the current state (e.g. a sync is already running). */
export function conflictProblem(
  detail: string,
  extensions: Record<string, unknown> = {},
): HttpProblem {
  return new HttpProblem(409, 'conflict', 'Conflict', detail, extensions);
}

/** 429: too many failed authentication attempts from this client. */
export function tooManyRequestsProblem(retryAfterSeconds: number): HttpProblem {
  return new HttpProblem(
    429,
    'too-many-requests',
    'Too many failed attempts',
    `too many failed authentication attempts from this address; retry in ${retryAfterSeconds} s`,
    {},
    { 'Retry-After': String(retryAfterSeconds) },
  );
}

/** 503: a dependency (Redis, the onboarding check) is not available. */
export function unavailableProblem(detail: string): HttpProblem {
  return new HttpProblem(503, 'unavailable', 'Service unavailable', detail);
}
