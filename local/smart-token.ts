/**
 * A local SMART Backend Services authorization server on loopback (development, tests, the
 * demo), and the guard that makes the embedded FHIR server require its tokens:
 *
 * - `POST /token`: `client_credentials` with a `private_key_jwt` client assertion
 *   (RS384/ES384 only), verified against the client's registered JWKS: `iss` = `sub` = a
 *   registered client id, `aud` = this token URL, `exp` no more than five minutes ahead, a
 *   `jti` never seen before, `jku` (when present) the registered JWKS URL. Scopes asked for
 *   must be registered for the client. Answers an opaque short-lived access token.
 * - {@link RunningSmartTokenServer.requireBearer}: a FHIR server middleware that serves
 *   `.well-known/smart-configuration` and `metadata` openly and answers everything else
 *   without a live token with 401 (`WWW-Authenticate: Bearer error="invalid_token"`).
 * - `revokeAll()` ends every issued token at once, as a server restart or key rotation would.
 * Time comes from `now` (default `Date.now`) so tests can let tokens expire without waiting.
 */
import { randomBytes } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import {
  createLocalJWKSet,
  decodeJwt,
  decodeProtectedHeader,
  exportJWK,
  generateKeyPair,
  jwtVerify,
  type JSONWebKeySet,
  type JWK,
} from 'jose';
import type { FhirAuthProvider } from '../shared/fhir/auth.js';
import { createSmartBackendAuth } from '../shared/fhir/smart.js';
import type { HttpMiddleware } from './fhir/http.js';
import { readForm, sendJson } from './oauth-http.js';

export interface SmartClientRegistration {
  readonly clientId: string;
  /** The client's public keys. */
  readonly jwks: JSONWebKeySet;
  /** Where the client publishes them (its assertions' `jku` must be this when they carry one). */
  readonly jwksUrl?: string;
  /** Scopes the client may be granted. */
  readonly scopes: readonly string[];
}

export interface SmartTokenServerOptions {
  readonly port?: number;
  readonly host?: string;
  readonly clients?: readonly SmartClientRegistration[];
  /** Access token lifetime in seconds. Default 300. */
  readonly tokenLifetimeSeconds?: number;
  /** Epoch milliseconds. Default `Date.now`. */
  readonly now?: () => number;
}

export interface SmartTokenStats {
  /** Access tokens issued. */
  issued: number;
  /** Token requests refused (bad assertion, unknown client, bad scope). */
  refused: number;
  /** FHIR requests refused by the guard for want of a live token. */
  unauthorized: number;
}

export interface RunningSmartTokenServer {
  readonly url: string;
  readonly tokenUrl: string;
  readonly stats: SmartTokenStats;
  /** Registers (or replaces) a client. */
  register(client: SmartClientRegistration): void;
  /** The grant behind a live access token, or undefined. */
  introspect(token: string): { clientId: string; scopes: readonly string[] } | undefined;
  /** Ends every issued token. */
  revokeAll(): void;
  /** The FHIR server middleware that requires a live token from this server. */
  requireBearer(): HttpMiddleware;
  close(): Promise<void>;
}

const ALGORITHMS = ['RS384', 'ES384'];
const ASSERTION_TYPE = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer';

