/**
 * Token auth as the reference registry's `auth.token` (the distribution token spec): clients
 * get a JWT from `realm` and send it as `Authorization: Bearer …`; we verify it with node:crypto
 * only and check that its `access` claim grants what the request needs.
 *
 * A token is accepted when:
 * - it is a compact JWS signed with RS256/384/512 or ES256/384/512 (the key type and, for EC,
 *   the curve must match `alg`: no `none`, no HMAC, no algorithm confusion);
 * - its signing key is trusted: the header's `x5c` chain (leaf first) chains to a certificate
 *   of the root bundle, or its `kid` / `jwk` names a bundle key by the libtrust key id
 *   (distribution's `trustedKeys`);
 * - `iss` is the configured issuer, `aud` (a string or a list) holds the service, and
 *   `exp`/`nbf` hold with a leeway (60 s, as distribution).
 *
 * Failures answer like distribution 2.8: 401 with `WWW-Authenticate: Bearer realm,service[,scope]`
 * plus `error="invalid_token"` for a bad token or `error="insufficient_scope"` when a valid
 * token lacks an action. Why a token failed is only logged, never sent.
 */
import { createHash, createPublicKey, type KeyObject, verify as verifySignature, X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';

export interface TokenAuthOptions {
  /** Where clients get tokens (the `realm` of the challenge). */
  realm: string;
  /** This registry's name: the challenge's `service`, and the audience every token must carry. */
  service: string;
  /** The token issuer every token must name in `iss`. */
  issuer: string;
  /** A PEM file (or PEM text) of the certificates trusted to sign tokens or their `x5c` chains. */
  rootCertBundle: string;
  /** Clock-skew allowance for `exp` and `nbf`, in seconds. Default 60 (distribution's). */
  leewaySeconds?: number;
}

/** One thing a request needs: `repository:<name>:pull`, `registry:catalog:*`, … */
export interface Access {
  type: string;
  name: string;
  action: string;
}

export type TokenDecision =
  | { ok: true; subject: string }
  | { ok: false; challenge: string; reason: string; error?: 'invalid_token' | 'insufficient_scope' };

/** A token that failed verification; `message` says why (for the log only). */
export class TokenError extends Error {}

interface Claims {
  sub?: unknown;
  access?: unknown;
}

const MAX_TOKEN_CHARS = 64 * 1024;
const MAX_CHAIN = 8;
const ALGS: Record<string, { hash: string; kty: 'rsa' | 'ec'; curve?: string; sigBytes?: number }> = {
  RS256: { hash: 'sha256', kty: 'rsa' },
  RS384: { hash: 'sha384', kty: 'rsa' },
  RS512: { hash: 'sha512', kty: 'rsa' },
  ES256: { hash: 'sha256', kty: 'ec', curve: 'prime256v1', sigBytes: 64 },
  ES384: { hash: 'sha384', kty: 'ec', curve: 'secp384r1', sigBytes: 96 },
  ES512: { hash: 'sha512', kty: 'ec', curve: 'secp521r1', sigBytes: 132 },
};

/** Verifies bearer tokens and builds challenges for one registry. */
export class TokenAuth {
  private readonly roots: X509Certificate[];
  /** Bundle public keys by libtrust key id (for `kid` / `jwk` headers). */
  private readonly trustedKeys = new Map<string, KeyObject>();
  private readonly leeway: number;

  constructor(private readonly o: TokenAuthOptions) {
    const required = { realm: o.realm, service: o.service, issuer: o.issuer, rootCertBundle: o.rootCertBundle };
    for (const [k, v] of Object.entries(required)) {
      if (!v) throw new Error(`token auth: ${k} is required`);
    }
    const text = o.rootCertBundle.includes('-----BEGIN') ? o.rootCertBundle : readBundle(o.rootCertBundle);
    const blocks = text.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
    if (blocks.length === 0) throw new Error('token auth: the root certificate bundle holds no PEM certificate');
    this.roots = blocks.map((b, i) => {
      try {
        return new X509Certificate(b);
      } catch (e) {
        throw new Error(`token auth: certificate ${i + 1} of the root bundle: ${(e as Error).message}`);
      }
    });
    for (const c of this.roots) this.trustedKeys.set(libtrustKeyId(c.publicKey), c.publicKey);
    this.leeway = o.leewaySeconds ?? 60;
  }

  /** Decides a request from its `Authorization` header and what it needs. */
  authorize(authorization: string | undefined, wanted: Access[], nowMs = Date.now()): TokenDecision {
    const m = authorization ? /^Bearer\s+(\S+)\s*$/i.exec(authorization) : null;
    if (!m) return { ok: false, challenge: this.challenge(wanted), reason: 'no bearer token' };
    let claims: Claims;
    try {
      claims = this.verify(m[1]!, nowMs);
    } catch (e) {
      if (!(e instanceof TokenError)) throw e;
      const error = 'invalid_token';
      return { ok: false, error, challenge: this.challenge(wanted, error), reason: e.message };
    }
    const granted = grantedActions(claims.access);
    for (const a of wanted) {
      const actions = granted.get(`${a.type}\0${a.name}`);
      if (!actions?.has('*') && !actions?.has(a.action)) {
        const error = 'insufficient_scope';
        return {
          ok: false,
          error,
          challenge: this.challenge(wanted, error),
          reason: `token does not grant ${a.type}:${a.name}:${a.action}`,
        };
      }
    }
    return { ok: true, subject: typeof claims.sub === 'string' ? claims.sub : '' };
  }

  /** `Bearer realm="…",service="…"[,scope="…"][,error="…"]` (scopes grouped by resource, actions sorted). */
  challenge(wanted: Access[], error?: string): string {
    let s = `Bearer realm=${quote(this.o.realm)},service=${quote(this.o.service)}`;
    const scope = scopeParam(wanted);
    if (scope) s += `,scope=${quote(scope)}`;
    if (error) s += `,error=${quote(error)}`;
    return s;
  }

  /** Verifies signature, signing key, issuer, audience and time; returns the claims. Throws TokenError. */
  verify(token: string, nowMs = Date.now()): Claims {
    if (token.length > MAX_TOKEN_CHARS) throw new TokenError(`token longer than ${MAX_TOKEN_CHARS} characters`);
    const parts = token.split('.');
    if (parts.length !== 3) throw new TokenError('token is not a compact JWS (three dot-separated parts)');
    const header = decodeJson(parts[0]!, 'header');
    const claims = decodeJson(parts[1]!, 'claims');
    const now = nowMs / 1000;
    if (claims.iss !== this.o.issuer) throw new TokenError(`untrusted issuer ${JSON.stringify(claims.iss)}`);
    const aud = typeof claims.aud === 'string' ? [claims.aud] : Array.isArray(claims.aud) ? claims.aud : [];
    if (!aud.includes(this.o.service))
      throw new TokenError(`audience ${JSON.stringify(claims.aud)} is not this service`);
    if (typeof claims.exp !== 'number' || now > claims.exp + this.leeway) throw new TokenError('token expired');
    if (claims.nbf !== undefined && (typeof claims.nbf !== 'number' || now < claims.nbf - this.leeway)) {
      throw new TokenError('token not valid yet');
    }
    const alg = typeof header.alg === 'string' ? ALGS[header.alg] : undefined;
    if (!alg) throw new TokenError(`unsupported alg ${JSON.stringify(header.alg)}`);
    const key = this.signingKey(header, nowMs);
    if (key.asymmetricKeyType !== alg.kty) throw new TokenError(`alg ${header.alg} does not match the signing key`);
    if (alg.curve && key.asymmetricKeyDetails?.namedCurve !== alg.curve) {
      throw new TokenError(`alg ${header.alg} does not match the key's curve`);
    }
    const sig = Buffer.from(parts[2]!, 'base64url');
    if (sig.length === 0 || (alg.sigBytes !== undefined && sig.length !== alg.sigBytes)) {
      throw new TokenError('bad signature length');
    }
    const data = Buffer.from(`${parts[0]}.${parts[1]}`);
    const keyInput = alg.kty === 'ec' ? { key, dsaEncoding: 'ieee-p1363' as const } : key;
    if (!verifySignature(alg.hash, data, keyInput, sig)) throw new TokenError('bad signature');
    return claims;
  }

  /** The trusted key that signed the token: from the `x5c` chain, else `jwk`, else `kid` (distribution's order). */
  private signingKey(header: Record<string, unknown>, nowMs: number): KeyObject {
    if (header.x5c !== undefined) {
      if (!Array.isArray(header.x5c) || header.x5c.length === 0 || header.x5c.length > MAX_CHAIN) {
        throw new TokenError(`x5c must be a list of 1 to ${MAX_CHAIN} certificates`);
      }
      const chain = header.x5c.map((c, i) => {
        try {
          if (typeof c !== 'string') throw new Error('not a string');
          return new X509Certificate(Buffer.from(c, 'base64'));
        } catch (e) {
          throw new TokenError(`x5c[${i}]: ${(e as Error).message}`);
        }
      });
      this.verifyChain(chain, nowMs);
      return chain[0]!.publicKey;
    }
    if (header.jwk !== undefined) {
      let key: KeyObject;
      try {
        key = createPublicKey({ key: header.jwk as import('node:crypto').JsonWebKey, format: 'jwk' });
      } catch (e) {
        throw new TokenError(`jwk: ${(e as Error).message}`);
      }
      const trusted = this.trustedKeys.get(libtrustKeyId(key));
      if (!trusted) throw new TokenError('jwk is not a key of the root bundle');
      return trusted;
    }
    if (typeof header.kid === 'string') {
      const trusted = this.trustedKeys.get(header.kid);
      if (!trusted) throw new TokenError(`kid ${header.kid} is not a key of the root bundle`);
      return trusted;
    }
    throw new TokenError('token header names no signing key (x5c, jwk or kid)');
  }

  /** Leaf first; every link signed by the next (or by a root), CA flags on intermediates, all in date. */
  private verifyChain(chain: X509Certificate[], nowMs: number): void {
    const inDate = (c: X509Certificate) =>
      Date.parse(c.validFrom) <= nowMs + this.leeway * 1000 && nowMs - this.leeway * 1000 <= Date.parse(c.validTo);
    const isRoot = (c: X509Certificate) => this.roots.some((r) => r.raw.equals(c.raw));
    const issuedBy = (child: X509Certificate, parent: X509Certificate) =>
      child.checkIssued(parent) && child.verify(parent.publicKey);
    let current = chain[0]!;
    const intermediates = chain.slice(1);
    for (let depth = 0; depth <= MAX_CHAIN; depth++) {
      if (!inDate(current)) throw new TokenError(`certificate ${current.subject} is expired or not yet valid`);
      if (isRoot(current)) return;
      const root = this.roots.find((r) => issuedBy(current, r));
      if (root) {
        if (!inDate(root)) throw new TokenError(`root certificate ${root.subject} is expired or not yet valid`);
        return;
      }
      const next = intermediates.find((c) => c.ca && issuedBy(current, c));
      if (!next) throw new TokenError(`certificate ${current.subject} does not chain to the root bundle`);
      current = next;
    }
    throw new TokenError('certificate chain too long');
  }
}

function readBundle(file: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch (e) {
    throw new Error(`token auth: cannot read the root certificate bundle ${file}: ${(e as Error).message}`);
  }
}

function decodeJson(part: string, what: string): Record<string, unknown> {
  let v: unknown;
  try {
    v = JSON.parse(Buffer.from(part, 'base64url').toString('utf8'));
  } catch {
    throw new TokenError(`token ${what} is not base64url JSON`);
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new TokenError(`token ${what} is not an object`);
  return v as Record<string, unknown>;
}

/** `access` claim → actions by `type\0name`; malformed entries grant nothing. */
function grantedActions(access: unknown): Map<string, Set<string>> {
  const out = new Map<string, Set<string>>();
  if (!Array.isArray(access)) return out;
  for (const e of access) {
    if (typeof e !== 'object' || e === null) continue;
    const { type, name, actions } = e as Record<string, unknown>;
    if (typeof type !== 'string' || typeof name !== 'string' || !Array.isArray(actions)) continue;
    const key = `${type}\0${name}`;
    const set = out.get(key) ?? new Set<string>();
    for (const a of actions) if (typeof a === 'string') set.add(a);
    out.set(key, set);
  }
  return out;
}

/** `repository:a:pull,push repository:b:pull`: one entry per resource, in request order. */
function scopeParam(wanted: Access[]): string {
  const byResource = new Map<string, Set<string>>();
  for (const a of wanted) {
    const key = `${a.type}:${a.name}`;
    const set = byResource.get(key) ?? new Set<string>();
    set.add(a.action);
    byResource.set(key, set);
  }
  return [...byResource].map(([r, actions]) => `${r}:${[...actions].sort().join(',')}`).join(' ');
}

const quote = (s: string) => JSON.stringify(s);

/**
 * The libtrust key id distribution uses for `kid`: SHA-256 of the DER SubjectPublicKeyInfo,
 * first 240 bits, base32 without padding, in 12 groups of 4 joined by ':'.
 */
export function libtrustKeyId(key: KeyObject): string {
  const der = key.export({ type: 'spki', format: 'der' });
  const s = base32(createHash('sha256').update(der).digest().subarray(0, 30));
  return s.match(/.{1,4}/g)!.join(':');
}

function base32(b: Uint8Array): string {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
  let out = '';
  let bits = 0;
  let value = 0;
  for (const byte of b) {
    value = ((value << 8) | byte) & 0x1fff; // only the unread bits matter
    bits += 8;
    while (bits >= 5) {
      out += alphabet[(value >>> (bits - 5)) & 31];
      bits -= 5;
    }
  }
  if (bits > 0) out += alphabet[(value << (5 - bits)) & 31];
  return out;
}
