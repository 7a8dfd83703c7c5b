// docs/configuration.md is the configuration reference people read; it must name every
// setting the schemas accept and every environment variable the loader reads.
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { CentreFileSchema } from '../../src/config/centre.js';
import { ENV_VARS, ServiceConfigSchema } from '../../src/config/service.js';

interface JsonSchemaNode {
  properties?: Record<string, JsonSchemaNode>;
  anyOf?: JsonSchemaNode[];
  oneOf?: JsonSchemaNode[];
}

/** Every dotted path of a leaf setting a schema accepts (union members' fields too). */
function settingPaths(schema: z.ZodType): string[] {
  const root = z.toJSONSchema(schema, { io: 'input', unrepresentable: 'any' }) as JsonSchemaNode;
  const paths = new Set<string>();
  const visit = (node: JsonSchemaNode, prefix: string[]) => {
    for (const [key, child] of Object.entries(node.properties ?? {})) {
      const isGroup =
        child.properties !== undefined || child.anyOf !== undefined || child.oneOf !== undefined;
      if (!isGroup) paths.add([...prefix, key].join('.'));
      visit(child, [...prefix, key]);
    }
    for (const alt of [...(node.anyOf ?? []), ...(node.oneOf ?? [])]) visit(alt, prefix);
  };
  visit(root, []);
  return [...paths];
}

const doc = readFileSync(new URL('../../docs/configuration.md', import.meta.url), 'utf8');

describe('docs/configuration.md', () => {
  it('when a service setting exists, then the reference documents it', () => {
    const missing = settingPaths(ServiceConfigSchema).filter((p) => !doc.includes(`\`${p}\``));
    expect(missing).toEqual([]);
  });

  it('when a centre-file setting exists, then the reference documents it', () => {
    const missing = settingPaths(CentreFileSchema).filter((p) => !doc.includes(`\`${p}\``));
    expect(missing).toEqual([]);
  });

  it('when the loader reads an environment variable, then the reference names it', () => {
    const missing = [...Object.keys(ENV_VARS), 'LHN_CONFIG'].filter(
      (name) => !doc.includes(`\`${name}\``),
    );
    expect(missing).toEqual([]);
  });
});
