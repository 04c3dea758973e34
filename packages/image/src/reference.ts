/**
 * Image references: `[registry[:port]/][namespace/]repo[:tag][@digest]`, parsed and normalized
 * the way Docker does it (the grammar of distribution/reference and the behaviour of its
 * `ParseNormalizedNamed`, `ParseDockerRef` and `FamiliarString`, as in Docker 25+ and
 * containerd).
 *
 * Grammar (the regexps are the same language as distribution/reference's, written so that they
 * run in linear time in a backtracking engine: the `-*` separator became `-+`, which matches the
 * same names):
 *
 * ```
 * reference     := name [ ":" tag ] [ "@" digest ]
 * name          := [domain "/"] path-component ["/" path-component]*
 * domain        := host [":" port]                    host: DNS-like name, IPv4, or [IPv6]
 * path-component:= [a-z0-9]+ ( ( "." | "_" | "__" | "-"+ ) [a-z0-9]+ )*
 * tag           := [\w][\w.-]{0,127}
 * digest        := algorithm ":" hex                  validated by Digest.parse (@stevedore/core)
 * ```
 *
 * Normalization (`parseReference`): a first component is the registry only when it is
 * `localhost`, contains `.` or `:`, or has an uppercase letter; otherwise the registry is
 * `docker.io`. `index.docker.io` (and, unlike Docker, `registry-1.docker.io` unless
 * `normalizeRegistry1: false`) become `docker.io`; one-component names on `docker.io` get the
 * `library/` namespace. The path (everything after the registry) must be lowercase and at most
 * 255 characters.
 *
 * Deviations from Docker, on purpose: `registry-1.docker.io` is Docker Hub too (optional); digest
 * algorithms are those of the core (sha256, sha512; Docker also takes sha384); a first component
 * that is taken for a registry but is not a valid host (`foo_bar.com/repo`, which Docker keeps as a
 * registry-less name) is rejected with ERR_REFERENCE_INVALID_FORMAT.
 */
import { Digest, StevedoreError } from '@stevedore/core';

/** Docker Hub's canonical registry name. */
export const DOCKER_HUB = 'docker.io';
/** The namespace of Docker Hub's official images (`nginx` is `docker.io/library/nginx`). */
export const OFFICIAL_NAMESPACE = 'library';
/** The tag a reference gets when it has neither a tag nor a digest. */
export const DEFAULT_TAG = 'latest';
/** Longest path (repository without the registry), in characters. */
export const NAME_TOTAL_LENGTH_MAX = 255;

const LEGACY_HUB = 'index.docker.io';
const HUB_REGISTRY1 = 'registry-1.docker.io';

/** Stable error codes of reference parsing. */
export type ReferenceErrorCode =
  /** The text does not follow the reference grammar (the message says which part). */
  | 'ERR_REFERENCE_INVALID_FORMAT'
  /** The repository path has uppercase letters. */
  | 'ERR_REFERENCE_NAME_CONTAINS_UPPERCASE'
  /** The repository path is longer than 255 characters. */
  | 'ERR_REFERENCE_NAME_TOO_LONG'
  /** The whole text is 64 hex characters: an image ID, not a name. */
  | 'ERR_REFERENCE_NAME_IS_ID'
  /** `parseCanonicalReference`: the text is not already in its normalized, full form. */
  | 'ERR_REFERENCE_NAME_NOT_CANONICAL'
  /** `withTag`: not a valid tag. */
  | 'ERR_REFERENCE_TAG_INVALID'
  /** The digest is malformed (bad hex, wrong length). */
  | 'ERR_REFERENCE_DIGEST_INVALID'
  /** The digest algorithm is not supported. */
  | 'ERR_REFERENCE_DIGEST_UNSUPPORTED';

/**
 * A reference that cannot be parsed. `message` starts with Docker's own wording for the same
 * failure (`invalid reference format`, `repository name (library/Foo) must be lowercase`, …) and
 * then names the part that is wrong; `input` is the text as given.
 *
 * (Not named `ReferenceError`: that would shadow the JavaScript global of the same name.)
 */
export class InvalidReferenceError extends StevedoreError {
  declare readonly code: ReferenceErrorCode;
  readonly input: string;
  constructor(code: ReferenceErrorCode, message: string, input: string, options?: { cause?: unknown }) {
    super(code, message, options);
    this.name = 'InvalidReferenceError';
    this.input = input;
  }
}

