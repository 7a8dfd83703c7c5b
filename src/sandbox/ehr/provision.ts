// One call that connects a centre to a sandbox EHR the way centre IT would: generate a key
// pair, write the private key (0600), register the client with its public JWKS, and return
// a parsed centre config pointing at the sandbox. Used by the demo and by tests.
import { join } from 'node:path';
import { parseCentre, type CentreConfig } from '../../config/centre.js';
import {
  generateKeyPair,
  privateKeyFileName,
  writePrivateKeyFile,
  type SigningAlg,
} from '../../auth/keys.js';
import type { SandboxEhr } from './index.js';

export interface ProvisionSandboxCentreOptions {
  /** Folder for the private key (created 0700 if missing). */
  keysDir: string;
  centreId?: string;
  clientId?: string;
  alg?: SigningAlg;
  /** Scopes the centre asks for (default: the centre schema's default). */
  scopes?: string[];
  /** Scopes the sandbox allows this client (default: any). */
  allowedScopes?: string[];
  scopePolicy?: 'reject' | 'downscope';
  /** Register the key by JWKS URL instead of inline (e.g. the bridge's own jwks endpoint). */
  jwksUrl?: string;
  /** Any other centre-file fields (cohort, pull, limits, mapping...). */
  centre?: Record<string, unknown>;
}

export interface ProvisionedSandboxCentre {
  centre: CentreConfig;
  kid: string;
  privateKeyFile: string;
}

/** Generates a key, registers a client with the sandbox EHR and returns its centre config. */
export async function provisionSandboxCentre(
  ehr: SandboxEhr,
  options: ProvisionSandboxCentreOptions,
): Promise<ProvisionedSandboxCentre> {
  const centreId = options.centreId ?? 'sandbox-centre';
  const clientId = options.clientId ?? `${centreId}-client`;
  const alg = options.alg ?? 'ES384';
  const pair = await generateKeyPair(alg);
  const privateKeyFile = join(options.keysDir, privateKeyFileName(centreId, pair.kid));
  await writePrivateKeyFile(privateKeyFile, pair.privateJwk);
  ehr.registerClient({
    clientId,
    ...(options.jwksUrl ? { jwksUrl: options.jwksUrl } : { jwks: { keys: [pair.publicJwk] } }),
    ...(options.allowedScopes ? { scopes: options.allowedScopes } : {}),
    ...(options.scopePolicy ? { scopePolicy: options.scopePolicy } : {}),
  });
  const centre = parseCentre(
    {
      id: centreId,
      name: `Sandbox centre ${centreId}`,
      cohort: { group: 'all-patients' },
      ...options.centre,
      fhir: { baseUrl: ehr.baseUrl, ...(options.centre?.fhir as object | undefined) },
      auth: {
        clientId,
        privateKeyFile,
        kid: pair.kid,
        alg,
        ...(options.scopes ? { scopes: options.scopes } : {}),
        ...(options.centre?.auth as object | undefined),
      },
    },
    join(options.keysDir, `${centreId}.centre.json`),
  );
  return { centre, kid: pair.kid, privateKeyFile };
}
