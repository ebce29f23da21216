/**
 * A local token issuer on loopback for the partner API (development, tests, the demo):
 * - `GET /.well-known/jwks.json`: the public half of an ES384 key generated at start;
 * - `GET /.well-known/openid-configuration`: issuer, token endpoint, JWKS URI;
 * - `POST /token`: OAuth2 client credentials (RFC 6749 §4.4) for the clients configured
 *   here, client authentication by HTTP Basic or form fields;
 * - `mint(claims)`: signs any claims (CDS Hooks client JWTs, or tokens built to fail).
 * The issuer (`iss`) is its own base URL.
 */
import { randomUUID, timingSafeEqual } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import {
  exportJWK,
  generateKeyPair,
  SignJWT,
  type JWK,
  type JWTPayload,
  type JWTHeaderParameters,
} from 'jose';
import { readForm, sendJson } from './oauth-http.js';

export interface IssuerClient {
  readonly id: string;
  readonly secret: string;
  /** Scopes the client may ask for; all of them when it asks for none. */
  readonly scopes: readonly string[];
}

/** The demo's partner: may run every model and persist reports. */
export const DEMO_CLIENT: IssuerClient = {
  id: 'demo-partner',
  secret: 'demo-partner-secret',
  scopes: ['model/*.predict', 'report.write'],
};
/** A partner that may only run one model and never persist. */
export const DEMO_READONLY_CLIENT: IssuerClient = {
  id: 'demo-readonly',
  secret: 'demo-readonly-secret',
  scopes: ['model/diabetes-gbm.predict'],
};
/** The audience of access tokens for the partner REST API. */
export const PARTNER_API_AUDIENCE = 'urn:fhir-analytics:partner-api';

export interface JwksIssuerOptions {
  port?: number;
  host?: string;
  clients?: readonly IssuerClient[];
  /** `aud` of the access tokens `/token` issues. Default `urn:fhir-analytics:partner-api`. */
  audience?: string;
  /** Access token lifetime in seconds. Default 300. */
  tokenLifetimeSeconds?: number;
}

export interface MintOptions {
  /** Header fields to set or override (`kid`, `jku`, `typ`, …). */
  header?: Partial<JWTHeaderParameters>;
  /** Lifetime when `exp` is not in the claims. Default 300 s. */
  expiresInSeconds?: number;
}

export interface RunningJwksIssuer {
  /** Base URL, also the `iss`. */
  readonly url: string;
  readonly issuer: string;
  readonly jwksUrl: string;
  readonly tokenUrl: string;
  readonly kid: string;
  readonly audience: string;
  /** Signs `claims` with the issuer key (ES384); `iss`, `iat`, `exp` and `jti` are filled in unless given. */
  mint(claims: JWTPayload, opts?: MintOptions): Promise<string>;
  /** A CDS Hooks client JWT for one call to `aud`. */
  mintCds(aud: string, extra?: JWTPayload): Promise<string>;
  /** A client-credentials access token, as `/token` would issue it. */
  accessToken(client: IssuerClient, scopes?: readonly string[]): Promise<string>;
  close(): Promise<void>;
}

