import { execFile } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { chmod, mkdir, readFile, readdir, stat, writeFile } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { promisify } from 'node:util';
import express from 'express';
import {
  exportPKCS8,
  generateKeyPair as joseGenerateKeyPair,
  SignJWT,
  jwtVerify,
  importJWK,
} from 'jose';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  buildJwks,
  generateKeyPair,
  KeyFileError,
  listKeys,
  loadPrivateKey,
  privateKeyFileName,
  retireKey,
  thumbprintKid,
  toPublicJwk,
  writePrivateKeyFile,
} from '../../src/auth/keys.js';
import { createJwksRouter } from '../../src/auth/jwks-router.js';
import { makeTempDir } from './helpers.js';

const PRIVATE_MEMBERS = ['d', 'p', 'q', 'dp', 'dq', 'qi', 'oth', 'k'];
const run = promisify(execFile);

let dir: string;
let cleanup: () => Promise<void>;
beforeEach(async () => {
  ({ dir, cleanup } = await makeTempDir('lhn-keys-'));
});
afterEach(async () => cleanup());

describe('generateKeyPair / writePrivateKeyFile / loadPrivateKey', () => {
  for (const alg of ['ES384', 'RS384'] as const) {
    it(`when an ${alg} key is generated and written, then the file is 0600 in a 0700 folder and loads back with the same kid`, async () => {
      const pair = await generateKeyPair(alg);
      expect(pair.kid).toBe(await thumbprintKid(pair.publicJwk));
      for (const m of PRIVATE_MEMBERS) expect(pair.publicJwk).not.toHaveProperty(m);
      expect(pair.privateJwk.d).toEqual(expect.any(String));

      const file = join(dir, 'nested', 'keys', privateKeyFileName('centre-a', pair.kid));
      await writePrivateKeyFile(file, pair.privateJwk);
      expect((await stat(file)).mode & 0o777).toBe(0o600);
      expect((await stat(join(dir, 'nested', 'keys'))).mode & 0o777).toBe(0o700);

      const loaded = await loadPrivateKey(file, alg);
      expect(loaded.kid).toBe(pair.kid);
      expect(loaded.publicJwk).toMatchObject({ kty: pair.publicJwk.kty, kid: pair.kid, alg });
      for (const m of PRIVATE_MEMBERS) expect(loaded.publicJwk).not.toHaveProperty(m);

      // The loaded key signs something the published public key verifies.
      const jwt = await new SignJWT({ ok: true }).setProtectedHeader({ alg }).sign(loaded.key);
      const verified = await jwtVerify(jwt, await importJWK(pair.publicJwk, alg));
      expect(verified.payload.ok).toBe(true);
    });
  }

  it('when the key file already exists, then writing refuses to overwrite it', async () => {
    const pair = await generateKeyPair('ES384');
    const file = join(dir, 'k.private.jwk.json');
    await writePrivateKeyFile(file, pair.privateJwk);
    const other = await generateKeyPair('ES384');
    await expect(writePrivateKeyFile(file, other.privateJwk)).rejects.toThrow(
      /refusing to overwrite/,
    );
    expect(JSON.parse(await readFile(file, 'utf8')).kid).toBe(pair.kid);
  });

  it('when the key is a PKCS#8 PEM without a kid, then the kid is the public key thumbprint', async () => {
    const pair = await joseGenerateKeyPair('ES384', { extractable: true });
    const file = join(dir, 'key.pem');
    await writeFile(file, await exportPKCS8(pair.privateKey));
    const loaded = await loadPrivateKey(file, 'ES384');
    expect(loaded.kid).toBe(await thumbprintKid(loaded.publicJwk));
    expect(loaded.publicJwk).not.toHaveProperty('d');
  });

  it('when the file holds only a public key, then loading fails saying so', async () => {
    const pair = await generateKeyPair('ES384');
    const file = join(dir, 'public.jwk.json');
    await writeFile(file, JSON.stringify(pair.publicJwk));
    await expect(loadPrivateKey(file, 'ES384')).rejects.toThrow(KeyFileError);
    await expect(loadPrivateKey(file, 'ES384')).rejects.toThrow(/no private part/);
  });

  it('when the key file is for another algorithm, then loading fails naming both', async () => {
    const pair = await generateKeyPair('RS384');
    const file = join(dir, 'rs.jwk.json');
    await writeFile(file, JSON.stringify(pair.privateJwk));
    await expect(loadPrivateKey(file, 'ES384')).rejects.toThrow(/RS384.*ES384/);
  });

  it('when an RSA key is smaller than 2048 bits (JWK or PEM), then loading fails saying so; 2048 bits load', async () => {
    const small = generateKeyPairSync('rsa', { modulusLength: 1024 }).privateKey;
    const jwkFile = join(dir, 'small.jwk.json');
    await writeFile(jwkFile, JSON.stringify(small.export({ format: 'jwk' })), { mode: 0o600 });
    const pemFile = join(dir, 'small.pem');
    await writeFile(pemFile, small.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600 });
    for (const file of [jwkFile, pemFile]) {
      const err = await loadPrivateKey(file, 'RS384').then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(KeyFileError);
      expect((err as Error).message).toMatch(/RSA key is 1024 bits; RS384 needs at least 2048/);
    }
    const enough = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey;
    const okFile = join(dir, 'ok.pem');
    await writeFile(okFile, enough.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600 });
    expect((await loadPrivateKey(okFile, 'RS384')).alg).toBe('RS384');
  });

  it('when the key file is missing, then the error names the file and the reason without content', async () => {
    await expect(loadPrivateKey(join(dir, 'absent.json'), 'ES384')).rejects.toThrow(
      /absent\.json: cannot read \(ENOENT\)/,
    );
  });
});