// --- grammar -------------------------------------------------------------------------------

const ALNUM = '[a-z0-9]+';
const SEPARATOR = '(?:[._]|__|-+)';
const PATH_COMPONENT = `${ALNUM}(?:${SEPARATOR}${ALNUM})*`;
const DOMAIN_COMPONENT = '[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?';
const DOMAIN_NAME = `${DOMAIN_COMPONENT}(?:\\.${DOMAIN_COMPONENT})*`;
const IPV6 = '\\[[a-fA-F0-9:]+\\]';
const HOST = `(?:${DOMAIN_NAME}|${IPV6})`;
const DOMAIN_AND_PORT = `${HOST}(?::[0-9]+)?`;
const TAG = '[\\w][\\w.-]{0,127}';
const DIGEST = '[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}';

const pathComponentRe = new RegExp(`^${PATH_COMPONENT}$`);
const domainRe = new RegExp(`^${DOMAIN_AND_PORT}$`);
const tagRe = new RegExp(`^${TAG}$`);
const digestRe = new RegExp(`^${DIGEST}$`);
const identifierRe = /^[a-f0-9]{64}$/;

/** True when `tag` is a valid tag (`[\w][\w.-]{0,127}`). */
export function isValidTag(tag: string): boolean {
  return tagRe.test(tag);
}

/** True when `component` is one valid path component (`[a-z0-9]+` joined by `.`, `_`, `__`, `-+`). */
export function isValidPathComponent(component: string): boolean {
  return pathComponentRe.test(component);
}

/** True when `domain` is a valid registry host with optional port (`host`, `1.2.3.4:5000`, `[::1]:5000`). */
export function isValidDomain(domain: string): boolean {
  return domainRe.test(domain);
}

function isRemoteName(path: string): boolean {
  return path.split('/').every((c) => pathComponentRe.test(c));
}

/** The pieces of distribution/reference's `ReferenceRegexp` (name, tag, digest), or undefined. */
interface Split {
  name: string;
  tag: string | undefined;
  digest: string | undefined;
}

/**
 * Splits `text` into name, tag and digest. The split is unique: a digest follows the only `@`
 * (names and tags have none), and a tag follows the last `:` when no `/` comes after it (paths
 * and tags have no `:`, a port is always followed by `/`).
 */
function split(text: string): Split {
  let rest = text;
  let digest: string | undefined;
  const at = rest.indexOf('@');
  if (at >= 0) {
    digest = rest.slice(at + 1);
    rest = rest.slice(0, at);
  }
  let tag: string | undefined;
  const colon = rest.lastIndexOf(':');
  if (colon > rest.lastIndexOf('/')) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
  }
  return { name: rest, tag, digest };
}

/** Whether the name matches `[domain/]remote-name` in any way. */
function nameMatches(name: string): boolean {
  if (isRemoteName(name)) return true;
  const slash = name.indexOf('/');
  return slash > 0 && domainRe.test(name.slice(0, slash)) && isRemoteName(name.slice(slash + 1));
}

/** distribution/reference's `ReferenceRegexp.MatchString`. */
function matchesReference(text: string): boolean {
  const s = split(text);
  return (
    nameMatches(s.name) &&
    (s.tag === undefined || tagRe.test(s.tag)) &&
    (s.digest === undefined || digestRe.test(s.digest))
  );
}

const show = (s: string) => JSON.stringify(s.length > 80 ? `${s.slice(0, 77)}...` : s);

/** Names the first part of a reference that breaks the grammar. */
function diagnose(domain: string, s: Split): string {
  let path = s.name;
  if (s.name.startsWith(`${domain}/`)) {
    if (!domainRe.test(domain)) {
      return `registry ${show(domain)} is not a valid host[:port] (DNS name, IPv4 address or [IPv6 address], optional numeric port)`;
    }
    path = s.name.slice(domain.length + 1);
  }
  if (path === '') return 'the repository name is empty';
  for (const c of path.split('/')) {
    if (c === '') return `repository name ${show(path)} has an empty path component`;
    if (!pathComponentRe.test(c)) {
      return `path component ${show(c)} of ${show(path)} is not valid (lowercase letters and digits, separated by one ".", one or two "_", or dashes; no leading or trailing separator)`;
    }
  }
  if (s.tag !== undefined && !tagRe.test(s.tag)) {
    return `tag ${show(s.tag)} is not valid (1 to 128 characters of [A-Za-z0-9_.-], not starting with "." or "-")`;
  }
  if (s.digest !== undefined && !digestRe.test(s.digest)) {
    return `digest ${show(s.digest)} is not valid (algorithm:hex, at least 32 hex digits)`;
  }
  return 'the text does not follow [registry[:port]/][namespace/]repository[:tag][@digest]';
}

