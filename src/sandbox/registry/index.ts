// A local registry receiver implementing the ingest contract (docs/registry-contract.md)
// for the demo and the tests: a real HTTP server that validates each submission, stores
// visits by visit key with their versions, applies retractions, answers a repeated
// submission id as a duplicate without storing it twice, re-applies a revert (an earlier
// version sent again, Idempotency-Key `<submissionId>-r<seq>.<incarnation>`, or
// `<submissionId>.<incarnation>` after the bridge's Redis lost its state), and can be told to
// fail (503 for a while, 400 for one submission) so delivery retries can be exercised. With
// `idempotencyReplay` it sits behind an emulated off-the-shelf idempotency layer that replays
// the cached answer of a repeated Idempotency-Key. Never used in production paths.
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createHash, timingSafeEqual, randomBytes } from 'node:crypto';
import {
  RegistrySubmissionSchema,
  type RegistrySubmission,
  type VisitSubmission,
} from '../../registry/submission.js';

/** Largest request body accepted (a submission is a few KB). */
const MAX_BODY_BYTES = 1024 * 1024;

export interface SandboxRegistryOptions {
  port?: number;
  host?: string;
  /** When set, POST /submissions requires `Authorization: Bearer <token>`. */
  token?: string;
  /**
   * When set, `POST /oauth/token` issues bearer tokens for this client (OAuth2 client
   * credentials, client authenticated by HTTP Basic or form fields); those tokens are accepted
   * on POST /submissions as well as `token`.
   */
  clientCredentials?: { clientId: string; clientSecret: string; expiresInSeconds?: number };
  /**
   * Emulates standard idempotency middleware (the IETF Idempotency-Key draft, Stripe-style
   * layers) in front of the ingest handler: the first 2xx answer to an Idempotency-Key is
   * cached and replayed, without reaching the handler, to any later request with that key and
   * the same body (header `Idempotent-Replayed: true`); the same key with another body is
   * answered 422, and while the key's first request is still being handled, 409. A registry
   * built that way is why a revert must not repeat the earlier version's key.
   */
  idempotencyReplay?: boolean;
}

/**
 * An Idempotency-Key the contract allows for a submission (docs/registry-contract.md,
 * Idempotency): its `submissionId`, or `<submissionId>-r<seq>` for a revert, either followed
 * by `.<incarnation>` (16 lowercase hex digits: the bridge's Redis state it was enqueued in).
 * Gives the revert's sequence number, or null when the job id part is the plain
 * submissionId; undefined when the key is none of these.
 */
export function parseIdempotencyKey(key: string, submissionId: string): number | null | undefined {
  const dot = key.lastIndexOf('.');
  if (dot >= 0) {
    if (!/^[0-9a-f]{16}$/.test(key.slice(dot + 1))) return undefined;
    key = key.slice(0, dot);
  }
  if (key === submissionId) return null;
  const prefix = `${submissionId}-r`;
  if (!key.startsWith(prefix)) return undefined;
  const seq = key.slice(prefix.length);
  return /^[1-9]\d{0,15}$/.test(seq) ? Number(seq) : undefined;
}

/** One accepted submission, in arrival order. */
export interface AcceptedSubmission {
  submissionId: string;
  kind: RegistrySubmission['kind'];
  visitKey: string;
  centreId: string;
  receivedAt: string;
  /** The request's Idempotency-Key, when it sent one. */
  idempotencyKey?: string;
  /** The revert's sequence number (from an Idempotency-Key `<submissionId>-r<seq>[.<inc>]`). */
  revertSeq?: number;
  submission: RegistrySubmission;
}

/** The registry's current view of one visit. */
export interface StoredVisit {
  visitKey: string;
  centreId: string;
  /** 1 for the first accepted version; +1 for each new content or retraction. */
  version: number;
  retracted: boolean;
  retractionReason?: string;
  /** The latest visit content (kept after a retraction, for inspection). */
  current?: VisitSubmission;
  /** Submission ids applied to this visit, oldest first. */
  history: string[];
}

