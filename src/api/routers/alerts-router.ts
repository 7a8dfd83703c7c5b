// /api/alerts: the alerts raised now; POST /api/alerts/evaluate re-runs the rules at once
// (operator), which also sends any webhook events the change causes.
import { Router } from 'express';
import { z } from 'zod';
import { requireRole } from '../auth.js';
import type { ApiContext } from '../context.js';
import { parseRequest } from '../validate.js';

/** Routes under /api/alerts. */
export function createAlertsRouter(ctx: ApiContext): Router {
  const router = Router();

  router.get('/', async (req, res) => {
    parseRequest(req, { query: z.object({}).strict() });
    res.json({ alerts: await ctx.alerts.list() });
  });

  router.post('/evaluate', requireRole('operator'), async (req, res) => {
    parseRequest(req, { body: z.object({}).strict() });
    res.json({ alerts: await ctx.alerts.evaluate() });
  });

  return router;
}
