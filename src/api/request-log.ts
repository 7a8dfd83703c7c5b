// Request ids and access logs. Each request gets an id (the caller's X-Request-Id when it is
// a sane token, else a new UUID), echoed in the response and carried by a child logger in
// res.locals. The access line records method, path, status, duration and the key's name,
// never headers, query values beyond the path, or bodies.
import { randomUUID } from 'node:crypto';
import type { NextFunction, Request, RequestHandler, Response } from 'express';
import type { Logger } from '../util/logger.js';
import type { ApiCaller } from './auth.js';

const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;

/** The request's id and logger (set by the request-log middleware). */
export function getRequestLogger(res: Response): Logger | undefined {
  return res.locals.log as Logger | undefined;
}

/** The request's id, if the request-log middleware ran. */
export function getRequestId(res: Response): string | undefined {
  return res.locals.requestId as string | undefined;
}

/** Middleware: assigns the request id and logs one line when the response finishes. */
export function logRequests(logger: Logger): RequestHandler {
  return (req: Request, res: Response, next: NextFunction) => {
    const incoming = req.get('x-request-id');
    const requestId = incoming && REQUEST_ID.test(incoming) ? incoming : randomUUID();
    const started = process.hrtime.bigint();
    const log = logger.child({ reqId: requestId });
    res.locals.requestId = requestId;
    res.locals.log = log;
    res.setHeader('X-Request-Id', requestId);
    res.on('finish', () => {
      const caller = res.locals.caller as ApiCaller | undefined;
      const ms = Number(process.hrtime.bigint() - started) / 1e6;
      const fields = {
        method: req.method,
        // The route path without the query string: queries carry ids only, but keep lines short.
        path: req.originalUrl.split('?')[0],
        status: res.statusCode,
        ms: Math.round(ms * 10) / 10,
        ...(caller ? { caller: caller.name } : {}),
      };
      if (res.statusCode >= 500) log.error(fields, 'request failed');
      else if (res.statusCode >= 400) log.info(fields, 'request refused');
      // Reads are frequent (the dashboard polls); actions are worth an info line.
      else if (req.method === 'GET' || req.method === 'HEAD') log.debug(fields, 'request');
      else log.info(fields, 'request');
    });
    next();
  };
}
