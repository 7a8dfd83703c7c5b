// Publishes our public keys at /.well-known/jwks.json, the URL centre IT registers with
// their EHR. Every key in the keys folder (active and retired/) is served, public members
// only; EHRs may cache the set for a few minutes (Cache-Control), so a rotation publishes the
// new key before using it and keeps the old one until it is deleted.
import { Router } from 'express';
import { silentLogger, type Logger } from '../util/logger.js';
import { buildJwks } from './keys.js';

export interface JwksRouterOptions {
  /** The keys folder (service config `keysDir`). */
  keysDir: string;
  logger?: Logger;
  /** How long EHRs may cache the set (default 300 s). */
  maxAgeSeconds?: number;
}

/** An express Router serving `GET /.well-known/jwks.json`. */
export function createJwksRouter(options: JwksRouterOptions): Router {
  const logger = options.logger ?? silentLogger;
  const maxAge = options.maxAgeSeconds ?? 300;
  const router = Router();
  router.get('/.well-known/jwks.json', async (_req, res) => {
    const jwks = await buildJwks(options.keysDir, { logger });
    res.set('cache-control', `public, max-age=${maxAge}`);
    res.type('application/json').send(JSON.stringify(jwks));
  });
  return router;
}
