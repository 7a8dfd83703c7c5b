// /api/centres: status of every centre, one centre with its recent runs, its quality report,
// the onboarding check (admin) and "sync now" (operator).
import { Router } from 'express';
import { z } from 'zod';
import { getCaller, requireRole } from '../auth.js';
import { centreIdSchema, requireCentre, type ApiContext } from '../context.js';
import { conflictProblem, notFoundProblem, unavailableProblem } from '../problem.js';
import { describeCentres, summariseRun } from '../services/centre-status.js';
import { requestSync } from '../../sync/request-sync.js';
import { getRequestLogger } from '../request-log.js';
import { parseRequest } from '../validate.js';

const centreParams = z.object({ id: centreIdSchema }).strict();
const syncBody = z.object({ mode: z.enum(['full', 'incremental']).optional() }).strict();

/** Routes under /api/centres. */
export function createCentresRouter(ctx: ApiContext): Router {
  const router = Router();
  const statusDeps = {
    runStore: ctx.runStore,
    syncQueue: ctx.queues.sync,
    failedByCentre: () => ctx.failedSubmissions.countByCentre(),
    alerts: () => ctx.alerts.list(),
  };

  router.get('/', async (req, res) => {
    parseRequest(req, { query: z.object({}).strict() });
    const centres = [...ctx.centres.values()].sort((a, b) => a.id.localeCompare(b.id));
    res.json({ centres: await describeCentres(centres, statusDeps) });
  });

  router.get('/:id', async (req, res) => {
    const { params } = parseRequest(req, { params: centreParams });
    const centre = requireCentre(ctx, params.id);
    const [[status], runs] = await Promise.all([
      describeCentres([centre], statusDeps),
      ctx.runStore.list({ centreId: centre.id, limit: 20 }),
    ]);
    res.json({ ...status, recentRuns: runs.map(summariseRun) });
  });

  router.get('/:id/quality', async (req, res) => {
    const { params } = parseRequest(req, { params: centreParams });
    const centre = requireCentre(ctx, params.id);
    const report = await ctx.runStore.getQualityReport(centre.id);
    if (!report)
      throw notFoundProblem(
        `no quality report for centre "${centre.id}" yet; the first successful sync creates it`,
      );
    res.json(report);
  });

  router.post('/:id/check', requireRole('admin'), async (req, res) => {
    const { params } = parseRequest(req, { params: centreParams });
    const centre = requireCentre(ctx, params.id);
    if (!ctx.checkCentre) throw unavailableProblem('the onboarding check is not available here');
    const report = await ctx.checkCentre(centre);
    (getRequestLogger(res) ?? ctx.logger).info(
      {
        centreId: centre.id,
        ok: report.ok,
        failedSteps: report.steps.filter((s) => s.status === 'failed').map((s) => s.id),
        by: getCaller(res).name,
      },
      'onboarding check run',
    );
    res.json(report);
  });

  router.post('/:id/sync', requireRole('operator'), async (req, res) => {
    const { params, body } = parseRequest(req, { params: centreParams, body: syncBody });
    const centre = requireCentre(ctx, params.id);
    const mode = body.mode ?? centre.schedule.mode;
    const result = await requestSync(
      { redis: ctx.redis, prefix: ctx.prefix, syncQueue: ctx.queues.sync, runStore: ctx.runStore },
      centre.id,
      mode,
    );
    if (result.status === 'already-running') {
      throw conflictProblem(`a sync of centre "${centre.id}" is already queued or running`, {
        ...(result.runId ? { runId: result.runId } : {}),
        ...(result.jobId ? { jobId: result.jobId } : {}),
      });
    }
    (getRequestLogger(res) ?? ctx.logger).info(
      { centreId: centre.id, runId: result.runId, mode, by: getCaller(res).name },
      'sync requested',
    );
    res.status(202).location(`/api/runs/${result.runId}`).json({
      status: 'queued',
      centreId: centre.id,
      mode,
      runId: result.runId,
      jobId: result.jobId,
    });
  });

  return router;
}
