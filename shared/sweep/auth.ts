/**
 * Credentials for the FHIR server a sweep reads and writes: none, a bearer token, or OAuth2
 * client credentials (a token fetched from the token URL and refreshed a minute before it
 * expires). Tokens are never logged.
 */
import * as z from 'zod';
import { SweepError } from './errors.js';

export type FhirAuth =
  | { readonly kind: 'none' }
  | { readonly kind: 'bearer'; readonly token: string }
  | {
      readonly kind: 'client-credentials';
      readonly tokenUrl: string;
      readonly clientId: string;
      readonly clientSecret: string;
      readonly scope?: string;
    };

export interface TokenProvider {
  /** The current access token, or undefined when the server needs none. */
  token(): Promise<string | undefined>;
  /** `{ Authorization: 'Bearer …' }` or `{}`. */
  headers(): Promise<Record<string, string>>;
}

const TokenResponseSchema = z.object({
  access_token: z.string().min(1),
  expires_in: z.coerce.number().positive().optional(),
  token_type: z.string().optional(),
});

export class AuthError extends SweepError {
  override name = 'AuthError';
}

export function createTokenProvider(
  auth: FhirAuth,
  opts: { fetch?: typeof fetch; now?: () => number } = {},
): TokenProvider {
  const doFetch = opts.fetch ?? fetch;
  const now = opts.now ?? Date.now;
  let cached: { token: string; until: number } | undefined;
  let inFlight: Promise<string> | undefined;

  const fetchToken = async (a: Extract<FhirAuth, { kind: 'client-credentials' }>): Promise<string> => {
    const body = new URLSearchParams({
      grant_type: 'client_credentials',
      ...(a.scope ? { scope: a.scope } : {}),
    });
    const basic = Buffer.from(
      `${encodeURIComponent(a.clientId)}:${encodeURIComponent(a.clientSecret)}`,
    ).toString('base64');
    const res = await doFetch(a.tokenUrl, {
      method: 'POST',
      headers: {
        'Content-Type': 'application/x-www-form-urlencoded',
        Accept: 'application/json',
        Authorization: `Basic ${basic}`,
      },
      body,
    });
    if (!res.ok) {
      await res.body?.cancel();
      throw new AuthError(`token endpoint answered ${res.status}`);
    }
    const parsed = TokenResponseSchema.safeParse(await res.json().catch(() => undefined));
    if (!parsed.success) throw new AuthError('token endpoint answered without an access_token');
    cached = {
      token: parsed.data.access_token,
      until: now() + ((parsed.data.expires_in ?? 300) - 60) * 1000,
    };
    return cached.token;
  };

  const token = async (): Promise<string | undefined> => {
    switch (auth.kind) {
      case 'none':
        return undefined;
      case 'bearer':
        return auth.token;
      case 'client-credentials':
        if (cached && cached.until > now()) return cached.token;
        inFlight ??= fetchToken(auth).finally(() => (inFlight = undefined));
        return inFlight;
    }
  };
  return {
    token,
    headers: async (): Promise<Record<string, string>> => {
      const t = await token();
      return t ? { Authorization: `Bearer ${t}` } : {};
    },
  };
}
