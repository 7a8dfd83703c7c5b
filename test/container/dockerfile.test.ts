// No Docker engine runs on the build machines, so the Dockerfile is checked here instead:
// the properties the image must have, and that every path it copies exists in the repo.
import { existsSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const root = new URL('../../', import.meta.url);
const text = readFileSync(new URL('Dockerfile', root), 'utf8');
// Join continuation lines so each instruction is one line.
const instructions = text
  .replace(/\\\n/g, ' ')
  .split('\n')
  .map((l) => l.trim())
  .filter((l) => l && !l.startsWith('#'));
const stages = instructions.reduce<string[][]>((acc, line) => {
  if (/^FROM\s/i.test(line)) acc.push([]);
  acc[acc.length - 1]?.push(line);
  return acc;
}, []);
const pkg = JSON.parse(readFileSync(new URL('package.json', root), 'utf8')) as {
  scripts: Record<string, string>;
  engines: { node: string };
};

describe('Dockerfile', () => {
  it('when built, then a build stage installs and compiles with the commands CI uses', () => {
    expect(stages.length).toBeGreaterThanOrEqual(2);
    const build = stages[0]!.join('\n');
    expect(build).toMatch(/RUN npm ci\b/);
    expect(build).toMatch(/npm run build/);
    expect(pkg.scripts.build).toBeDefined();
    expect(readFileSync(new URL('.ci/run', root), 'utf8')).toMatch(/npm ci\b/);
  });

  it('when run, then the image runs as a non-root user with a healthcheck on /health', () => {
    const runtime = stages[stages.length - 1]!;
    const users = runtime.filter((l) => /^USER\s/i.test(l));
    expect(users.length).toBeGreaterThan(0);
    expect(users[users.length - 1]).not.toMatch(/^USER\s+(root|0)\b/i);
    const health = runtime.find((l) => /^HEALTHCHECK\s/i.test(l));
    expect(health).toMatch(/\/health/);
    expect(runtime.find((l) => /^ENTRYPOINT\s/i.test(l))).toMatch(/bin\/lhn-bridge\.js/);
  });

  it('when the keys folder is created, then only its owner may enter it (0700)', () => {
    const runtime = stages[stages.length - 1]!.join('\n');
    expect(runtime).toMatch(/chmod 700 \/var\/lib\/lhn-bridge\/keys\b/);
  });

  it('when it copies from the build context, then every source path exists', () => {
    const sources = instructions
      .filter((l) => /^COPY\s/i.test(l) && !/--from=/i.test(l))
      .flatMap((l) => l.split(/\s+/).slice(1, -1))
      .filter((p) => !p.startsWith('--'));
    expect(sources.length).toBeGreaterThan(3);
    const missing = sources.filter((p) => !existsSync(new URL(p, root)));
    expect(missing).toEqual([]);
  });

  it('when the base image is chosen, then its Node major satisfies package.json engines', () => {
    const majors = stages.map((s) => Number(/node:(\d+)/.exec(s[0]!)?.[1]));
    const minMajor = Number(/>=\s*(\d+)/.exec(pkg.engines.node)?.[1]);
    for (const major of majors) expect(major).toBeGreaterThanOrEqual(minMajor);
  });
});

// .dockerignore, read the way Docker does: patterns relative to the context root, `*` within
// one path segment, `**` across any number, a folder's match covering everything under it,
// and the last matching pattern winning (`!` re-includes).
const ignorePatterns = existsSync(new URL('.dockerignore', root))
  ? readFileSync(new URL('.dockerignore', root), 'utf8')
      .split('\n')
      .map((l) => l.trim())
      .filter((l) => l && !l.startsWith('#'))
  : [];

function patternRegex(pattern: string): RegExp {
  const body = pattern
    .replace(/^\/+|\/+$/g, '')
    .split(/(\*\*\/?|\*|\?)/)
    .map((part) => {
      if (part === '**/') return '(?:.*/)?';
      if (part === '**') return '.*';
      if (part === '*') return '[^/]*';
      if (part === '?') return '[^/]';
      return part.replace(/[.+^${}()|[\]\\]/g, '\\$&');
    })
    .join('');
  return new RegExp(`^${body}$`);
}

function isIgnored(path: string): boolean {
  const segments = path.split('/');
  let ignored = false;
  for (const raw of ignorePatterns) {
    const negate = raw.startsWith('!');
    const re = patternRegex(negate ? raw.slice(1) : raw);
    // A pattern matching the path or one of its parent folders covers it.
    const hit = segments.some((_, i) => re.test(segments.slice(0, i + 1).join('/')));
    if (hit) ignored = !negate;
  }
  return ignored;
}

function filesUnder(path: string): string[] {
  const abs = fileURLToPath(new URL(path, root));
  if (!statSync(abs).isDirectory()) return [path];
  return readdirSync(abs).flatMap((name) => filesUnder(`${path.replace(/\/$/, '')}/${name}`));
}

describe('.dockerignore', () => {
  it('when the image is built, then the context leaves out local state, secrets and keys', () => {
    for (const path of [
      'node_modules/x/index.js',
      '.git/HEAD',
      '.demo/keys/a.json',
      '.env',
      '.env.production',
      'lhn-bridge.env',
      'dist/src/cli.js',
      'coverage/index.html',
      'test-artifacts/run.log',
      'centres/a.yaml',
      'keys/a.k1.private.jwk.json',
      'mappings/ibd/x.private.jwk.json',
    ])
      expect({ path, ignored: isIgnored(path) }).toEqual({ path, ignored: true });
  });

  it('when the Dockerfile copies from the context, then nothing it copies is left out', () => {
    const sources = instructions
      .filter((l) => /^COPY\s/i.test(l) && !/--from=/i.test(l))
      .flatMap((l) => l.split(/\s+/).slice(1, -1))
      .filter((p) => !p.startsWith('--'));
    const files = sources.flatMap(filesUnder).filter((f) => !f.includes('node_modules/'));
    expect(files.length).toBeGreaterThan(20);
    expect(files.filter(isIgnored)).toEqual([]);
  });
});
