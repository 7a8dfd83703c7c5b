// Bull Board (the BullMQ web UI) for operators: every queue, job and failure in detail, for
// the cases the dashboard does not cover, read-only (retry and resolve go through the API). Mounted by createApp behind the same API-key auth.
import { createBullBoard } from '@bull-board/api';
import { BullMQAdapter } from '@bull-board/api/bullMQAdapter';
import { ExpressAdapter } from '@bull-board/express';
import type { Queue } from 'bullmq';
import type { Express, RequestHandler } from 'express';

/**
 * Bull Board's Content-Security-Policy. Its UI is a React bundle from its own static folder
 * that uses inline style attributes and one inline <style>, so style-src needs
 * 'unsafe-inline'; scripts stay 'self' only (its one inline script is JSON config, not code).
 * Its Google Fonts stylesheet is blocked on purpose: nothing about operators' visits goes to a
 * third party, and the UI falls back to system fonts.
 */
export const BULL_BOARD_CSP = [
  "default-src 'self'",
  "script-src 'self'",
  "style-src 'self' 'unsafe-inline'",
  "img-src 'self' data:",
  "font-src 'self' data:",
  "connect-src 'self'",
  "object-src 'none'",
  "base-uri 'self'",
  "form-action 'self'",
  "frame-ancestors 'none'",
].join('; ');

/**
 * Headers of every Bull Board response: never cached (job data is patient-level), the CSP
 * above. Mounted before the Bull Board router.
 */
export const bullBoardHeaders: RequestHandler = (_req, res, next) => {
  res.setHeader('Cache-Control', 'no-store');
  res.setHeader('Content-Security-Policy', BULL_BOARD_CSP);
  next();
};

/** Builds the Bull Board router for the given queues, served under `basePath`. */
export function createBullBoardRouter(queues: Queue[], basePath: string): RequestHandler {
  const serverAdapter = new ExpressAdapter();
  serverAdapter.setBasePath(basePath);
  createBullBoard({
    // Read-only: removing, cleaning or adding jobs here would bypass the resolve record that
    // keeps who removed a failed submission and why (and leave its visit marked as sent).
    queues: queues.map((queue) => new BullMQAdapter(queue, { readOnlyMode: true })),
    serverAdapter,
    options: { uiConfig: { boardTitle: 'lhn-bridge queues' } },
  });
  // Bull Board's adapter is an express app of its own, with X-Powered-By on by default.
  const router = serverAdapter.getRouter() as Express;
  router.disable('x-powered-by');
  return router as RequestHandler;
}
