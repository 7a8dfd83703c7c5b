// What a sync of one centre needs besides Redis: the FHIR client (SMART auth, the shared
// per-centre limiter, retries) and the mapper (the pack with the centre's overrides). Built
// once per centre per process and reused across runs, so the token cache and the compiled
// pack survive between runs.
import type { Redis } from 'ioredis';
import type { CentreConfig } from '../config/centre.js';
import type { ServiceConfig } from '../config/service.js';
import { createSmartAuth } from '../auth/smart-client.js';
import { createFhirClient, type FhirClient } from '../fhir/client.js';
import { createCentreLimiter } from '../fhir/limiter.js';
import { createMapper, type Mapper } from '../mapping/assemble.js';
import type { MappingPack } from '../mapping/pack-schema.js';
import { loadMappingPack, resolvePackDir } from '../packs/load-pack.js';
import type { Metrics } from '../util/metrics.js';
import { silentLogger, type Logger } from '../util/logger.js';

/** A centre's FHIR client and mapper. */
export interface CentreServices {
  fhirClient: FhirClient;
  mapper: Mapper;
}

/** Returns (and caches) the services of a centre. */
export type PrepareCentre = (centre: CentreConfig) => Promise<CentreServices>;

export interface CentreServicesOptions {
  config: ServiceConfig;
  redis: Redis;
  prefix: string;
  metrics?: Metrics;
  logger?: Logger;
  /** fetch for the FHIR client and SMART auth (the runtime's outbound fetch; tests inject one). */
  fetch?: typeof fetch;
}

/** Creates the per-process cache of centre services. */
export function createCentreServices(options: CentreServicesOptions): PrepareCentre {
  const logger = options.logger ?? silentLogger;
  const packs = new Map<string, Promise<MappingPack>>();
  const services = new Map<string, { source: CentreConfig; value: CentreServices }>();

  return async (centre) => {
    const cached = services.get(centre.id);
    if (cached && cached.source === centre) return cached.value;
    const dir = resolvePackDir(options.config.mappingsDir, centre.mapping.pack);
    let pack = packs.get(dir);
    if (!pack) {
      pack = loadMappingPack(dir);
      pack.catch(() => packs.delete(dir));
      packs.set(dir, pack);
    }
    const mapper = createMapper(await pack, {
      centreId: centre.id,
      pseudonymSecret: options.config.pseudonymSecret,
      timeZone: centre.timeZone,
      overrides: centre.mapping.overrides,
      overridesSource: centre.sourceFile,
    });
    const auth = createSmartAuth({
      centre,
      logger,
      ...(options.fetch ? { fetch: options.fetch } : {}),
    });
    const fhirClient = createFhirClient({
      centre,
      auth,
      limiter: createCentreLimiter(options.redis, options.prefix, centre, { logger }),
      logger,
      ...(options.metrics ? { metrics: options.metrics } : {}),
      config: options.config.fhir,
      ...(options.fetch ? { fetch: options.fetch } : {}),
    });
    const value = { fhirClient, mapper };
    services.set(centre.id, { source: centre, value });
    return value;
  };
}
