// The worker's health answer: a worker serves no API, so a container healthcheck (the
// Dockerfile's probes the API port) has nothing to ask. When `worker.healthPort` is set
// (LHN_WORKER_HEALTH_PORT), `lhn-bridge worker` listens there and answers GET /health: 200
// while its Redis connection is ready, 503 while it is not (Redis down, reconnecting), while
// the worker is still starting (it listens before it waits for Redis), or while it is
// shutting down. Nothing else is served; the answer names no host or error text.
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Logger } from './util/logger.js';

export interface WorkerHealthOptions {
  host: string;
  port: number;
  /** The Redis connection's state (ioredis `status`: `ready`, `connecting`, `reconnecting`...). */
  redisStatus: () => string;
  /** False while the worker is starting (waiting for Redis): 503 `starting`. Default ready. */
  ready?: () => boolean;
  logger: Logger;
  /** Log 'worker health endpoint listening' with its URL once bound (default true). */
  announce?: boolean;
}

export interface WorkerHealthServer {
  /** `http://host:port` it listens on. */
  url: string;
  /** From now on /health answers 503 (the worker is stopping). */
  markStopping(): void;
  close(): Promise<void>;
}

/** Starts the worker's /health listener; rejects when the port cannot be bound. */
export async function startWorkerHealthServer(
  options: WorkerHealthOptions,
): Promise<WorkerHealthServer> {
  let stopping = false;
  const server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    const send = (status: number, body: unknown, headers: Record<string, string> = {}) => {
      res.writeHead(status, { 'content-type': 'application/json', ...headers });
      res.end(req.method === 'HEAD' ? undefined : JSON.stringify(body));
    };
    if (path !== '/health') return send(404, { status: 'not found' });
    if (req.method !== 'GET' && req.method !== 'HEAD')
      return send(405, { status: 'method not allowed' }, { allow: 'GET, HEAD' });
    const redis = options.redisStatus();
    if (stopping) return send(503, { status: 'stopping', redis });
    if (redis !== 'ready') return send(503, { status: 'unavailable', redis });
    if (options.ready && !options.ready()) return send(503, { status: 'starting', redis });
    send(200, { status: 'ok', redis });
  });
  // A probe that hangs up mid-request is no reason to log at warn level.
  server.on('clientError', (_err, socket) => socket.destroy());
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port, options.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const address = server.address() as AddressInfo;
  const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  const url = `http://${host}:${address.port}`;
  if (options.announce !== false)
    options.logger.info({ url: `${url}/health` }, 'worker health endpoint listening');
  return {
    url,
    markStopping() {
      stopping = true;
    },
    close() {
      return new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
    },
  };
}