export interface SandboxRegistryCounts {
  /** POST /submissions requests received (including faulted and rejected ones). */
  requests: number;
  accepted: number;
  duplicates: number;
  rejected: number;
  unauthorized: number;
  faulted: number;
  /** Answers replayed by the idempotency layer (`idempotencyReplay`) without the handler. */
  replayed: number;
}

export interface SandboxRegistryFaults {
  /** Answer 503 (with Retry-After) to the next `requests` submission requests. */
  unavailableFor(requests: number): void;
  /** Answer 503 until `ms` milliseconds from now. */
  unavailableForMs(ms: number): void;
  /** Answer 400 with `reason` whenever this submission id is posted. */
  rejectSubmission(submissionId: string, reason?: string): void;
  /** Delay each submission response by `ms` (0 turns it off). */
  delayMs(ms: number): void;
  /**
   * The next post of this submission id is read, then stored only after `ms` (and answered
   * if the client is still there): a registry still committing a request the client has
   * given up on (a timeout).
   */
  slowCommit(submissionId: string, ms: number): void;
  /** Turns every fault off. */
  clear(): void;
}

export interface SandboxRegistry {
  /** Base URL, e.g. `http://127.0.0.1:PORT`; the ingest endpoint is `${url}/submissions`. */
  url: string;
  /** URL of the client-credentials token endpoint (when configured). */
  tokenUrl: string;
  faults: SandboxRegistryFaults;
  counts(): SandboxRegistryCounts;
  /** Accepted submissions in arrival order. */
  submissions(): AcceptedSubmission[];
  /** Current state of every visit. */
  visits(): StoredVisit[];
  /** Forgets everything stored (not the faults). */
  reset(): void;
  close(): Promise<void>;
}

/** An answer of the ingest handler (a JSON acknowledgement, or a problem). */
interface Reply {
  status: number;
  body: unknown;
  problem?: boolean;
}

interface Problem {
  status: number;
  title: string;
  detail?: string;
  errors?: { path: string; message: string }[];
}

function sendJson(res: ServerResponse, status: number, body: unknown, headers = {}): void {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(text),
    ...headers,
  });
  res.end(text);
}

function sendProblem(res: ServerResponse, problem: Problem, headers = {}): void {
  const text = JSON.stringify({ type: 'about:blank', ...problem });
  res.writeHead(problem.status, {
    'content-type': 'application/problem+json',
    'content-length': Buffer.byteLength(text),
    ...headers,
  });
  res.end(text);
}

async function readBody(req: IncomingMessage): Promise<Buffer | undefined> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > MAX_BODY_BYTES) return undefined;
    chunks.push(chunk);
  }
  return Buffer.concat(chunks);
}

