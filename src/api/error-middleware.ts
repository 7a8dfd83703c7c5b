// The one error middleware of the admin API: every failure leaves as problem+json. Known
// problems keep their status and detail; body-parser errors become 400/413; anything else is
// logged with the request id and answered with a bare 500 (no stack, no message, no data).
import type { ErrorRequestHandler, Request, RequestHandler, Response } from 'express';
import { ZodError } from 'zod';
import type { Logger } from '../util/logger.js';
import {
  HttpProblem,
  badRequestProblem,
  issuesFromZodError,
  notFoundProblem,
  validationProblem,
} from './problem.js';
import { getRequestId, getRequestLogger } from './request-log.js';

/** Sends a problem response. */
export function sendProblem(req: Request, res: Response, problem: HttpProblem): void {
  for (const [name, value] of Object.entries(problem.headers)) res.setHeader(name, value);
  const requestId = getRequestId(res);
  res
    .status(problem.status)
    .type('application/problem+json')
    .send(
      JSON.stringify({
        ...problem.toBody(req.originalUrl.split('?')[0]),
        ...(requestId ? { requestId } : {}),
      }),
    );
}

/** Final route: any path nothing else answered is a 404 problem. */
export function notFoundHandler(): RequestHandler {
  return (req, _res, next) => {
    next(notFoundProblem(`no route for ${req.method} ${req.path}`));
  };
}

function isBodyParserError(err: unknown): err is { type: string; status: number } {
  return (
    typeof err === 'object' &&
    err !== null &&
    typeof (err as { type?: unknown }).type === 'string' &&
    typeof (err as { status?: unknown }).status === 'number'
  );
}

/** True for errors that mean Redis is unreachable (the request may work again later). */
function isRedisUnavailable(err: unknown): boolean {
  if (!(err instanceof Error)) return false;
  return (
    err.name === 'MaxRetriesPerRequestError' ||
    err.message === 'Connection is closed.' ||
    /ECONNREFUSED|ETIMEDOUT|EHOSTUNREACH/.test(err.message)
  );
}

/** The error middleware; mount last. */
export function handleErrors(logger: Logger): ErrorRequestHandler {
  return (err: unknown, req, res, _next) => {
    let problem: HttpProblem;
    if (err instanceof HttpProblem) problem = err;
    else if (err instanceof ZodError) problem = validationProblem(issuesFromZodError(err, 'body'));
    else if (isBodyParserError(err) && err.status >= 400 && err.status < 500) {
      problem =
        err.type === 'entity.too.large'
          ? new HttpProblem(413, 'too-large', 'Request body too large', 'the body is too large')
          : err.type === 'entity.parse.failed'
            ? badRequestProblem('the body is not valid JSON')
            : badRequestProblem(`the body could not be read (${err.type})`);
    } else if (isRedisUnavailable(err)) {
      problem = new HttpProblem(
        503,
        'unavailable',
        'Service unavailable',
        'Redis is not reachable; try again shortly',
        {},
        { 'Retry-After': '5' },
      );
      (getRequestLogger(res) ?? logger).warn(
        { err: (err as Error).message, path: req.path },
        'request failed: Redis unavailable',
      );
    } else {
      problem = new HttpProblem(
        500,
        'internal',
        'Internal error',
        'the server could not complete the request; the request id identifies it in the logs',
      );
      (getRequestLogger(res) ?? logger).error(
        { err, path: req.path, method: req.method },
        'unhandled error in request',
      );
    }
    if (res.headersSent) {
      res.destroy();
      return;
    }
    sendProblem(req, res, problem);
  };
}
