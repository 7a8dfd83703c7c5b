// `lhn-bridge keys`: generate, list and retire the signing keys centres register with their
// EHR. Generating writes the private key (0600, folder 0700) and prints only public material:
// the JWKS to paste into the EHR, the kid, and the lines for the centre file.
import type { Command } from 'commander';
import { loadFolderConfig } from './service-paths.js';
import {
  buildJwks,
  fileMode,
  generateKeyPair,
  listKeys,
  privateKeyFileName,
  retireKey,
  SIGNING_ALGS,
  writePrivateKeyFile,
  type SigningAlg,
} from '../auth/keys.js';
import { dirname, join, resolve } from 'node:path';
import { CliError } from './cli-error.js';

interface KeysDirOption {
  keysDir?: string;
}

/** The keys folder: --keys-dir, else the service config's keysDir (LHN_KEYS_DIR / LHN_CONFIG). */
function resolveKeysDir(opts: KeysDirOption): string {
  return opts.keysDir ?? loadFolderConfig(process.env).keysDir;
}

/**
 * A file-system failure on the keys folder as a message naming the folder and the fix
 * (a file where the folder should be, no permission), instead of a raw EEXIST / ENOTDIR.
 */
async function onKeysDir<T>(dir: string, body: () => Promise<T>): Promise<T> {
  try {
    return await body();
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const where = `keys folder ${dir} (--keys-dir, LHN_KEYS_DIR or keysDir)`;
    if (code === 'EEXIST' || code === 'ENOTDIR')
      throw new CliError(`${where}: a file is in the way; it must be a folder`);
    if (code === 'EACCES' || code === 'EPERM')
      throw new CliError(
        `${where}: permission denied; run as the service user or fix the folder's owner`,
      );
    if (code === 'EROFS') throw new CliError(`${where}: on a read-only file system`);
    throw err;
  }
}

function print(line = ''): void {
  process.stdout.write(`${line}\n`);
}

/** Registers `keys generate | list | jwks | retire` on the program. */
export function registerKeysCommand(program: Command): void {
  const keys = program
    .command('keys')
    .description(
      'manage the signing keys centres register with their EHR (SMART Backend Services)',
    );

  keys
    .command('generate')
    .description(
      'generate a key pair for a centre: writes the private key (0600), prints the public JWKS',
    )
    .requiredOption('--centre <id>', 'centre id (as in the centre file)')
    .option('--alg <alg>', 'signing algorithm: ES384 or RS384', 'ES384')
    .option('--keys-dir <dir>', 'keys folder (default: keysDir from the service config, ./keys)')
    .action(async (opts: KeysDirOption & { centre: string; alg: string }) => {
      if (!/^[a-z0-9][a-z0-9-]{1,62}$/.test(opts.centre))
        throw new CliError(
          `--centre: expected a centre id (lower-case letters, digits, dashes), got "${opts.centre}"`,
        );
      if (!(SIGNING_ALGS as readonly string[]).includes(opts.alg))
        throw new CliError(`--alg: expected ES384 or RS384, got "${opts.alg}"`);
      const dir = resolveKeysDir(opts);
      const pair = await generateKeyPair(opts.alg as SigningAlg);
      const file = join(dir, privateKeyFileName(opts.centre, pair.kid));
      await onKeysDir(dir, () => writePrivateKeyFile(file, pair.privateJwk));
      const dirMode = await fileMode(dirname(file));
      if ((dirMode & 0o077) !== 0)
        process.stderr.write(
          `warning: ${dirname(file)} is accessible to other users (mode ${dirMode.toString(8)}); run: chmod 700 ${dirname(file)}\n`,
        );
      print(`Private key written to ${file} (mode 0600). Keep it secret; back it up encrypted.`);
      print();
      print(`kid: ${pair.kid}`);
      print();
      // The service's public address when it is configured (LHN_PUBLIC_URL, LHN_CONFIG).
      const publicUrl = loadFolderConfig(process.env).publicUrl?.replace(/\/+$/, '');
      print('Public JWKS (register it with the EHR, or register our JWKS URL');
      print(
        `${publicUrl ?? 'https://<this service>'}/.well-known/jwks.json, which now includes it):`,
      );
      print(JSON.stringify({ keys: [pair.publicJwk] }, null, 2));
      print();
      print('Centre file (auth section):');
      print('auth:');
      print(`  privateKeyFile: ${resolve(file)}   # or a path relative to the centre file`);
      print(`  kid: ${pair.kid}`);
      print(`  alg: ${pair.alg}`);
    });

  keys
    .command('list')
    .description('list the keys in the keys folder (active and retired)')
    .option('--keys-dir <dir>', 'keys folder (default: keysDir from the service config, ./keys)')
    .action(async (opts: KeysDirOption) => {
      const dir = resolveKeysDir(opts);
      const found = await onKeysDir(dir, () => listKeys(dir));
      if (found.length === 0) {
        print(`No keys in ${dir}. Create one with: lhn-bridge keys generate --centre <id>`);
        return;
      }
      for (const k of found)
        print(
          [
            k.status.padEnd(7),
            (k.centre ?? '-').padEnd(20),
            (k.alg ?? '-').padEnd(6),
            k.kid,
            k.hasPrivate ? '' : '(public only)',
          ]
            .join('  ')
            .trimEnd(),
        );
    });

  keys
    .command('jwks')
    .description('print the public JWKS that /.well-known/jwks.json serves')
    .option('--keys-dir <dir>', 'keys folder (default: keysDir from the service config, ./keys)')
    .action(async (opts: KeysDirOption) => {
      const dir = resolveKeysDir(opts);
      print(JSON.stringify(await onKeysDir(dir, () => buildJwks(dir)), null, 2));
    });

  keys
    .command('retire')
    .description('move a key to retired/: still published until deleted, no longer active')
    .argument('<kid>', 'the kid of the key to retire')
    .option('--keys-dir <dir>', 'keys folder (default: keysDir from the service config, ./keys)')
    .action(async (kid: string, opts: KeysDirOption) => {
      try {
        const target = await retireKey(resolveKeysDir(opts), kid);
        print(`Retired: ${target}. It stays in the JWKS until you delete the file.`);
      } catch (err) {
        throw new CliError((err as Error).message, 1);
      }
    });
}