const DIGEST_HEX_LENGTH: Record<string, number> = { sha256: 64, sha512: 128 };

/** go-digest's `Parse` after the grammar matched, mapped onto the core's `Digest.parse`. */
function parseDigest(text: string, input: string): Digest {
  const colon = text.indexOf(':');
  const algorithm = text.slice(0, colon);
  const hex = text.slice(colon + 1);
  const expected = DIGEST_HEX_LENGTH[algorithm];
  if (expected === undefined) {
    throw new InvalidReferenceError(
      'ERR_REFERENCE_DIGEST_UNSUPPORTED',
      `unsupported digest algorithm: ${show(algorithm)} in ${show(input)} (supported: sha256, sha512)`,
      input,
    );
  }
  if (hex.length !== expected) {
    throw new InvalidReferenceError(
      'ERR_REFERENCE_DIGEST_INVALID',
      `invalid checksum digest length: ${algorithm} needs ${expected} hex digits, ${show(input)} has ${hex.length}`,
      input,
    );
  }
  try {
    return Digest.parse(text);
  } catch (e) {
    throw new InvalidReferenceError(
      'ERR_REFERENCE_DIGEST_INVALID',
      `invalid checksum digest format: ${(e as Error).message}`,
      input,
      { cause: e },
    );
  }
}

/** Options of `parseReference` and friends. */
export interface ParseReferenceOptions {
  /**
   * Tag given to a reference that has neither a tag nor a digest. Default `latest`; `false`
   * leaves such a reference untagged.
   */
  defaultTag?: string | false;
  /**
   * Treat `registry-1.docker.io` (Docker Hub's API host) as `docker.io`. Default true. Docker
   * itself only folds `index.docker.io`; pass false to match it exactly.
   */
  normalizeRegistry1?: boolean;
}

/** A parsed, normalized image reference. Immutable; build variants with `withTag`/`withDigest`. */
export class Reference {
  private constructor(
    /** Registry host with optional port: `docker.io`, `localhost:5000`, `[::1]:5000`, `ghcr.io`. */
    readonly registry: string,
    /** Path inside the registry, namespace included: `library/nginx`, `user/app`, `a/b/c`. */
    readonly repository: string,
    /** The tag, if any. */
    readonly tag: string | undefined,
    /** The digest, if any (validated by the core). */
    readonly digest: Digest | undefined,
  ) {}

  /** Parses like `parseReference`. */
  static parse(text: string, options?: ParseReferenceOptions): Reference {
    return parseReference(text, options);
  }

  /** @internal Construction from parts that have already been validated. */
  static fromParts(registry: string, repository: string, tag: string | undefined, digest: Digest | undefined) {
    return new Reference(registry, repository, tag, digest);
  }

  /** Full name without tag or digest: `docker.io/library/nginx`. */
  get name(): string {
    return `${this.registry}/${this.repository}`;
  }

  /**
   * What the registry API addresses the manifest by: the digest when there is one, else the
   * tag, else `latest`.
   */
  get identifier(): string {
    return this.digest?.toString() ?? this.tag ?? DEFAULT_TAG;
  }

  /** The short name Docker shows (`docker images`): `nginx`, `user/app`, `ghcr.io/o/app`. */
  familiarName(): string {
    if (this.registry !== DOCKER_HUB) return this.name;
    const prefix = `${OFFICIAL_NAMESPACE}/`;
    if (this.repository.startsWith(prefix)) {
      const rest = this.repository.slice(prefix.length);
      if (!rest.includes('/')) return rest;
    }
    return this.repository;
  }

  /** The short form with tag and digest, as Docker prints references: `nginx:1.25`, `user/app@sha256:…`. */
  familiar(): string {
    return this.familiarName() + this.suffix();
  }

  /** The full normalized form: `docker.io/library/nginx:latest`, `host:5000/a/b:t@sha256:…`. */
  toString(): string {
    return this.name + this.suffix();
  }