function sameSecret(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

export async function startJwksIssuer(opts: JwksIssuerOptions = {}): Promise<RunningJwksIssuer> {
  const { publicKey, privateKey } = await generateKeyPair('ES384', { extractable: false });
  const kid = `local-${randomUUID().slice(0, 8)}`;
  const publicJwk: JWK = { ...(await exportJWK(publicKey)), kid, alg: 'ES384', use: 'sig' };
  const clients = opts.clients ?? [DEMO_CLIENT, DEMO_READONLY_CLIENT];
  const audience = opts.audience ?? PARTNER_API_AUDIENCE;
  const lifetime = opts.tokenLifetimeSeconds ?? 300;
  let base = '';

  const mint = async (claims: JWTPayload, mintOpts: MintOptions = {}): Promise<string> => {
    const now = Math.floor(Date.now() / 1000);
    const payload: JWTPayload = {
      iss: base,
      iat: now,
      exp: now + (mintOpts.expiresInSeconds ?? 300),
      jti: randomUUID(),
      ...claims,
    };
    return new SignJWT(payload)
      .setProtectedHeader({
        alg: 'ES384',
        typ: 'JWT',
        kid,
        jku: `${base}/.well-known/jwks.json`,
        ...mintOpts.header,
      })
      .sign(privateKey);
  };

  const accessToken = (client: IssuerClient, scopes: readonly string[] = client.scopes): Promise<string> =>
    mint(
      { sub: client.id, client_id: client.id, aud: audience, scope: scopes.join(' '), token_use: 'access' },
      { expiresInSeconds: lifetime, header: { typ: 'at+jwt', jku: undefined } },
    );

  const token = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const form = await readForm(req, 16_384);
    let id = form.get('client_id') ?? '';
    let secret = form.get('client_secret') ?? '';
    const basic = /^Basic\s+(.+)$/i.exec(req.headers.authorization ?? '');
    if (basic?.[1]) {
      const decoded = Buffer.from(basic[1], 'base64').toString('utf8');
      const colon = decoded.indexOf(':');
      id = decodeURIComponent(decoded.slice(0, colon));
      secret = decodeURIComponent(decoded.slice(colon + 1));
    }
    if (form.get('grant_type') !== 'client_credentials') {
      sendJson(res, 400, { error: 'unsupported_grant_type' });
      return;
    }
    const client = clients.find((c) => c.id === id);
    if (!client || !sameSecret(client.secret, secret)) {
      sendJson(res, 401, { error: 'invalid_client' }, { 'www-authenticate': 'Basic realm="token"' });
      return;
    }
    const asked = (form.get('scope') ?? '').split(' ').filter(Boolean);
    if (asked.some((s) => !client.scopes.includes(s))) {
      sendJson(res, 400, { error: 'invalid_scope' });
      return;
    }
    const scopes = asked.length ? asked : client.scopes;
    sendJson(res, 200, {
      access_token: await accessToken(client, scopes),
      token_type: 'Bearer',
      expires_in: lifetime,
      scope: scopes.join(' '),
    });
  };

  const server = createServer((req, res) => {
    void (async () => {
      const path = new URL(req.url ?? '/', 'http://x').pathname;
      if (req.method === 'GET' && path === '/.well-known/jwks.json') {
        sendJson(res, 200, { keys: [publicJwk] }, { 'cache-control': 'max-age=300' });
      } else if (req.method === 'GET' && path === '/.well-known/openid-configuration') {
        sendJson(res, 200, {
          issuer: base,
          token_endpoint: `${base}/token`,
          jwks_uri: `${base}/.well-known/jwks.json`,
          grant_types_supported: ['client_credentials'],
          token_endpoint_auth_methods_supported: ['client_secret_basic', 'client_secret_post'],
          id_token_signing_alg_values_supported: ['ES384'],
        });
      } else if (req.method === 'POST' && path === '/token') {
        await token(req, res);
      } else {
        sendJson(res, 404, { error: 'not_found' });
      }
    })().catch(() => {
      if (!res.headersSent) sendJson(res, 500, { error: 'server_error' });
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port ?? 8085, opts.host ?? '127.0.0.1', resolve);
  });
  const { port } = server.address() as AddressInfo;
  base = `http://${opts.host ?? '127.0.0.1'}:${port}`;
  return {
    url: base,
    issuer: base,
    jwksUrl: `${base}/.well-known/jwks.json`,
    tokenUrl: `${base}/token`,
    kid,
    audience,
    mint,
    mintCds: (aud, extra = {}) => mint({ sub: 'local-ehr', aud, ...extra }),
    accessToken,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => {
          resolve();
        });
      }),
  };
}
