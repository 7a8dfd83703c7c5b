// Key material for SMART Backend Services: each centre signs its client assertions with its
// own private key; the matching public keys are published as one JWKS. Private keys live in
// files (mode 0600, folder 0700) in the keys folder, named so that a folder listing says
// which centre and kid each file holds:
//
//   <keysDir>/<centre>.<kid>.private.jwk.json          active key (published)
//   <keysDir>/retired/<centre>.<kid>.private.jwk.json  rotated out, still published until deleted
//   <keysDir>/<anything>.public.jwk.json               a public key whose private half lives elsewhere
//
// buildJwks publishes the public half of every key found in both places, so an EHR that
// caches our JWKS keeps verifying assertions signed with a key being rotated out.
import { chmod, mkdir, readdir, rename, stat, writeFile } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import {
  calculateJwkThumbprint,
  exportJWK,
  generateKeyPair as joseGenerateKeyPair,
  importJWK,
  importPKCS8,
  type JWK,
} from 'jose';
import type { Logger } from '../util/logger.js';
import { readTextFile } from '../config/text.js';

/** The signing algorithms SMART Backend Services requires servers to support. */
export const SIGNING_ALGS = ['ES384', 'RS384'] as const;
export type SigningAlg = (typeof SIGNING_ALGS)[number];

/** A private key handle as jose returns it (a WebCrypto CryptoKey). */
export type SigningKey = Awaited<ReturnType<typeof importPKCS8>>;

/** A JSON Web Key Set. */
export interface Jwks {
  keys: JWK[];
}

/** A freshly generated key pair, with both halves as JWKs. */
export interface GeneratedKeyPair {
  kid: string;
  alg: SigningAlg;
  /** Private JWK (includes the public members); write it with writePrivateKeyFile. */
  privateJwk: JWK;
  /** Public JWK only: safe to publish. */
  publicJwk: JWK;
}

/** A private key loaded from a file, ready for signing. */
export interface LoadedPrivateKey {
  key: SigningKey;
  alg: SigningAlg;
  /** The kid stored in the file, or the JWK thumbprint of the public key when absent. */
  kid: string;
  /** The kid the file itself carries (a JWK's "kid"); undefined for PEM files and kid-less JWKs. */
  fileKid: string | undefined;
  /** The public half, for diagnostics and JWKS comparisons. */
  publicJwk: JWK;
}

/** Which key file an entry of `listKeys` came from. */
export interface KeyFileInfo {
  file: string;
  centre: string | undefined;
  kid: string;
  alg: string | undefined;
  status: 'active' | 'retired';
  /** True when the file holds the private key (false for *.public.jwk.json). */
  hasPrivate: boolean;
}

/** Members that make a JWK private (RSA, EC, OKP and symmetric). */
const PRIVATE_MEMBERS = ['d', 'p', 'q', 'dp', 'dq', 'qi', 'oth', 'k'] as const;

/** Thrown when a key file cannot be read, parsed or used. */
export class KeyFileError extends Error {
  constructor(
    readonly file: string,
    reason: string,
  ) {
    super(`key file ${file}: ${reason}`);
    this.name = 'KeyFileError';
  }
}

/** Returns the public half of a JWK: private members removed, kid/alg/use kept. */
export function toPublicJwk(jwk: JWK): JWK {
  const copy: Record<string, unknown> = { ...jwk };
  for (const member of PRIVATE_MEMBERS) delete copy[member];
  delete copy.key_ops;
  return copy;
}

/** The RFC 7638 thumbprint of a key's public members; our kid convention. */
export async function thumbprintKid(jwk: JWK): Promise<string> {
  return calculateJwkThumbprint(toPublicJwk(jwk), 'sha256');
}

/**
 * Generates an extractable signing key pair for SMART Backend Services.
 * The kid is the JWK thumbprint (SHA-256) of the public key, so it is stable and unique.
 */
export async function generateKeyPair(alg: SigningAlg): Promise<GeneratedKeyPair> {
  if (!SIGNING_ALGS.includes(alg)) throw new Error(`unsupported algorithm ${String(alg)}`);
  const pair = await joseGenerateKeyPair(alg, {
    extractable: true,
    ...(alg === 'RS384' ? { modulusLength: 3072 } : {}),
  });
  const privateJwk = await exportJWK(pair.privateKey);
  const kid = await thumbprintKid(privateJwk);
  const decorated: JWK = { ...privateJwk, kid, alg, use: 'sig' };
  return { kid, alg, privateJwk: decorated, publicJwk: toPublicJwk(decorated) };
}