  toJSON(): string {
    return this.toString();
  }

  private suffix(): string {
    return (this.tag !== undefined ? `:${this.tag}` : '') + (this.digest ? `@${this.digest.toString()}` : '');
  }

  /** The same name with `tag` (a digest is kept). Throws ERR_REFERENCE_TAG_INVALID. */
  withTag(tag: string): Reference {
    if (typeof tag !== 'string' || !tagRe.test(tag)) {
      throw new InvalidReferenceError(
        'ERR_REFERENCE_TAG_INVALID',
        `invalid tag format: ${show(String(tag))} (1 to 128 characters of [A-Za-z0-9_.-], not starting with "." or "-")`,
        String(tag),
      );
    }
    return new Reference(this.registry, this.repository, tag, this.digest);
  }

  /** The same name with `digest` (a tag is kept). Throws ERR_REFERENCE_DIGEST_*. */
  withDigest(digest: Digest | string): Reference {
    let d: Digest;
    if (typeof digest === 'string') {
      if (!digestRe.test(digest)) {
        throw new InvalidReferenceError(
          'ERR_REFERENCE_DIGEST_INVALID',
          `invalid digest format: ${show(digest)}`,
          digest,
        );
      }
      d = parseDigest(digest, digest);
    } else {
      d = digest;
    }
    return new Reference(this.registry, this.repository, this.tag, d);
  }

  /** The name alone, without tag or digest. */
  withoutTagOrDigest(): Reference {
    return new Reference(this.registry, this.repository, undefined, undefined);
  }

  /** Same registry, repository, tag and digest. */
  equals(other: Reference): boolean {
    return (
      this.registry === other.registry &&
      this.repository === other.repository &&
      this.tag === other.tag &&
      (this.digest?.toString() ?? '') === (other.digest?.toString() ?? '')
    );
  }
}

/**
 * Splits a familiar name into registry and the rest, as Docker's `splitDockerDomain` does.
 */
function splitDockerDomain(text: string, normalizeRegistry1: boolean): { domain: string; remainder: string } {
  const slash = text.indexOf('/');
  if (slash < 0) return { domain: DOCKER_HUB, remainder: `${OFFICIAL_NAMESPACE}/${text}` };
  const maybe = text.slice(0, slash);
  const rest = text.slice(slash + 1);
  let domain: string;
  let remainder: string;
  if (maybe === 'localhost') {
    [domain, remainder] = [maybe, rest];
  } else if (maybe === LEGACY_HUB || (normalizeRegistry1 && maybe === HUB_REGISTRY1)) {
    [domain, remainder] = [DOCKER_HUB, rest];
  } else if (maybe.includes('.') || maybe.includes(':')) {
    [domain, remainder] = [maybe, rest];
  } else if (maybe.toLowerCase() !== maybe) {
    // Uppercase is not allowed in a path, so an uppercase first component is a host name.
    [domain, remainder] = [maybe, rest];
  } else {
    [domain, remainder] = [DOCKER_HUB, text];
  }
  if (domain === DOCKER_HUB && !remainder.includes('/')) remainder = `${OFFICIAL_NAMESPACE}/${remainder}`;
  return { domain, remainder };
}

/**
 * Docker's `ParseNormalizedNamed`: parses a familiar or full reference and keeps the tag and the
 * digest exactly as given (both may be present; none may be present).
 */
