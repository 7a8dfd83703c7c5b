// The mapping core's public surface: the assembler (createMapper), the pack types and the
// centre overrides. Pure: no network, no Redis, no files (packs are read by src/packs).
export {
  bundleEntryResources,
  createMapper,
  REPEAT_GROUPS,
  type Assembler,
  type FhirResource,
  type MapResult,
  type MapStats,
  type Mapper,
  type MapperOptions,
} from './assemble.js';
export {
  applyCentreOverrides,
  parseCentreOverrides,
  CentreOverridesSchema,
  OverridesError,
  type CentreOverrides,
} from './overrides.js';
export type { AssemblySpec, MappingPack, PackValueSets, ViewRole } from './pack-schema.js';
