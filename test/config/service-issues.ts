// What the config tests share: the problems loadServiceConfig reports for an environment
// (with a valid pseudonym secret), or none.
import { ConfigError } from '../../src/config/errors.js';
import { loadServiceConfig } from '../../src/config/service.js';
import { SECRET } from '../sync/helpers.js';

/** The ConfigError issues for `env` (plus a valid secret); [] when it loads. */
export function serviceConfigIssues(
  env: Record<string, string>,
): { path: string; message: string }[] {
  try {
    loadServiceConfig({ LHN_PSEUDONYM_SECRET: SECRET, ...env });
  } catch (err) {
    if (err instanceof ConfigError) return err.issues;
    throw err;
  }
  return [];
}