export async function startSmartTokenServer(
  opts: SmartTokenServerOptions = {},
): Promise<RunningSmartTokenServer> {
  const now = opts.now ?? Date.now;
  const lifetime = opts.tokenLifetimeSeconds ?? 300;
  const clients = new Map<string, SmartClientRegistration>();
  for (const c of opts.clients ?? []) clients.set(c.clientId, c);
  const tokens = new Map<string, { clientId: string; scopes: readonly string[]; expiresAt: number }>();
  const seenJti = new Map<string, number>();
  const stats: SmartTokenStats = { issued: 0, refused: 0, unauthorized: 0 };
  let tokenUrl = '';

  const refuse = (res: ServerResponse, status: number, error: string): void => {
    stats.refused++;
    sendJson(res, status, { error });
  };

  const token = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const form = await readForm(req, 65_536);
    if (form.get('grant_type') !== 'client_credentials') {
      refuse(res, 400, 'unsupported_grant_type');
      return;
    }
    const assertion = form.get('client_assertion') ?? '';
    if (form.get('client_assertion_type') !== ASSERTION_TYPE || !assertion) {
      {
        refuse(res, 401, 'invalid_client');
        return;
      }
    }
    let clientId: string;
    let jku: string | undefined;
    try {
      clientId = decodeJwt(assertion).iss ?? '';
      jku = decodeProtectedHeader(assertion).jku;
    } catch {
      {
        refuse(res, 401, 'invalid_client');
        return;
      }
    }
    const client = clients.get(clientId);
    if (!client || (jku !== undefined && jku !== client.jwksUrl)) {
      refuse(res, 401, 'invalid_client');
      return;
    }
    const at = now();
    try {
      const { payload } = await jwtVerify(assertion, createLocalJWKSet(client.jwks), {
        algorithms: ALGORITHMS,
        issuer: clientId,
        subject: clientId,
        audience: tokenUrl,
        currentDate: new Date(at),
        requiredClaims: ['exp', 'jti'],
      });
      const jti = String(payload.jti);
      if ((payload.exp ?? 0) * 1000 > at + 300_000 + 5_000 || seenJti.has(jti)) {
        {
          refuse(res, 401, 'invalid_client');
          return;
        }
      }
      seenJti.set(jti, (payload.exp ?? 0) * 1000);
    } catch {
      {
        refuse(res, 401, 'invalid_client');
        return;
      }
    }
    for (const [jti, until] of seenJti) if (until < at) seenJti.delete(jti);
    const asked = (form.get('scope') ?? '').split(/\s+/).filter(Boolean);
    if (asked.length === 0 || asked.some((s) => !client.scopes.includes(s))) {
      {
        refuse(res, 400, 'invalid_scope');
        return;
      }
    }
    const accessToken = randomBytes(32).toString('base64url');
    tokens.set(accessToken, { clientId, scopes: asked, expiresAt: at + lifetime * 1000 });
    stats.issued++;
    sendJson(res, 200, {
      access_token: accessToken,
      token_type: 'bearer',
      expires_in: lifetime,
      scope: asked.join(' '),
    });
  };

  const introspect = (t: string) => {
    const grant = tokens.get(t);
    if (!grant) return undefined;
    if (grant.expiresAt <= now()) {
      tokens.delete(t);
      return undefined;
    }
    return { clientId: grant.clientId, scopes: grant.scopes };
  };

  const server = createServer((req, res) => {
    const path = new URL(req.url ?? '/', 'http://x').pathname;
    if (req.method === 'POST' && path === '/token') {
      token(req, res).catch(() => {
        if (!res.headersSent) sendJson(res, 500, { error: 'server_error' });
      });
    } else {
      sendJson(res, 404, { error: 'not_found' });
    }
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port ?? 0, opts.host ?? '127.0.0.1', resolve);
  });
  const { port } = server.address() as AddressInfo;
  const url = `http://${opts.host ?? '127.0.0.1'}:${port}`;
  tokenUrl = `${url}/token`;

  const requireBearer = (): HttpMiddleware => (req, res, ctx) => {
    if (ctx.path === '.well-known/smart-configuration') {
      sendJson(res, 200, {
        token_endpoint: tokenUrl,
        grant_types_supported: ['client_credentials'],
        token_endpoint_auth_methods_supported: ['private_key_jwt'],
        token_endpoint_auth_signing_alg_values_supported: ALGORITHMS,
        capabilities: ['client-confidential-asymmetric'],
      });
      return true;
    }
    if (ctx.path === 'metadata') return false;
    const bearer = /^Bearer\s+(\S+)$/i.exec(req.headers.authorization ?? '')?.[1];
    if (bearer && introspect(bearer)) return false;
    stats.unauthorized++;
    res.writeHead(401, {
      'content-type': 'application/fhir+json',
      'www-authenticate': `Bearer error="invalid_token"`,
    });
    res.end(
      JSON.stringify({
        resourceType: 'OperationOutcome',
        issue: [{ severity: 'error', code: 'login', diagnostics: 'a live SMART access token is required' }],
      }),
    );
    return true;
  };

  return {
    url,
    tokenUrl,
    stats,
    register: (c) => {
      clients.set(c.clientId, c);
    },
    introspect,
    revokeAll: () => {
      tokens.clear();
    },
    requireBearer,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => {
          resolve();
        });
      }),
  };
}

/** The scopes the local client registers and asks for (what the pipeline reads and writes). */
export const LOCAL_SMART_SCOPES = [
  'system/Patient.rs',
  'system/Observation.rs',
  'system/ImagingStudy.rs',
  'system/Endpoint.rs',
  'system/DiagnosticReport.crus',
  'system/Observation.cu',
  'system/Device.cru',
  'system/Provenance.c',
  'system/Subscription.rs',
] as const;

export interface LocalSmartClient {
  readonly registration: SmartClientRegistration;
  /** What the Secrets Manager secret would hold (`{"privateKeyJwk": {...}}`). */
  readonly credentials: { readonly privateKeyJwk: JWK };
}

/** A new client key pair, its registration (public JWKS) and its stored credentials (private JWK). */
export async function createLocalSmartClient(
  opts: { clientId?: string; alg?: 'ES384' | 'RS384'; scopes?: readonly string[] } = {},
): Promise<LocalSmartClient> {
  const alg = opts.alg ?? 'ES384';
  const { publicKey, privateKey } = await generateKeyPair(alg, { extractable: true });
  const kid = `local-${randomBytes(4).toString('hex')}`;
  const publicJwk = { ...(await exportJWK(publicKey)), kid, alg, use: 'sig' };
  return {
    registration: {
      clientId: opts.clientId ?? 'fhir-analytics-local',
      jwks: { keys: [publicJwk] },
      scopes: opts.scopes ?? LOCAL_SMART_SCOPES,
    },
    credentials: { privateKeyJwk: { ...(await exportJWK(privateKey)), kid, alg } },
  };
}

/** The functions' side of a local client: a SMART Backend Services provider holding the key in memory. */
export function localSmartAuth(
  fhirBaseUrl: string,
  client: LocalSmartClient,
  opts: { now?: () => number } = {},
): FhirAuthProvider {
  return createSmartBackendAuth({
    baseUrl: fhirBaseUrl,
    clientId: client.registration.clientId,
    scopes: client.registration.scopes,
    credentials: () => Promise.resolve(client.credentials),
    ...(opts.now ? { now: opts.now } : {}),
  });
}
