// Bull Board (the BullMQ web UI) for operators: every queue, job and failure in detail, for
// the cases the dashboard does not cover, read-only (retry and resolve go through the API). Mounted by createApp behind the same API-key auth.
import { createBullBoard } from '@bull-board/api';
import { BullMQAdapter } from '@bull-board/api/bullMQAdapter';
import { ExpressAdapter } from '@bull-board/express';
import type { Queue } from 'bullmq';
import type { RequestHandler } from 'express';

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
  return serverAdapter.getRouter() as RequestHandler;
}