describe('buildJwks', () => {
  it('when active, retired and public-only keys exist, then every public key is published once and no private member appears', async () => {
    const active = await generateKeyPair('ES384');
    const retired = await generateKeyPair('RS384');
    const publicOnly = await generateKeyPair('ES384');
    await writePrivateKeyFile(
      join(dir, privateKeyFileName('centre-a', active.kid)),
      active.privateJwk,
    );
    await writePrivateKeyFile(
      join(dir, 'retired', privateKeyFileName('centre-b', retired.kid)),
      retired.privateJwk,
    );
    await writeFile(
      join(dir, `hsm.${publicOnly.kid}.public.jwk.json`),
      JSON.stringify(publicOnly.publicJwk),
    );
    // Things that must not be published: a symmetric key, a broken file, a non-key file.
    await writeFile(
      join(dir, 'secret.x.private.jwk.json'),
      JSON.stringify({ kty: 'oct', k: 'c2VjcmV0' }),
    );
    await writeFile(join(dir, 'broken.y.private.jwk.json'), '{ not json');
    await writeFile(join(dir, 'README.txt'), 'keys live here');

    const jwks = await buildJwks(dir);
    expect(jwks.keys.map((k) => k.kid).sort()).toEqual(
      [active.kid, retired.kid, publicOnly.kid].sort(),
    );
    for (const key of jwks.keys) {
      for (const m of PRIVATE_MEMBERS) expect(key).not.toHaveProperty(m);
      expect(key.use).toBe('sig');
    }
    expect(JSON.stringify(jwks)).not.toContain(active.privateJwk.d);
    expect(JSON.stringify(jwks)).not.toContain(retired.privateJwk.d);
  });

  it('when the folder does not exist, then the set is empty', async () => {
    expect(await buildJwks(join(dir, 'none'))).toEqual({ keys: [] });
  });

  it('when a key is retired, then it is no longer active but stays published until deleted', async () => {
    const old = await generateKeyPair('ES384');
    const fresh = await generateKeyPair('ES384');
    await writePrivateKeyFile(join(dir, privateKeyFileName('centre-a', old.kid)), old.privateJwk);
    await writePrivateKeyFile(
      join(dir, privateKeyFileName('centre-a', fresh.kid)),
      fresh.privateJwk,
    );
    const moved = await retireKey(dir, old.kid);
    expect(moved).toBe(join(dir, 'retired', privateKeyFileName('centre-a', old.kid)));
    const listed = await listKeys(dir);
    expect(listed.map((k) => [k.kid, k.status, k.centre])).toEqual(
      expect.arrayContaining([
        [fresh.kid, 'active', 'centre-a'],
        [old.kid, 'retired', 'centre-a'],
      ]),
    );
    expect((await buildJwks(dir)).keys.map((k) => k.kid).sort()).toEqual(
      [old.kid, fresh.kid].sort(),
    );
    await expect(retireKey(dir, 'no-such-kid')).rejects.toThrow(/no active key/);
  });

  it('when toPublicJwk strips an RSA private JWK, then only public members remain', async () => {
    const pair = await generateKeyPair('RS384');
    expect(Object.keys(toPublicJwk(pair.privateJwk)).sort()).toEqual([
      'alg',
      'e',
      'kid',
      'kty',
      'n',
      'use',
    ]);
  });
});

