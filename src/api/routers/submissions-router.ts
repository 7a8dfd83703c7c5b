// /api/submissions: failed submissions (reason, attempts, when), retry one or all, resolve
// one with a note; resolved ones stay listed under /resolved with who, when and why, and every
// retry and resolve is in /audit (who, when, which).
import { Router } from 'express';
import { z } from 'zod';
import { getCaller, requireRole } from '../auth.js';
import {
  booleanQuerySchema,
  centreIdSchema,
  jobIdSchema,
  limitSchema,
  offsetSchema,
  type ApiContext,
} from '../context.js';
import { conflictProblem, notFoundProblem } from '../problem.js';
import { getRequestLogger } from '../request-log.js';
import {
  SubmissionNotFoundError,
  SubmissionStateError,
  type ListSubmissionsOptions,
} from '../services/failed-submissions.js';
import { listSubmissionAudit, recordSubmissionAudit } from '../services/submission-audit.js';
import { parseRequest } from '../validate.js';

const listQuery = z
  .object({
    centre: centreIdSchema.optional(),
    permanent: booleanQuerySchema.optional(),
    offset: offsetSchema.default(0),
    limit: limitSchema.default(100),
  })
  .strict();
const auditQuery = z
  .object({ offset: offsetSchema.default(0), limit: limitSchema.default(100) })
  .strict();
const idParams = z.object({ id: jobIdSchema }).strict();
const retryAllBody = z.object({ centre: centreIdSchema.optional() }).strict();
const resolveBody = z
  .object({
    note: z
      .string()
      .trim()
      .min(1, 'say why it is resolved (e.g. "corrected in the EHR, re-synced")')
      .max(2000),
  })
  .strict();

function toProblem(err: unknown): never {
  if (err instanceof SubmissionNotFoundError) throw notFoundProblem(err.message);
  if (err instanceof SubmissionStateError)
    throw conflictProblem(
      `submission ${err.jobId} is ${err.state}, not failed (retried or resolved meanwhile?)`,
      { state: err.state },
    );
  throw err;
}

function listOptions(query: z.infer<typeof listQuery>): ListSubmissionsOptions {
  return {
    ...(query.centre ? { centreId: query.centre } : {}),
    ...(query.permanent !== undefined ? { permanent: query.permanent } : {}),
    offset: query.offset,
    limit: query.limit,
  };
}

/** Routes under /api/submissions. */
export function createSubmissionsRouter(ctx: ApiContext): Router {
  const router = Router();
  const store = ctx.failedSubmissions;

  router.get('/failed', async (req, res) => {
    const { query } = parseRequest(req, { query: listQuery });
    const { items, total } = await store.list(listOptions(query));
    res.json({ items, total, offset: query.offset, limit: query.limit });
  });

  router.get('/resolved', async (req, res) => {
    const { query } = parseRequest(req, { query: listQuery });
    const items = await store.listResolved(listOptions(query));
    res.json({ items, offset: query.offset, limit: query.limit });
  });

  // Who retried or resolved what, newest first (ids, centres, counts, key names; no content).
  router.get('/audit', async (req, res) => {
    const { query } = parseRequest(req, { query: auditQuery });
    const items = await listSubmissionAudit(ctx.redis, ctx.prefix, query);
    res.json({ items, offset: query.offset, limit: query.limit });
  });

  // Answers once it knows how many it retries (202, { retried }); the jobs go back to the queue
  // in the background (batches of a few hundred: seconds for tens of thousands), so a long
  // retry-all never holds the request.
  router.post('/failed/retry-all', requireRole('operator'), async (req, res) => {
    const { body } = parseRequest(req, { body: retryAllBody });
    const log = getRequestLogger(res) ?? ctx.logger;
    const caller = getCaller(res);
    const by = caller.name;
    const { count, done } = await store.retryAll(body.centre ? { centreId: body.centre } : {});
    done.then(
      (retried) =>
        log.info({ retried, of: count, centreId: body.centre, by }, 'failed submissions retried'),
      (err: unknown) =>
        log.error({ err, of: count, centreId: body.centre, by }, 'retry-all failed part-way'),
    );
    await recordSubmissionAudit(ctx.redis, ctx.prefix, {
      action: 'retry-all',
      count,
      ...(body.centre ? { centreId: body.centre } : {}),
      by: caller,
    });
    res.status(202).json({ retried: count });
  });

  router.post('/failed/:id/retry', requireRole('operator'), async (req, res) => {
    const { params } = parseRequest(req, { params: idParams });
    const caller = getCaller(res);
    const { centreId } = await store.retry(params.id).catch(toProblem);
    await recordSubmissionAudit(ctx.redis, ctx.prefix, {
      action: 'retry',
      jobIds: [params.id],
      centreId,
      by: caller,
    });
    (getRequestLogger(res) ?? ctx.logger).info(
      { jobId: params.id, centreId, by: caller.name },
      'failed submission retried',
    );
    res.status(202).json({ retried: params.id });
  });

  router.post('/failed/:id/resolve', requireRole('operator'), async (req, res) => {
    const { params, body } = parseRequest(req, { params: idParams, body: resolveBody });
    const caller = getCaller(res);
    const resolved = await store
      .resolve(params.id, { name: caller.name, note: body.note })
      .catch(toProblem);
    // The audit entry leaves the note out (free text); the resolved record keeps it.
    await recordSubmissionAudit(ctx.redis, ctx.prefix, {
      action: 'resolve',
      jobIds: [resolved.jobId],
      centreId: resolved.centreId,
      by: caller,
    });
    (getRequestLogger(res) ?? ctx.logger).info(
      { jobId: resolved.jobId, centreId: resolved.centreId, by: caller.name },
      'failed submission resolved',
    );
    res.json({ resolved });
  });

  return router;
}