function parseNormalized(text: string, options: ParseReferenceOptions): Reference {
  if (typeof text !== 'string') {
    throw new InvalidReferenceError(
      'ERR_REFERENCE_INVALID_FORMAT',
      `invalid reference format: expected a string, got ${typeof text}`,
      String(text),
    );
  }
  if (text === '') {
    throw new InvalidReferenceError(
      'ERR_REFERENCE_INVALID_FORMAT',
      'invalid reference format: the reference is empty',
      text,
    );
  }
  if (identifierRe.test(text)) {
    throw new InvalidReferenceError(
      'ERR_REFERENCE_NAME_IS_ID',
      `invalid repository name (${text}), cannot specify 64-byte hexadecimal strings`,
      text,
    );
  }
  const { domain, remainder } = splitDockerDomain(text, options.normalizeRegistry1 ?? true);
  const colon = remainder.indexOf(':');
  const remote = colon >= 0 ? remainder.slice(0, colon) : remainder;
  if (remote.toLowerCase() !== remote) {
    throw new InvalidReferenceError(
      'ERR_REFERENCE_NAME_CONTAINS_UPPERCASE',
      `invalid reference format: repository name (${remote}) must be lowercase`,
      text,
    );
  }

  // distribution/reference's Parse() on the normalized text.
  const full = `${domain}/${remainder}`;
  const parts = split(full);
  if (!matchesReference(full)) {
    if (matchesReference(full.toLowerCase())) {
      throw new InvalidReferenceError(
        'ERR_REFERENCE_NAME_CONTAINS_UPPERCASE',
        `repository name must be lowercase: ${show(text)}`,
        text,
      );
    }
    throw new InvalidReferenceError(
      'ERR_REFERENCE_INVALID_FORMAT',
      `invalid reference format: ${diagnose(domain, parts)}`,
      text,
    );
  }
  // Which part of the name is the registry: the first component when it is a valid host
  // (anchoredNameRegexp). Docker keeps a name whose first component is not a valid host
  // (`foo_bar.com/x`) without any registry; a registry-less reference cannot be pulled or
  // pushed anywhere, so it is refused here.
  const slash = parts.name.indexOf('/');
  const first = parts.name.slice(0, slash);
  const path = parts.name.slice(slash + 1);
  if (slash <= 0 || !domainRe.test(first) || !isRemoteName(path)) {
    throw new InvalidReferenceError(
      'ERR_REFERENCE_INVALID_FORMAT',
      `invalid reference format: ${diagnose(domain, parts)}`,
      text,
    );
  }
  if (path.length > NAME_TOTAL_LENGTH_MAX) {
    throw new InvalidReferenceError(
      'ERR_REFERENCE_NAME_TOO_LONG',
      `repository name must not be more than ${NAME_TOTAL_LENGTH_MAX} characters: ${show(path)} has ${path.length}`,
      text,
    );
  }
  const digest = parts.digest === undefined ? undefined : parseDigest(parts.digest, text);
  return Reference.fromParts(first, path, parts.tag, digest);
}

function withDefaultTag(ref: Reference, options: ParseReferenceOptions): Reference {
  const tag = options.defaultTag ?? DEFAULT_TAG;
  if (tag === false || ref.tag !== undefined || ref.digest !== undefined) return ref;
  return ref.withTag(tag);
}

/**
 * Parses a reference as Docker does (`docker pull`, `docker tag`): familiar names are
 * normalized (`nginx` → `docker.io/library/nginx:latest`), a tag and a digest are both kept
 * when both are given, and `latest` is added only when there is neither (see `defaultTag`).
 * Throws `InvalidReferenceError` naming the part that is wrong.
 */
export function parseReference(text: string, options: ParseReferenceOptions = {}): Reference {
  return withDefaultTag(parseNormalized(text, options), options);
}

/**
 * containerd's `ParseDockerRef`: like `parseReference`, but when both a tag and a digest are
 * given only the digest is kept (it is what gets pulled).
 */
export function parseDockerRef(text: string, options: ParseReferenceOptions = {}): Reference {
  const ref = parseNormalized(text, options);
  if (ref.digest) return Reference.fromParts(ref.registry, ref.repository, undefined, ref.digest);
  return withDefaultTag(ref, options);
}

/**
 * Parses a reference that must already be in its full normalized form
 * (`docker.io/library/nginx:1`, not `nginx:1`), like distribution's `ParseNamed`. Throws
 * ERR_REFERENCE_NAME_NOT_CANONICAL naming the canonical form otherwise. No default tag is
 * added unless `defaultTag` is given.
 */
export function parseCanonicalReference(text: string, options: ParseReferenceOptions = {}): Reference {
  const ref = parseNormalized(text, options);
  if (ref.toString() !== text) {
    throw new InvalidReferenceError(
      'ERR_REFERENCE_NAME_NOT_CANONICAL',
      `repository name must be canonical: ${show(text)} (its canonical form is ${show(ref.toString())})`,
      text,
    );
  }
  return withDefaultTag(ref, { defaultTag: options.defaultTag ?? false });
}

/** `parseReference` that returns undefined instead of throwing. */
export function tryParseReference(text: string, options?: ParseReferenceOptions): Reference | undefined {
  try {
    return parseReference(text, options);
  } catch (e) {
    if (e instanceof InvalidReferenceError) return undefined;
    throw e;
  }
}
