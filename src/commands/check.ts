// `lhn-bridge check <centre>`: the onboarding check for centre IT. A thin handler: find the
// centre file, run the check, print the step-by-step report; exit code 1 when a required
// step failed, so scripts and CI can use it too.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import type { Command } from 'commander';
import { loadCentreFile, loadCentres, type CentreConfig } from '../config/centre.js';
import { formatCheckReport, runCheck } from '../onboarding/check.js';
import { createLogger, silentLogger } from '../util/logger.js';
import { createOutboundFetch } from '../util/outbound.js';
import { loadOutboundConfig } from '../config/service.js';
import { CliError } from './cli-error.js';
import { loadFolderConfig } from './service-paths.js';

interface CheckCommandOptions {
  centresDir?: string;
  json?: boolean;
  verbose?: boolean;
  timeoutMs?: string;
  keysDir?: string;
}

/** A centre file path, or a centre id looked up in `centresDir`. */
export async function findCentre(argument: string, centresDir: string): Promise<CentreConfig> {
  if (/\.(ya?ml|json)$/i.test(argument) || existsSync(argument)) {
    if (!existsSync(argument)) throw new CliError(`centre file not found: ${argument}`);
    return loadCentreFile(argument);
  }
  for (const ext of ['yaml', 'yml', 'json']) {
    const file = join(centresDir, `${argument}.${ext}`);
    if (existsSync(file)) {
      const centre = await loadCentreFile(file);
      if (centre.id === argument) return centre;
    }
  }
  if (!existsSync(centresDir))
    throw new CliError(`no centre file "${argument}" and no centres folder ${centresDir}`);
  const centre = (await loadCentres(centresDir)).find((c) => c.id === argument);
  if (!centre) throw new CliError(`no centre with id "${argument}" in ${centresDir}`);
  return centre;
}

export function registerCheckCommand(program: Command): void {
  program
    .command('check')
    .description(
      "check a centre's EHR connection step by step: discovery, token, scopes, CapabilityStatement, cohort, searches (or a bulk export kick-off)",
    )
    .argument('<centre>', 'centre file (.yaml, .yml, .json) or centre id in --centres-dir')
    .option(
      '--centres-dir <dir>',
      'folder of centre files (default: centresDir from the service config: LHN_CENTRES_DIR, LHN_CONFIG, ./centres)',
    )
    .option('--json', 'print the report as JSON')
    .option('--verbose', 'log each request (ids and counts only) to stderr')
    .option('--timeout-ms <ms>', 'timeout per EHR request', '15000')
    .option(
      '--keys-dir <dir>',
      'keys folder this service publishes as its JWKS (default: LHN_KEYS_DIR, else keysDir of LHN_CONFIG); checks that auth.kid is in it',
    )
    .action(async (argument: string, options: CheckCommandOptions) => {
      const folders = loadFolderConfig(process.env);
      const centresDir = options.centresDir ?? folders.centresDir;
      const centre = await findCentre(argument, centresDir);
      const timeoutMs = Number(options.timeoutMs);
      if (!Number.isInteger(timeoutMs) || timeoutMs <= 0)
        throw new CliError(`--timeout-ms must be a positive integer, got "${options.timeoutMs}"`);
      const logger = options.verbose
        ? createLogger({ level: 'debug', name: 'check', destination: process.stderr })
        : silentLogger;
      // The folder serve publishes: --keys-dir, LHN_KEYS_DIR, or keysDir of the LHN_CONFIG file
      // (its default ./keys included, as serve would use it). Without any, no JWKS step.
      const keysDir =
        options.keysDir ??
        process.env.LHN_KEYS_DIR ??
        (process.env.LHN_CONFIG ? folders.keysDir : undefined);
      const report = await runCheck(centre, {
        logger,
        ...(keysDir ? { keysDir } : {}),
        mappingsDir: folders.mappingsDir,
        // A hospital proxy (HTTPS_PROXY / NO_PROXY, or LHN_PROXY_URL) applies here too.
        fetch: createOutboundFetch(loadOutboundConfig(process.env)),
        fhirConfig: { requestTimeoutMs: timeoutMs, maxRetries: 1, maxRetryAfterSeconds: 30 },
      });
      process.stdout.write(
        options.json ? `${JSON.stringify(report, null, 2)}\n` : formatCheckReport(report),
      );
      const failed = report.steps.filter((s) => s.required && s.status === 'failed').length;
      if (failed > 0)
        throw new CliError(
          `check failed: ${failed} required step${failed === 1 ? '' : 's'} failed`,
          1,
        );
    });
}