function safeEqual(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

/** Starts the sandbox registry on loopback (port 0 = any free port). */
export async function startSandboxRegistry(
  options: SandboxRegistryOptions = {},
): Promise<SandboxRegistry> {
  const host = options.host ?? '127.0.0.1';
  let accepted: AcceptedSubmission[] = [];
  let byId = new Map<string, AcceptedSubmission>();
  let visits = new Map<string, StoredVisit>();
  const counts: SandboxRegistryCounts = {
    requests: 0,
    accepted: 0,
    duplicates: 0,
    rejected: 0,
    unauthorized: 0,
    faulted: 0,
    replayed: 0,
  };
  /** The idempotency layer's cache (`idempotencyReplay`): key -> body hash and answer. */
  let replayCache = new Map<string, { bodyHash: string; reply?: Reply }>();
  const issuedTokens = new Map<string, number>();
  let unavailableRequests = 0;
  let unavailableUntil = 0;
  let delay = 0;
  const rejections = new Map<string, string>();
  const slowCommits = new Map<string, number>();

  const faults: SandboxRegistryFaults = {
    unavailableFor(requests) {
      unavailableRequests = requests;
    },
    unavailableForMs(ms) {
      unavailableUntil = Date.now() + ms;
    },
    rejectSubmission(submissionId, reason = 'rejected by the sandbox registry fault switch') {
      rejections.set(submissionId, reason);
    },
    delayMs(ms) {
      delay = ms;
    },
    slowCommit(submissionId, ms) {
      slowCommits.set(submissionId, ms);
    },
    clear() {
      unavailableRequests = 0;
      unavailableUntil = 0;
      delay = 0;
      rejections.clear();
      slowCommits.clear();
    },
  };

  function authorized(req: IncomingMessage): boolean {
    if (!options.token && !options.clientCredentials) return true;
    const header = req.headers.authorization ?? '';
    const match = /^Bearer (.+)$/.exec(header);
    if (!match) return false;
    const presented = match[1]!;
    if (options.token && safeEqual(presented, options.token)) return true;
    const expires = issuedTokens.get(presented);
    return expires !== undefined && expires > Date.now();
  }

  function apply(
    submission: RegistrySubmission,
    key: string | undefined,
    revertSeq: number | null,
  ): { status: number; body: unknown } {
    const entry: AcceptedSubmission = {
      submissionId: submission.submissionId,
      kind: submission.kind,
      visitKey: submission.visitKey,
      centreId: submission.centreId,
      receivedAt: new Date().toISOString(),
      ...(key !== undefined ? { idempotencyKey: key } : {}),
      ...(revertSeq !== null ? { revertSeq } : {}),
      submission,
    };
    accepted.push(entry);
    byId.set(submission.submissionId, entry);
    counts.accepted += 1;
    const existing = visits.get(submission.visitKey);
    const visit: StoredVisit = existing ?? {
      visitKey: submission.visitKey,
      centreId: submission.centreId,
      version: 0,
      retracted: false,
      history: [],
    };
    visit.version += 1;
    visit.history.push(submission.submissionId);
    if (submission.kind === 'visit') {
      visit.current = submission;
      visit.retracted = false;
      delete visit.retractionReason;
    } else {
      visit.retracted = true;
      visit.retractionReason = submission.reason;
    }
    visits.set(submission.visitKey, visit);
    const status =
      submission.kind === 'retraction' ? 'retracted' : existing ? 'updated' : 'created';
    return {
      status: existing || submission.kind === 'retraction' ? 200 : 201,
      body: { status, submissionId: submission.submissionId, version: visit.version },
    };
  }

  async function handleSubmission(req: IncomingMessage, res: ServerResponse): Promise<void> {
    counts.requests += 1;
    if (delay > 0) await new Promise((r) => setTimeout(r, delay));
    if (unavailableRequests > 0 || Date.now() < unavailableUntil) {
      if (unavailableRequests > 0) unavailableRequests -= 1;
      counts.faulted += 1;
      req.resume();
      sendProblem(
        res,
        { status: 503, title: 'Service Unavailable', detail: 'sandbox registry fault switch' },
        { 'retry-after': '1' },
      );
      return;
    }
    if (!authorized(req)) {
      counts.unauthorized += 1;
      req.resume();
      sendProblem(
        res,
        { status: 401, title: 'Unauthorized', detail: 'a valid bearer token is required' },
        { 'www-authenticate': 'Bearer' },
      );
      return;
    }
    const contentType = req.headers['content-type'] ?? '';
    if (!/^application\/json\b/.test(contentType)) {
      counts.rejected += 1;
      req.resume();
      sendProblem(res, {
        status: 415,
        title: 'Unsupported Media Type',
        detail: 'send application/json',
      });
      return;
    }
    const raw = await readBody(req);
    if (!raw) {
      counts.rejected += 1;
      sendProblem(res, { status: 413, title: 'Payload Too Large', detail: 'at most 1 MB' });
      return;
    }
    const header = req.headers['idempotency-key'];
    const key = typeof header === 'string' ? header : undefined;
    if (!options.idempotencyReplay || key === undefined) {
      send(res, await ingest(raw, key));
      return;
    }
    // The emulated idempotency layer: it knows keys and request bodies, not submissions.
    const bodyHash = createHash('sha256').update(raw).digest('hex');
    const seen = replayCache.get(key);
    if (seen) {
      if (seen.bodyHash !== bodyHash) {
        counts.rejected += 1;
        sendProblem(res, {
          status: 422,
          title: 'Idempotency-Key reused',
          detail: 'this Idempotency-Key was used with another request body',
        });
      } else if (!seen.reply) {
        sendProblem(res, {
          status: 409,
          title: 'Conflict',
          detail: 'a request with this Idempotency-Key is still being processed',
        });
      } else {
        counts.replayed += 1;
        send(res, seen.reply, { 'idempotent-replayed': 'true' });
      }
      return;
    }
    const entry: { bodyHash: string; reply?: Reply } = { bodyHash };
    replayCache.set(key, entry);
    const reply = await ingest(raw, key).catch((err: unknown) => {
      replayCache.delete(key);
      throw err;
    });
    // Only a success is kept (as most such layers do): a fault or a rejection may pass later.
    if (reply.status >= 200 && reply.status < 300) entry.reply = reply;
    else replayCache.delete(key);
    send(res, reply);
  }

  /** Sends a reply, unless the client has gone (it gave up on a slow commit). */
  function send(res: ServerResponse, reply: Reply, headers = {}): void {
    if (res.destroyed) return;
    if (reply.problem) sendProblem(res, reply.body as Problem, headers);
    else sendJson(res, reply.status, reply.body, headers);
  }

  function problem(p: Problem): Reply {
    counts.rejected += 1;
    return { status: p.status, body: p, problem: true };
  }

  /** The ingest handler proper: validates, dedupes and applies one submission. */
  async function ingest(raw: Buffer, key: string | undefined): Promise<Reply> {
    let data: unknown;
    try {
      data = JSON.parse(raw.toString('utf8'));
    } catch {
      return problem({ status: 400, title: 'Bad Request', detail: 'body is not valid JSON' });
    }
    const parsed = RegistrySubmissionSchema.safeParse(data);
    if (!parsed.success)
      return problem({
        status: 400,
        title: 'Invalid submission',
        detail: 'the submission does not match registry-submission v1',
        errors: parsed.error.issues.map((i) => ({ path: i.path.join('.'), message: i.message })),
      });
    const submission = parsed.data;
    // `<submissionId>` or, for a revert, `<submissionId>-r<seq>`, each optionally followed by
    // `.<incarnation>` (docs/registry-contract.md).
    const revertSeq = key === undefined ? null : parseIdempotencyKey(key, submission.submissionId);
    if (revertSeq === undefined)
      return problem({
        status: 400,
        title: 'Idempotency-Key mismatch',
        detail:
          'Idempotency-Key must be the submissionId, or <submissionId>-r<seq> for a revert, optionally followed by .<incarnation>',
      });
    const reason = rejections.get(submission.submissionId);
    if (reason !== undefined)
      return problem({ status: 400, title: 'Invalid submission', detail: reason });
    const commitAfter = slowCommits.get(submission.submissionId);
    if (commitAfter !== undefined) {
      slowCommits.delete(submission.submissionId);
      await new Promise((r) => setTimeout(r, commitAfter));
    }
    const previous = byId.get(submission.submissionId);
    if (previous) {
      if (previous.submission.contentHash !== submission.contentHash)
        return problem({
          status: 422,
          title: 'Idempotency-Key reused',
          detail: 'this submissionId was accepted earlier with different content',
        });
      // The visit's current version already (a retry, a re-delivery, a revert whose earlier
      // job was still pending): nothing changes, whatever the key.
      const visit = visits.get(submission.visitKey);
      if (!visit || visit.history[visit.history.length - 1] === submission.submissionId) {
        counts.duplicates += 1;
        return {
          status: 200,
          body: { status: 'duplicate', submissionId: submission.submissionId },
        };
      }
      // An earlier version posted again after a newer one: the source reverted to it (its key
      // is `<submissionId>-r<seq>`, or a plain one of a new incarnation after the bridge's Redis
      // lost its state; lhn-bridge never sends an older version out of order).
    }
    return apply(submission, key, revertSeq);
  }

  async function handleToken(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const cc = options.clientCredentials;
    const raw = (await readBody(req)) ?? Buffer.alloc(0);
    if (!cc) {
      sendJson(res, 404, { error: 'not_found' });
      return;
    }
    const form = new URLSearchParams(raw.toString('utf8'));
    let clientId = form.get('client_id') ?? '';
    let clientSecret = form.get('client_secret') ?? '';
    const basic = /^Basic (.+)$/.exec(req.headers.authorization ?? '');
    if (basic) {
      const decoded = Buffer.from(basic[1]!, 'base64').toString('utf8');
      const colon = decoded.indexOf(':');
      clientId = decodeURIComponent(decoded.slice(0, colon));
      clientSecret = decodeURIComponent(decoded.slice(colon + 1));
    }
    if (form.get('grant_type') !== 'client_credentials') {
      sendJson(res, 400, { error: 'unsupported_grant_type' });
      return;
    }
    if (!safeEqual(clientId, cc.clientId) || !safeEqual(clientSecret, cc.clientSecret)) {
      sendJson(res, 401, { error: 'invalid_client' });
      return;
    }
    const expiresIn = cc.expiresInSeconds ?? 300;
    const token = randomBytes(24).toString('base64url');
    issuedTokens.set(token, Date.now() + expiresIn * 1000);
    sendJson(res, 200, { access_token: token, token_type: 'Bearer', expires_in: expiresIn });
  }

  async function route(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://sandbox');
    const path = url.pathname;
    if (req.method === 'POST' && path === '/submissions') return handleSubmission(req, res);
    if (req.method === 'POST' && path === '/oauth/token') return handleToken(req, res);
    if (req.method === 'GET' && path === '/health') return sendJson(res, 200, { status: 'ok' });
    if (req.method === 'GET' && path === '/submissions') {
      const visitKey = url.searchParams.get('visitKey');
      const list = visitKey ? accepted.filter((a) => a.visitKey === visitKey) : accepted;
      return sendJson(res, 200, { count: list.length, counts, submissions: list });
    }
    if (req.method === 'GET' && path === '/visits') {
      const list = [...visits.values()];
      return sendJson(res, 200, { count: list.length, visits: list });
    }
    req.resume();
    sendProblem(res, { status: 404, title: 'Not Found', detail: `${req.method} ${path}` });
  }

  const server = createServer((req, res) => {
    route(req, res).catch((err: unknown) => {
      if (!res.headersSent)
        sendProblem(res, { status: 500, title: 'Internal Server Error', detail: String(err) });
      else res.destroy();
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port ?? 0, host, () => resolve());
  });
  const { port } = server.address() as AddressInfo;
  const base = `http://${host.includes(':') ? `[${host}]` : host}:${port}`;

  return {
    url: base,
    tokenUrl: `${base}/oauth/token`,
    faults,
    counts: () => ({ ...counts }),
    submissions: () => [...accepted],
    visits: () => [...visits.values()],
    reset() {
      accepted = [];
      byId = new Map();
      visits = new Map();
      replayCache = new Map();
      for (const k of Object.keys(counts) as (keyof SandboxRegistryCounts)[]) counts[k] = 0;
    },
    close: () =>
      new Promise<void>((resolve, reject) => {
        server.close((err) => (err ? reject(err) : resolve()));
        server.closeAllConnections();
      }),
  };
}
