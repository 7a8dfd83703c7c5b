// The folders of the service config (centresDir, keysDir...) for commands that need no full
// service: `keys` and `check` run without Redis or a pseudonym secret, yet must find the same
// folders as `serve` and `worker` (LHN_CENTRES_DIR, LHN_KEYS_DIR, or LHN_CONFIG's settings).
import { randomBytes } from 'node:crypto';
import { loadServiceConfig, type ServiceConfig } from '../config/service.js';

/**
 * The service config read for its folders alone. These commands never need the pseudonym
 * secret, so a placeholder satisfies that required field here; the placeholder is never used.
 */
export function loadFolderConfig(
  env: Record<string, string | undefined>,
): Pick<ServiceConfig, 'centresDir' | 'keysDir' | 'mappingsDir'> & { publicUrl?: string } {
  const config = loadServiceConfig({
    ...env,
    // Random, so this stand-in can never be copied into a deployment as its secret.
    LHN_PSEUDONYM_SECRET: randomBytes(32).toString('hex'),
    LHN_PSEUDONYM_SECRET_IN_USE: undefined,
  });
  return {
    centresDir: config.centresDir,
    keysDir: config.keysDir,
    mappingsDir: config.mappingsDir,
    ...(config.api.publicUrl ? { publicUrl: config.api.publicUrl } : {}),
  };
}
