// The one error middleware of the admin API: every failure leaves as problem+json. Known
// problems keep their status and detail; any error carrying a 4xx status (body-parser, a
// malformed percent-encoding, a body that does not match its Content-Encoding) becomes a 4xx
// with a generic detail of our own (never the error's message, which can quote input),
// logged at warn without stack; anything else is
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
import { isRedisUnavailable } from '../util/redis-errors.js';

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

/**
 * The 4xx status an error carries (`status` or `statusCode`, as body-parser, http-errors and
 * express set them), or undefined. Express 5 answers a path parameter that is not validly
 * percent-encoded with a URIError of status 400; a body whose Content-Encoding does not
 * match it is a zlib error with status 400 and no `type`.
 */
function clientErrorStatus(err: unknown): number | undefined {
  if (typeof err !== 'object' || err === null) return undefined;
  const { status, statusCode } = err as { status?: unknown; statusCode?: unknown };
  const value = typeof status === 'number' ? status : statusCode;
  return typeof value === 'number' && Number.isInteger(value) && value >= 400 && value < 500
    ? value
    : undefined;
}

/** What a client error means, in words of our own: an error's own message may quote input. */
function clientErrorProblem(err: unknown, status: number): HttpProblem {
  const type = (err as { type?: unknown }).type;
  if (type === 'entity.too.large' || status === 413)
    return new HttpProblem(413, 'too-large', 'Request body too large', 'the body is too large');
  if (type === 'entity.parse.failed') return badRequestProblem('the body is not valid JSON');
  if (type === 'encoding.unsupported' || type === 'charset.unsupported')
    return new HttpProblem(
      415,
      'unsupported-media-type',
      'Unsupported media type',
      type === 'charset.unsupported'
        ? 'the body must be UTF-8 JSON'
        : 'the Content-Encoding of the body is not supported (use gzip, deflate, br or none)',
    );
  if (err instanceof URIError) return badRequestProblem('the URL is not validly percent-encoded');
  const code = (err as { code?: unknown }).code;
  if (typeof code === 'string' && code.startsWith('Z_'))
    return badRequestProblem(
      'the body could not be decompressed: it does not match its Content-Encoding',
    );
  if (typeof type === 'string' && type.startsWith('request.'))
    return badRequestProblem('the body could not be read completely');
  if (status === 400) return badRequestProblem('the request could not be read');
  return new HttpProblem(status, 'client-error', 'Client error', 'the request was refused');
}

/** The error middleware; mount last. */
export function handleErrors(logger: Logger): ErrorRequestHandler {
  return (err: unknown, req, res, _next) => {
    let problem: HttpProblem;
    if (err instanceof HttpProblem) problem = err;
    else if (err instanceof ZodError) problem = validationProblem(issuesFromZodError(err, 'body'));
    else if (clientErrorStatus(err) !== undefined) {
      problem = clientErrorProblem(err, clientErrorStatus(err)!);
      // A client mistake, not ours: a warning without stack or message (it may quote input).
      (getRequestLogger(res) ?? logger).warn(
        {
          path: req.path,
          method: req.method,
          status: problem.status,
          kind: (err as { type?: unknown }).type ?? (err as Error).name,
        },
        'request refused: the client sent something unreadable',
      );
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
