// Loads the IBD pack (with the project's view engine) once per test file.
import { fileURLToPath } from 'node:url';
import { loadMappingPack } from '../../../src/packs/load-pack.js';
import type { MappingPack } from '../../../src/mapping/pack-schema.js';

export const IBD_PACK_DIR = fileURLToPath(new URL('../../../mappings/ibd', import.meta.url));

let cached: Promise<MappingPack> | undefined;
/** The IBD pack as shipped (no centre overrides). */
export function loadIbdPack(): Promise<MappingPack> {
  cached ??= loadMappingPack(IBD_PACK_DIR);
  return cached;
}
