// Every request input (params, query, body) goes through a zod schema before a handler uses
// it; failures become one 400 problem listing every issue with its path (`query.limit`).
import type { Request } from 'express';
import type { z } from 'zod';
import { issuesFromZodError, validationProblem, type ProblemIssue } from './problem.js';

/** Schemas for the parts of a request a handler reads; parts left out must be empty. */
export interface RequestSchemas<P extends z.ZodType, Q extends z.ZodType, B extends z.ZodType> {
  params?: P;
  query?: Q;
  body?: B;
}

/** The validated parts of a request. */
export interface ValidRequest<P, Q, B> {
  params: P;
  query: Q;
  body: B;
}

/**
 * Validates a request's params, query and body; throws a 400 problem with every issue.
 * A part without a schema is not read (its value is `undefined`).
 */
export function parseRequest<
  P extends z.ZodType = z.ZodUndefined,
  Q extends z.ZodType = z.ZodUndefined,
  B extends z.ZodType = z.ZodUndefined,
>(
  req: Request,
  schemas: RequestSchemas<P, Q, B>,
): ValidRequest<z.output<P>, z.output<Q>, z.output<B>> {
  const issues: ProblemIssue[] = [];
  const parts = { params: req.params, query: req.query, body: req.body as unknown };
  const out: Record<string, unknown> = {};
  for (const where of ['params', 'query', 'body'] as const) {
    const schema = schemas[where];
    if (!schema) continue;
    const result = schema.safeParse(parts[where] ?? {});
    if (result.success) out[where] = result.data;
    else issues.push(...issuesFromZodError(result.error, where));
  }
  if (issues.length > 0) throw validationProblem(issues);
  return out as unknown as ValidRequest<z.output<P>, z.output<Q>, z.output<B>>;
}
