// /api/runs: the run records of every sync (newest first), one run with the live progress of
// its job while it is queued or running.
import { Router } from 'express';
import { z } from 'zod';
import { centreIdSchema, limitSchema, runIdSchema, type ApiContext } from '../context.js';
import { notFoundProblem } from '../problem.js';
import { parseRequest } from '../validate.js';

const listQuery = z
  .object({ centre: centreIdSchema.optional(), limit: limitSchema.default(50) })
  .strict();
const runParams = z.object({ id: runIdSchema }).strict();

/** Routes under /api/runs. */
export function createRunsRouter(ctx: ApiContext): Router {
  const router = Router();

  router.get('/', async (req, res) => {
    const { query } = parseRequest(req, { query: listQuery });
    const runs = await ctx.runStore.list({
      ...(query.centre ? { centreId: query.centre } : {}),
      limit: query.limit,
    });
    res.json({ runs });
  });

  router.get('/:id', async (req, res) => {
    const { params } = parseRequest(req, { params: runParams });
    const run = await ctx.runStore.get(params.id);
    if (!run) throw notFoundProblem(`no run with id "${params.id}" (it may have been trimmed)`);
    let progress: unknown;
    if ((run.status === 'queued' || run.status === 'running') && run.jobId) {
      const job = await ctx.queues.sync.getJob(run.jobId);
      if (job) progress = job.progress;
    }
    res.json({ ...run, ...(progress !== undefined ? { progress } : {}) });
  });

  return router;
}
