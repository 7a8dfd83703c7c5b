// What a sync needs from the centre file besides the EHR: the mapping pack it names and the
// overrides layered on it. Checked when centres are loaded for serve / worker / sync (so a
// typo stops the process at start, not every sync) and by the onboarding check's mapping step, with the same messages: the setting's path,
// what is wrong, and for an unknown override key the name it was probably meant to be.
import type { CentreConfig } from '../config/centre.js';
import { issuesFromZod, type ConfigIssue } from '../config/errors.js';
import { createMapper } from '../mapping/assemble.js';
import type { MappingPack } from '../mapping/pack-schema.js';
import { CentreOverridesSchema } from '../mapping/overrides.js';
import { loadMappingPack, MappingPackError, resolvePackDir } from '../packs/load-pack.js';

/** Packs loaded so far, by folder (each pack is read and compiled once). */
export type PackCache = Map<string, Promise<MappingPack>>;

/** Why the centre's pack cannot be used, at path `mapping.pack` (empty when it loads). */
async function packIssues(
  centre: CentreConfig,
  mappingsDir: string,
  cache: PackCache,
): Promise<{ pack?: MappingPack; issues: ConfigIssue[] }> {
  const dir = resolvePackDir(mappingsDir, centre.mapping.pack);
  let loading = cache.get(dir);
  if (!loading) {
    loading = loadMappingPack(dir);
    cache.set(dir, loading);
  }
  try {
    return { pack: await loading, issues: [] };
  } catch (err) {
    if (!(err instanceof MappingPackError)) throw err;
    const issues = err.issues.map((i) => ({
      path: 'mapping.pack',
      message:
        i.file === ''
          ? i.message
          : `mapping pack ${err.dir}: ${i.file}${i.path ? ` ${i.path}` : ''}: ${i.message}`,
    }));
    return { issues };
  }
}

/** Problems of `mapping.overrides`, each at its own path (`mapping.overrides.vists`). */
function overridesIssues(centre: CentreConfig, pack: MappingPack | undefined): ConfigIssue[] {
  const result = CentreOverridesSchema.safeParse(centre.mapping.overrides);
  if (!result.success)
    return issuesFromZod(result.error, CentreOverridesSchema).map((i) => ({
      path: i.path ? `mapping.overrides.${i.path}` : 'mapping.overrides',
      message: i.message,
    }));
  if (!pack) return [];
  // The overrides layered on the pack, as a sync builds its mapper (the secret is not used).
  try {
    createMapper(pack, {
      centreId: centre.id,
      pseudonymSecret: 'x'.repeat(32),
      timeZone: centre.timeZone,
      overrides: centre.mapping.overrides,
      overridesSource: centre.sourceFile,
    });
    return [];
  } catch (err) {
    return [{ path: 'mapping.overrides', message: (err as Error).message }];
  }
}

/** Problems of the pack and the overrides of one centre (empty when a sync can map with them). */
export async function centreMappingIssues(
  centre: CentreConfig,
  mappingsDir: string,
  cache: PackCache = new Map(),
): Promise<ConfigIssue[]> {
  const { pack, issues } = await packIssues(centre, mappingsDir, cache);
  return [...issues, ...overridesIssues(centre, pack)];
}

/**
 * The check loadCentres runs on each centre for serve / worker / sync: its pack and
 * overrides. Packs are cached across centres (each is loaded once).
 */
export function createCentreLoadCheck(
  mappingsDir: string,
): (centre: CentreConfig) => Promise<ConfigIssue[]> {
  const cache: PackCache = new Map();
  return (centre) => centreMappingIssues(centre, mappingsDir, cache);
}
