// Loads the IBD pack once per test file.
import { fileURLToPath } from 'node:url';
import { loadMappingPack } from '../../../src/packs/load-pack.js';
import type { MappingPack } from '../../../src/mapping/pack-schema.js';
import { tinyCompileView } from './tiny-view.js';

export const IBD_PACK_DIR = fileURLToPath(new URL('../../../mappings/ibd', import.meta.url));

let cached: Promise<MappingPack> | undefined;
export function loadIbdPack(): Promise<MappingPack> {
  cached ??= loadMappingPack(IBD_PACK_DIR, { compileView: tinyCompileView as never });
  return cached;
}