/** File name of a centre's private key under the naming convention above. */
export function privateKeyFileName(centre: string, kid: string): string {
  return `${centre}.${kid}.private.jwk.json`;
}

/**
 * Writes a private JWK to `file` with mode 0600, creating missing folders with mode 0700.
 * Refuses to overwrite an existing file (a key is never silently replaced).
 */
export async function writePrivateKeyFile(file: string, jwk: JWK): Promise<void> {
  await mkdir(dirname(file), { recursive: true, mode: 0o700 });
  try {
    await writeFile(file, `${JSON.stringify(jwk, null, 2)}\n`, { mode: 0o600, flag: 'wx' });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST')
      throw new KeyFileError(file, 'already exists; refusing to overwrite a key');
    throw err;
  }
  // The mode given to writeFile is filtered by the umask; make sure it is exactly 0600.
  await chmod(file, 0o600);
}

/**
 * The permission bits of a private key file when group or others may read or write it (mode
 * & 0o077), else undefined (also when the file cannot be stat'ed, or on Windows).
 */
export async function insecureKeyFileMode(file: string): Promise<number | undefined> {
  if (process.platform === 'win32') return undefined;
  try {
    const mode = (await stat(file)).mode & 0o777;
    return (mode & 0o077) !== 0 ? mode : undefined;
  } catch {
    return undefined;
  }
}

/** What to say about a private key file others can read, and how to fix it. */
export function insecureKeyFileMessage(file: string, mode: number): string {
  return (
    `the private key file ${file} has mode 0${mode.toString(8)}: group or others can read it. ` +
    `Run \`chmod 600 ${file}\` (owner only); on Kubernetes, mount the secret with ` +
    'defaultMode: 0400 (secret volumes default to 0644)'
  );
}

/** The smallest RSA modulus RS384 may use (RFC 7518 3.3; jose refuses to sign with less). */
export const MIN_RSA_MODULUS_BITS = 2048;

/** The modulus length in bits of an RSA JWK, undefined for other key types. */
function rsaModulusBits(jwk: JWK): number | undefined {
  if (jwk.kty !== 'RSA' || typeof jwk.n !== 'string') return undefined;
  const n = Buffer.from(jwk.n, 'base64url');
  let start = 0;
  while (start < n.length && n[start] === 0) start++;
  if (start === n.length) return 0;
  return (n.length - start - 1) * 8 + (32 - Math.clz32(n[start]!));
}

/** Key files already warned about in this process (the warning is logged once per file). */
const warnedKeyFiles = new Set<string>();

/**
 * Loads a private signing key from a JWK (.json) or PKCS#8 PEM file.
 * The kid is the JWK's own kid when present, else the thumbprint of its public half.
 * A file group or others can read is still used (Kubernetes secret volumes are 0644 unless
 * defaultMode says otherwise), but `logger` gets a warning, once per file and process.
 */
export async function loadPrivateKey(
  file: string,
  alg: SigningAlg,
  options: { logger?: Logger } = {},
): Promise<LoadedPrivateKey> {
  const mode = await insecureKeyFileMode(file);
  if (mode !== undefined && options.logger && !warnedKeyFiles.has(file)) {
    warnedKeyFiles.add(file);
    options.logger.warn({ file, mode: `0${mode.toString(8)}` }, insecureKeyFileMessage(file, mode));
  }
  let text: string;
  try {
    text = await readTextFile(file);
  } catch (err) {
    throw new KeyFileError(file, `cannot read (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
  }
  const trimmed = text.trimStart();
  let key: SigningKey;
  let fileKid: string | undefined;
  if (trimmed.startsWith('-----BEGIN')) {
    if (!trimmed.startsWith('-----BEGIN PRIVATE KEY-----'))
      throw new KeyFileError(
        file,
        'expected a PKCS#8 PEM ("BEGIN PRIVATE KEY"); convert with `openssl pkcs8 -topk8 -nocrypt`',
      );
    try {
      key = await importPKCS8(trimmed, alg, { extractable: true });
    } catch (err) {
      throw new KeyFileError(file, `not a usable ${alg} PKCS#8 key (${(err as Error).message})`);
    }
  } else {
    let jwk: JWK;
    try {
      jwk = JSON.parse(text) as JWK;
    } catch {
      throw new KeyFileError(file, 'neither a JWK (JSON) nor a PEM file');
    }
    if (typeof jwk !== 'object' || jwk === null || typeof jwk.d !== 'string')
      throw new KeyFileError(file, 'the JWK has no private part ("d"); this is a public key');
    if (jwk.alg && jwk.alg !== alg)
      throw new KeyFileError(file, `the key is for ${jwk.alg}, but the centre file says ${alg}`);
    fileKid = jwk.kid;
    try {
      const imported = await importJWK({ ...jwk, ext: true }, alg, { extractable: true });
      if (imported instanceof Uint8Array) throw new Error('symmetric keys cannot sign assertions');
      key = imported;
    } catch (err) {
      throw new KeyFileError(file, `not a usable ${alg} key (${(err as Error).message})`);
    }
  }
  const publicJwk = toPublicJwk(await exportJWK(key));
  const bits = rsaModulusBits(publicJwk);
  if (bits !== undefined && bits < MIN_RSA_MODULUS_BITS)
    throw new KeyFileError(
      file,
      `the RSA key is ${bits} bits; ${alg} needs at least ${MIN_RSA_MODULUS_BITS} (EHRs refuse smaller keys), so generate a new key`,
    );
  const kid = fileKid ?? (await thumbprintKid(publicJwk));
  return { key, alg, kid, fileKid, publicJwk: { ...publicJwk, kid, alg, use: 'sig' } };
}