describe('JWKS router', () => {
  it('when GET /.well-known/jwks.json is requested, then the public set is served with Cache-Control', async () => {
    const pair = await generateKeyPair('ES384');
    await writePrivateKeyFile(join(dir, privateKeyFileName('centre-a', pair.kid)), pair.privateJwk);
    const app = express();
    app.use(createJwksRouter({ keysDir: dir, maxAgeSeconds: 120 }));
    const server = app.listen(0, '127.0.0.1');
    await new Promise((resolve) => server.once('listening', resolve));
    try {
      const { port } = server.address() as AddressInfo;
      const res = await fetch(`http://127.0.0.1:${port}/.well-known/jwks.json`);
      expect(res.status).toBe(200);
      expect(res.headers.get('cache-control')).toBe('public, max-age=120');
      expect(res.headers.get('content-type')).toMatch(/application\/json/);
      const body = (await res.json()) as { keys: Record<string, unknown>[] };
      expect(body.keys).toHaveLength(1);
      expect(body.keys[0]).toMatchObject({ kid: pair.kid, kty: 'EC', crv: 'P-384' });
      expect(body.keys[0]).not.toHaveProperty('d');
    } finally {
      await new Promise((resolve) => server.close(resolve));
    }
  });
});

describe('keys command', () => {
  it('when `keys generate` runs, then it writes a 0600 key and prints the public JWKS, kid and centre-file lines', async () => {
    const keysDir = join(dir, 'keys');
    const cli = join(import.meta.dirname, '..', '..', 'src', 'cli.ts');
    const { stdout } = await run(
      process.execPath,
      [
        '--import',
        'tsx',
        cli,
        'keys',
        'generate',
        '--centre',
        'centre-x',
        '--alg',
        'RS384',
        '--keys-dir',
        keysDir,
      ],
      {
        env: { ...process.env, LHN_PSEUDONYM_SECRET: '' },
      },
    );
    const files = await readdir(keysDir);
    expect(files).toHaveLength(1);
    const file = join(keysDir, files[0]!);
    expect((await stat(file)).mode & 0o777).toBe(0o600);
    const privateJwk = JSON.parse(await readFile(file, 'utf8'));
    expect(files[0]).toBe(privateKeyFileName('centre-x', privateJwk.kid));
    expect(stdout).toContain(`kid: ${privateJwk.kid}`);
    expect(stdout).toContain('alg: RS384');
    expect(stdout).toContain(`privateKeyFile: ${file}`);
    expect(stdout).not.toContain(privateJwk.d);
    const printed = JSON.parse(stdout.slice(stdout.indexOf('{'), stdout.lastIndexOf('}') + 1));
    expect(printed.keys[0]).toMatchObject({
      kid: privateJwk.kid,
      n: privateJwk.n,
      e: privateJwk.e,
    });

    // Without --keys-dir the folder comes from the service config (LHN_KEYS_DIR), and no
    // pseudonym secret is needed for key management.
    const list = await run(process.execPath, ['--import', 'tsx', cli, 'keys', 'list'], {
      env: { ...process.env, LHN_KEYS_DIR: keysDir, LHN_PSEUDONYM_SECRET: '', LHN_CONFIG: '' },
    });
    expect(list.stdout).toMatch(new RegExp(`active\\s+centre-x\\s+RS384\\s+${privateJwk.kid}`));
  });

  it('when `keys generate` gets an unknown algorithm, then it exits non-zero without writing', async () => {
    const keysDir = join(dir, 'keys2');
    await mkdir(keysDir);
    await chmod(keysDir, 0o700);
    const cli = join(import.meta.dirname, '..', '..', 'src', 'cli.ts');
    await expect(
      run(process.execPath, [
        '--import',
        'tsx',
        cli,
        'keys',
        'generate',
        '--centre',
        'centre-x',
        '--alg',
        'HS256',
        '--keys-dir',
        keysDir,
      ]),
    ).rejects.toMatchObject({
      code: 2,
      stderr: expect.stringContaining('--alg: expected ES384 or RS384'),
    });
    expect(await readdir(keysDir)).toEqual([]);
  });
});