async function listJwkFiles(dir: string): Promise<string[]> {
  try {
    const names = await readdir(dir);
    return names
      .filter((n) => n.endsWith('.jwk.json'))
      .sort()
      .map((n) => join(dir, n));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
}

function centreFromFileName(file: string): string | undefined {
  const m = /^([a-z0-9][a-z0-9-]*)\.[^.]+\.(private|public)\.jwk\.json$/.exec(basename(file));
  return m?.[1];
}

/** Lists every key file in the keys folder (active first, then retired/). */
export async function listKeys(keysDir: string, logger?: Logger): Promise<KeyFileInfo[]> {
  const out: KeyFileInfo[] = [];
  for (const [dir, status] of [
    [keysDir, 'active'],
    [join(keysDir, 'retired'), 'retired'],
  ] as const) {
    for (const file of await listJwkFiles(dir)) {
      try {
        const jwk = JSON.parse(await readTextFile(file)) as JWK;
        if (typeof jwk !== 'object' || jwk === null || typeof jwk.kty !== 'string')
          throw new Error('not a JWK');
        if (jwk.kty === 'oct') throw new Error('symmetric keys are never published');
        out.push({
          file,
          centre: centreFromFileName(file),
          kid: jwk.kid ?? (await thumbprintKid(jwk)),
          alg: jwk.alg,
          status,
          hasPrivate: typeof jwk.d === 'string',
        });
      } catch (err) {
        // One bad file must not take the JWKS endpoint down; say which file, never its content.
        logger?.warn({ file, reason: (err as Error).message }, 'skipping unusable key file');
      }
    }
  }
  return out;
}

/**
 * Builds the public JWKS from every key file in `keysDir` and `keysDir/retired`.
 * Private members are stripped; duplicate kids are published once; unusable files are
 * skipped (and logged when a logger is given). A missing folder gives an empty set.
 */
export async function buildJwks(keysDir: string, options: { logger?: Logger } = {}): Promise<Jwks> {
  const keys: JWK[] = [];
  const seen = new Set<string>();
  for (const info of await listKeys(keysDir, options.logger)) {
    if (seen.has(info.kid)) continue;
    const jwk = JSON.parse(await readTextFile(info.file)) as JWK;
    const pub = toPublicJwk(jwk);
    seen.add(info.kid);
    keys.push({ ...pub, kid: info.kid, use: pub.use ?? 'sig' });
  }
  return { keys };
}

/**
 * Moves a key into `retired/`: it stays in the JWKS (EHRs with cached assertions or JWKS keep
 * working) until the file is deleted. Returns the new path.
 */
export async function retireKey(keysDir: string, kid: string): Promise<string> {
  const match = (await listKeys(keysDir)).find((k) => k.kid === kid && k.status === 'active');
  if (!match) throw new KeyFileError(join(keysDir, `*.${kid}.*`), 'no active key with that kid');
  const target = join(keysDir, 'retired', basename(match.file));
  await mkdir(dirname(target), { recursive: true, mode: 0o700 });
  await rename(match.file, target);
  return target;
}

/** The file mode bits of a path (for checks and tests). */
export async function fileMode(path: string): Promise<number> {
  return (await stat(path)).mode & 0o777;
}
