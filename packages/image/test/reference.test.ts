// Reference parsing as Docker does it: cases from distribution/reference's own tests
// (reference_test.go, normalize_test.go) and from Docker's behaviour, plus our error messages.
import {
  InvalidReferenceError,
  isValidDomain,
  isValidPathComponent,
  isValidTag,
  parseCanonicalReference,
  parseDockerRef,
  parseReference,
  type ReferenceErrorCode,
  tryParseReference,
} from '@stevedore/image';
import { describe, expect, it } from 'vitest';

const F64 = 'f'.repeat(64);
const F128 = 'f'.repeat(128);
const HEX_ID = '1a3f5e7d9c1b3a5f7e9d1c3b5a7f9e1d3c5b7a9f1e3d5d7c9b1a3f5e7d9c1b3a';
const DGST = `sha256:${F64}`;

interface Valid {
  input: string;
  /** toString(): full normalized form (default tag applied). */
  full: string;
  registry: string;
  repository: string;
  tag?: string;
  digest?: string;
  /** familiar() when it differs from `full`. */
  familiar?: string;
}

// biome-ignore format: one case per line
const valid: Valid[] = [
  // Docker Hub normalization
  { input: 'nginx', full: 'docker.io/library/nginx:latest', registry: 'docker.io', repository: 'library/nginx', tag: 'latest', familiar: 'nginx:latest' },
  { input: 'nginx:1.25', full: 'docker.io/library/nginx:1.25', registry: 'docker.io', repository: 'library/nginx', tag: '1.25', familiar: 'nginx:1.25' },
  { input: 'library/nginx', full: 'docker.io/library/nginx:latest', registry: 'docker.io', repository: 'library/nginx', tag: 'latest', familiar: 'nginx:latest' },
  { input: 'docker.io/nginx', full: 'docker.io/library/nginx:latest', registry: 'docker.io', repository: 'library/nginx', tag: 'latest', familiar: 'nginx:latest' },
  { input: 'docker.io/library/nginx:alpine', full: 'docker.io/library/nginx:alpine', registry: 'docker.io', repository: 'library/nginx', tag: 'alpine', familiar: 'nginx:alpine' },
  { input: 'index.docker.io/library/debian', full: 'docker.io/library/debian:latest', registry: 'docker.io', repository: 'library/debian', tag: 'latest', familiar: 'debian:latest' },
  { input: 'index.docker.io/debian', full: 'docker.io/library/debian:latest', registry: 'docker.io', repository: 'library/debian', tag: 'latest', familiar: 'debian:latest' },
  { input: 'index.docker.io/docker/docker', full: 'docker.io/docker/docker:latest', registry: 'docker.io', repository: 'docker/docker', tag: 'latest', familiar: 'docker/docker:latest' },
  { input: 'registry-1.docker.io/foo/bar', full: 'docker.io/foo/bar:latest', registry: 'docker.io', repository: 'foo/bar', tag: 'latest', familiar: 'foo/bar:latest' },
  { input: 'registry-1.docker.io/ubuntu', full: 'docker.io/library/ubuntu:latest', registry: 'docker.io', repository: 'library/ubuntu', tag: 'latest', familiar: 'ubuntu:latest' },
  { input: 'dmcgowan/myapp', full: 'docker.io/dmcgowan/myapp:latest', registry: 'docker.io', repository: 'dmcgowan/myapp', tag: 'latest', familiar: 'dmcgowan/myapp:latest' },
  { input: 'docker.io/mcgowan/myapp:latest', full: 'docker.io/mcgowan/myapp:latest', registry: 'docker.io', repository: 'mcgowan/myapp', tag: 'latest', familiar: 'mcgowan/myapp:latest' },
  { input: 'library/foo/bar', full: 'docker.io/library/foo/bar:latest', registry: 'docker.io', repository: 'library/foo/bar', tag: 'latest', familiar: 'library/foo/bar:latest' },
  { input: 'store/foo/bar', full: 'docker.io/store/foo/bar:latest', registry: 'docker.io', repository: 'store/foo/bar', tag: 'latest', familiar: 'store/foo/bar:latest' },
  { input: 'other/library', full: 'docker.io/other/library:latest', registry: 'docker.io', repository: 'other/library', tag: 'latest', familiar: 'other/library:latest' },
  { input: 'library/ubuntu-12.04-base', full: 'docker.io/library/ubuntu-12.04-base:latest', registry: 'docker.io', repository: 'library/ubuntu-12.04-base', tag: 'latest', familiar: 'ubuntu-12.04-base:latest' },
  { input: `redis@sha256:${F64}`, full: `docker.io/library/redis@sha256:${F64}`, registry: 'docker.io', repository: 'library/redis', digest: DGST, familiar: `redis@sha256:${F64}` },
  { input: `busybox:latest@${DGST}`, full: `docker.io/library/busybox:latest@${DGST}`, registry: 'docker.io', repository: 'library/busybox', tag: 'latest', digest: DGST, familiar: `busybox:latest@${DGST}` },
  { input: `docker.io/${HEX_ID}`, full: `docker.io/library/${HEX_ID}:latest`, registry: 'docker.io', repository: `library/${HEX_ID}`, tag: 'latest', familiar: `${HEX_ID}:latest` },
  { input: 'thisisthesongthatneverendsitgoesonandonandonthisisthesongthatnev', full: 'docker.io/library/thisisthesongthatneverendsitgoesonandonandonthisisthesongthatnev:latest', registry: 'docker.io', repository: 'library/thisisthesongthatneverendsitgoesonandonandonthisisthesongthatnev', tag: 'latest', familiar: 'thisisthesongthatneverendsitgoesonandonandonthisisthesongthatnev:latest' },
  // separators
  { input: 'docker-rules/docker', full: 'docker.io/docker-rules/docker:latest', registry: 'docker.io', repository: 'docker-rules/docker', tag: 'latest', familiar: 'docker-rules/docker:latest' },
  { input: 'docker---rules/docker', full: 'docker.io/docker---rules/docker:latest', registry: 'docker.io', repository: 'docker---rules/docker', tag: 'latest', familiar: 'docker---rules/docker:latest' },
  { input: 'dock__er/docker', full: 'docker.io/dock__er/docker:latest', registry: 'docker.io', repository: 'dock__er/docker', tag: 'latest', familiar: 'dock__er/docker:latest' },
  { input: 'd/docker', full: 'docker.io/d/docker:latest', registry: 'docker.io', repository: 'd/docker', tag: 'latest', familiar: 'd/docker:latest' },
  { input: 'jess/t', full: 'docker.io/jess/t:latest', registry: 'docker.io', repository: 'jess/t', tag: 'latest', familiar: 'jess/t:latest' },
  { input: 'test_com', full: 'docker.io/library/test_com:latest', registry: 'docker.io', repository: 'library/test_com', tag: 'latest', familiar: 'test_com:latest' },
  { input: 'test_com/foo', full: 'docker.io/test_com/foo:latest', registry: 'docker.io', repository: 'test_com/foo', tag: 'latest', familiar: 'test_com/foo:latest' },
  // a first component without "." or ":" is a namespace; with them it is a registry
  { input: 'test.com:tag', full: 'docker.io/library/test.com:tag', registry: 'docker.io', repository: 'library/test.com', tag: 'tag', familiar: 'test.com:tag' },
  { input: 'test.com:5000', full: 'docker.io/library/test.com:5000', registry: 'docker.io', repository: 'library/test.com', tag: '5000', familiar: 'test.com:5000' },
  { input: 'test.com/repo:tag', full: 'test.com/repo:tag', registry: 'test.com', repository: 'repo', tag: 'tag' },
  { input: 'test:5000/repo', full: 'test:5000/repo:latest', registry: 'test:5000', repository: 'repo', tag: 'latest' },
  { input: 'test:5000/repo:tag', full: 'test:5000/repo:tag', registry: 'test:5000', repository: 'repo', tag: 'tag' },
  { input: `test:5000/repo@${DGST}`, full: `test:5000/repo@${DGST}`, registry: 'test:5000', repository: 'repo', digest: DGST },
  { input: `test:5000/repo:tag@${DGST}`, full: `test:5000/repo:tag@${DGST}`, registry: 'test:5000', repository: 'repo', tag: 'tag', digest: DGST },
  { input: 'test-com:8080/foo', full: 'test-com:8080/foo:latest', registry: 'test-com:8080', repository: 'foo', tag: 'latest' },
  { input: 'sub-dom1.foo.com/bar/baz/quux', full: 'sub-dom1.foo.com/bar/baz/quux:latest', registry: 'sub-dom1.foo.com', repository: 'bar/baz/quux', tag: 'latest' },
  { input: 'sub-dom1.foo.com/bar/baz/quux:some-long-tag', full: 'sub-dom1.foo.com/bar/baz/quux:some-long-tag', registry: 'sub-dom1.foo.com', repository: 'bar/baz/quux', tag: 'some-long-tag' },
  { input: 'b.gcr.io/test.example.com/my-app:test.example.com', full: 'b.gcr.io/test.example.com/my-app:test.example.com', registry: 'b.gcr.io', repository: 'test.example.com/my-app', tag: 'test.example.com' },
  { input: 'xn--n3h.com/myimage:xn--n3h.com', full: 'xn--n3h.com/myimage:xn--n3h.com', registry: 'xn--n3h.com', repository: 'myimage', tag: 'xn--n3h.com' },
  { input: `xn--7o8h.com/myimage:xn--7o8h.com@sha512:${F128}`, full: `xn--7o8h.com/myimage:xn--7o8h.com@sha512:${F128}`, registry: 'xn--7o8h.com', repository: 'myimage', tag: 'xn--7o8h.com', digest: `sha512:${F128}` },
  { input: 'xn--n3h.com:18080/foo', full: 'xn--n3h.com:18080/foo:latest', registry: 'xn--n3h.com:18080', repository: 'foo', tag: 'latest' },
  { input: 'foo_bar.com:8080', full: 'docker.io/library/foo_bar.com:8080', registry: 'docker.io', repository: 'library/foo_bar.com', tag: '8080', familiar: 'foo_bar.com:8080' },
  { input: 'foo/foo_bar.com:8080', full: 'docker.io/foo/foo_bar.com:8080', registry: 'docker.io', repository: 'foo/foo_bar.com', tag: '8080', familiar: 'foo/foo_bar.com:8080' },
  // localhost
  { input: 'localhost/foo', full: 'localhost/foo:latest', registry: 'localhost', repository: 'foo', tag: 'latest' },
  { input: 'localhost:5000/foo/bar:tag', full: 'localhost:5000/foo/bar:tag', registry: 'localhost:5000', repository: 'foo/bar', tag: 'tag' },
  { input: 'localhost', full: 'docker.io/library/localhost:latest', registry: 'docker.io', repository: 'library/localhost', tag: 'latest', familiar: 'localhost:latest' },
  { input: 'localhost:5000', full: 'docker.io/library/localhost:5000', registry: 'docker.io', repository: 'library/localhost', tag: '5000', familiar: 'localhost:5000' },
  // IPv4 and IPv6
  { input: '192.168.1.1', full: 'docker.io/library/192.168.1.1:latest', registry: 'docker.io', repository: 'library/192.168.1.1', tag: 'latest', familiar: '192.168.1.1:latest' },
  { input: '192.168.1.1:tag', full: 'docker.io/library/192.168.1.1:tag', registry: 'docker.io', repository: 'library/192.168.1.1', tag: 'tag', familiar: '192.168.1.1:tag' },
  { input: '192.168.1.1/repo', full: '192.168.1.1/repo:latest', registry: '192.168.1.1', repository: 'repo', tag: 'latest' },
  { input: '192.168.1.1:5000/repo:5050', full: '192.168.1.1:5000/repo:5050', registry: '192.168.1.1:5000', repository: 'repo', tag: '5050' },
  { input: '127.0.0.1:5000/library/debian', full: '127.0.0.1:5000/library/debian:latest', registry: '127.0.0.1:5000', repository: 'library/debian', tag: 'latest' },
  { input: '[2001:db8::1]/repo', full: '[2001:db8::1]/repo:latest', registry: '[2001:db8::1]', repository: 'repo', tag: 'latest' },
  { input: '[2001:db8:1:2:3:4:5:6]/repo:tag', full: '[2001:db8:1:2:3:4:5:6]/repo:tag', registry: '[2001:db8:1:2:3:4:5:6]', repository: 'repo', tag: 'tag' },
  { input: `[2001:db8::1]:5000/repo:tag@${DGST}`, full: `[2001:db8::1]:5000/repo:tag@${DGST}`, registry: '[2001:db8::1]:5000', repository: 'repo', tag: 'tag', digest: DGST },
  { input: '[2001:db8::]:5000/repo', full: '[2001:db8::]:5000/repo:latest', registry: '[2001:db8::]:5000', repository: 'repo', tag: 'latest' },
  { input: '[::1]:5000/repo', full: '[::1]:5000/repo:latest', registry: '[::1]:5000', repository: 'repo', tag: 'latest' },
  // tags
  { input: 'lowercase:Uppercase', full: 'docker.io/library/lowercase:Uppercase', registry: 'docker.io', repository: 'library/lowercase', tag: 'Uppercase', familiar: 'lowercase:Uppercase' },
  { input: 'foo:_under', full: 'docker.io/library/foo:_under', registry: 'docker.io', repository: 'library/foo', tag: '_under', familiar: 'foo:_under' },
  { input: `foo:${'t'.repeat(128)}`, full: `docker.io/library/foo:${'t'.repeat(128)}`, registry: 'docker.io', repository: 'library/foo', tag: 't'.repeat(128), familiar: `foo:${'t'.repeat(128)}` },
  // an uppercase first component is a registry (distribution/reference 0.6, Docker 25+)
  { input: 'Foo/bar', full: 'Foo/bar:latest', registry: 'Foo', repository: 'bar', tag: 'latest' },
  // length: the path (not the registry) is limited to 255
  { input: `${'a/'.repeat(127)}a:tag-puts-this-over-max`, full: `docker.io/${'a/'.repeat(127)}a:tag-puts-this-over-max`, registry: 'docker.io', repository: `${'a/'.repeat(127)}a`, tag: 'tag-puts-this-over-max', familiar: `${'a/'.repeat(127)}a:tag-puts-this-over-max` },
  { input: 'a'.repeat(247), full: `docker.io/library/${'a'.repeat(247)}:latest`, registry: 'docker.io', repository: `library/${'a'.repeat(247)}`, tag: 'latest', familiar: `${'a'.repeat(247)}:latest` },
  { input: `example.com/${'b'.repeat(255)}`, full: `example.com/${'b'.repeat(255)}:latest`, registry: 'example.com', repository: 'b'.repeat(255), tag: 'latest' },
];

// biome-ignore format: one case per line
const invalid: [input: string, code: ReferenceErrorCode, message: string | RegExp][] = [
  ['', 'ERR_REFERENCE_INVALID_FORMAT', 'invalid reference format: the reference is empty'],
  [':justtag', 'ERR_REFERENCE_INVALID_FORMAT', /^invalid reference format: /],
  [`@${DGST}`, 'ERR_REFERENCE_INVALID_FORMAT', /^invalid reference format: /],
  ['aa/asdf$$^/aa', 'ERR_REFERENCE_INVALID_FORMAT', /path component "asdf\$\$\^"/],
  ['https://github.com/docker/docker', 'ERR_REFERENCE_INVALID_FORMAT', /registry "https:" is not a valid host/],
  ['-docker', 'ERR_REFERENCE_INVALID_FORMAT', /path component "-docker"/],
  ['-docker/docker', 'ERR_REFERENCE_INVALID_FORMAT', /path component "-docker"/],
  ['-docker.io/docker/docker', 'ERR_REFERENCE_INVALID_FORMAT', /registry "-docker.io"/],
  ['docker-/docker', 'ERR_REFERENCE_INVALID_FORMAT', /path component "docker-"/],
  ['-docker-/docker', 'ERR_REFERENCE_INVALID_FORMAT', /path component/],
  ['____/____', 'ERR_REFERENCE_INVALID_FORMAT', /path component "____"/],
  ['_docker/_docker', 'ERR_REFERENCE_INVALID_FORMAT', /path component "_docker"/],
  ['dock..er/docker', 'ERR_REFERENCE_INVALID_FORMAT', /registry "dock..er"/],
  ['dock_.er/docker', 'ERR_REFERENCE_INVALID_FORMAT', /registry "dock_.er"/],
  ['dock-.er/docker', 'ERR_REFERENCE_INVALID_FORMAT', /registry "dock-.er"/],
  ['docker/', 'ERR_REFERENCE_INVALID_FORMAT', /empty path component/],
  ['docker///docker', 'ERR_REFERENCE_INVALID_FORMAT', /empty path component/],
  ['docker.io/docker///docker', 'ERR_REFERENCE_INVALID_FORMAT', /empty path component/],
  ['a:b:c', 'ERR_REFERENCE_INVALID_FORMAT', /path component "a:b"/],
  ['foo:-bad', 'ERR_REFERENCE_INVALID_FORMAT', /tag "-bad" is not valid/],
  ['foo:.bad', 'ERR_REFERENCE_INVALID_FORMAT', /tag "\.bad" is not valid/],
  ['foo:bad tag', 'ERR_REFERENCE_INVALID_FORMAT', /tag "bad tag" is not valid/],
  [`foo:${'t'.repeat(129)}`, 'ERR_REFERENCE_INVALID_FORMAT', /tag ".*" is not valid/],
  ['foo@sha256:abc', 'ERR_REFERENCE_INVALID_FORMAT', /digest "sha256:abc" is not valid/],
  ['[2001:db8::1]', 'ERR_REFERENCE_INVALID_FORMAT', /^invalid reference format: /],
  ['[2001:db8::1]:5000', 'ERR_REFERENCE_INVALID_FORMAT', /^invalid reference format: /],
  ['[2001:db8::1]:tag', 'ERR_REFERENCE_INVALID_FORMAT', /^invalid reference format: /],
  ['[fe80::1%eth0]:5000/repo', 'ERR_REFERENCE_INVALID_FORMAT', /registry "\[fe80::1%eth0\]:5000"/],
  ['[fe80::1%@invalidzone]:5000/repo', 'ERR_REFERENCE_INVALID_FORMAT', /^invalid reference format: /],
  // Docker keeps this as a name without registry; we refuse it (see the module comment)
  ['foo_bar.com/repo', 'ERR_REFERENCE_INVALID_FORMAT', /registry "foo_bar.com" is not a valid host/],
  // uppercase
  ['Uppercase:tag', 'ERR_REFERENCE_NAME_CONTAINS_UPPERCASE', 'invalid reference format: repository name (library/Uppercase) must be lowercase'],
  ['Foo', 'ERR_REFERENCE_NAME_CONTAINS_UPPERCASE', 'invalid reference format: repository name (library/Foo) must be lowercase'],
  ['docker/Docker', 'ERR_REFERENCE_NAME_CONTAINS_UPPERCASE', 'invalid reference format: repository name (docker/Docker) must be lowercase'],
  ['docker.io/docker/Docker', 'ERR_REFERENCE_NAME_CONTAINS_UPPERCASE', 'invalid reference format: repository name (docker/Docker) must be lowercase'],
  ['test:5000/Uppercase/lowercase:tag', 'ERR_REFERENCE_NAME_CONTAINS_UPPERCASE', 'invalid reference format: repository name (Uppercase/lowercase) must be lowercase'],
  ['localhost:5000/Foo', 'ERR_REFERENCE_NAME_CONTAINS_UPPERCASE', 'invalid reference format: repository name (Foo) must be lowercase'],
  ['Foo_bar/x', 'ERR_REFERENCE_NAME_CONTAINS_UPPERCASE', /^repository name must be lowercase/],
  // too long
  [`${'a/'.repeat(128)}a:tag`, 'ERR_REFERENCE_NAME_TOO_LONG', /^repository name must not be more than 255 characters: .* has 257$/],
  ['a'.repeat(248), 'ERR_REFERENCE_NAME_TOO_LONG', /^repository name must not be more than 255 characters: /],
  [`example.com/${'b'.repeat(256)}`, 'ERR_REFERENCE_NAME_TOO_LONG', /has 256$/],
  [
    'this_is_not_a_valid_namespace_because_its_lenth_is_greater_than_255_this_is_not_a_valid_namespace_because_its_lenth_is_greater_than_255_this_is_not_a_valid_namespace_because_its_lenth_is_greater_than_255_this_is_not_a_valid_namespace_because_its_lenth_is_greater_than_255/docker',
    'ERR_REFERENCE_NAME_TOO_LONG',
    /^repository name must not be more than 255 characters/,
  ],
  // a 64-hex name is an image ID
  [HEX_ID, 'ERR_REFERENCE_NAME_IS_ID', `invalid repository name (${HEX_ID}), cannot specify 64-byte hexadecimal strings`],
  // digests
  [`repo@sha256:${'f'.repeat(34)}`, 'ERR_REFERENCE_DIGEST_INVALID', /^invalid checksum digest length: sha256 needs 64 hex digits/],
  [`repo@sha256:${'F'.repeat(64)}`, 'ERR_REFERENCE_DIGEST_INVALID', /^invalid checksum digest format: /],
  [`validname@invaliddigest:${F64}`, 'ERR_REFERENCE_DIGEST_UNSUPPORTED', /^unsupported digest algorithm: "invaliddigest"/],
  [`foo@md5:${'0'.repeat(32)}`, 'ERR_REFERENCE_DIGEST_UNSUPPORTED', /^unsupported digest algorithm: "md5"/],
  [`foo@sha384:${'a'.repeat(96)}`, 'ERR_REFERENCE_DIGEST_UNSUPPORTED', /"sha384".*supported: sha256, sha512/],
  // the lowercase check covers everything up to the first ":" (Docker's quirk, kept)
  [`foo@SHA256:${F64}`, 'ERR_REFERENCE_NAME_CONTAINS_UPPERCASE', 'invalid reference format: repository name (library/foo@SHA256) must be lowercase'],
];

describe('parseReference: valid references', () => {
  it.each(valid)('$input', (c) => {
    const r = parseReference(c.input);
    expect(r.toString()).toBe(c.full);
    expect(r.registry).toBe(c.registry);
    expect(r.repository).toBe(c.repository);
    expect(r.name).toBe(`${c.registry}/${c.repository}`);
    expect(r.tag).toBe(c.tag);
    expect(r.digest?.toString()).toBe(c.digest);
    expect(r.familiar()).toBe(c.familiar ?? c.full);
    // parsing the normalized and the familiar form gives the same reference back
    expect(parseReference(r.toString()).equals(r)).toBe(true);
    expect(parseReference(r.familiar()).equals(r)).toBe(true);
  });

  it('has at least 60 cases between valid and invalid', () => {
    expect(valid.length + invalid.length).toBeGreaterThanOrEqual(60);
  });
});

describe('parseReference: invalid references', () => {
  it.each(invalid)('%s → %s', (input, code, message) => {
    let err: unknown;
    try {
      parseReference(input);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(InvalidReferenceError);
    const e = err as InvalidReferenceError;
    expect(e.code).toBe(code);
    expect(e.input).toBe(input);
    if (typeof message === 'string') expect(e.message).toBe(message);
    else expect(e.message).toMatch(message);
    expect(tryParseReference(input)).toBeUndefined();
  });

  it('rejects non-strings with a typed error', () => {
    expect(() => parseReference(42 as unknown as string)).toThrow(InvalidReferenceError);
  });

  it('runs in linear time on hostile input (no regexp backtracking blow-up)', () => {
    const hostile = [
      `${'a'.repeat(100_000)}!`,
      `${'a-'.repeat(50_000)}!`,
      `${'a.'.repeat(50_000)}/x!`,
      `${'a-a.'.repeat(25_000)}:5000/x`,
      `x/${'a_'.repeat(50_000)}`,
      `x/${'a/'.repeat(50_000)}!`,
      `x@${'a+'.repeat(50_000)}`,
    ];
    const start = performance.now();
    for (const h of hostile) expect(tryParseReference(h)).toBeUndefined();
    expect(performance.now() - start).toBeLessThan(2000);
  });
});

describe('normalization options and variants', () => {
  it('adds "latest" only when there is neither tag nor digest', () => {
    expect(parseReference('foo').tag).toBe('latest');
    expect(parseReference(`foo@${DGST}`).tag).toBeUndefined();
    expect(parseReference('foo', { defaultTag: false }).toString()).toBe('docker.io/library/foo');
    expect(parseReference('foo', { defaultTag: 'stable' }).toString()).toBe('docker.io/library/foo:stable');
  });

  it('keeps registry-1.docker.io distinct when asked to, as Docker does', () => {
    const r = parseReference('registry-1.docker.io/foo', { normalizeRegistry1: false });
    expect(r.registry).toBe('registry-1.docker.io');
    expect(r.repository).toBe('foo');
    expect(r.familiar()).toBe('registry-1.docker.io/foo:latest');
  });

  it('parseDockerRef keeps only the digest when both are given (containerd ParseDockerRef)', () => {
    expect(parseDockerRef('foo').toString()).toBe('docker.io/library/foo:latest');
    expect(parseDockerRef(`foo:1@${DGST}`).toString()).toBe(`docker.io/library/foo@${DGST}`);
    expect(parseDockerRef(`foo@${DGST}`).toString()).toBe(`docker.io/library/foo@${DGST}`);
    expect(parseDockerRef('localhost:5000/x/y:v').toString()).toBe('localhost:5000/x/y:v');
    // a bare digest is a tag of a repository called "sha256", as in Docker
    expect(parseDockerRef(DGST).toString()).toBe(`docker.io/library/${DGST}`);
  });

  it('parseCanonicalReference requires the full normalized form', () => {
    expect(parseCanonicalReference('docker.io/library/foo:1').tag).toBe('1');
    expect(parseCanonicalReference('docker.io/library/foo').tag).toBeUndefined();
    expect(parseCanonicalReference('docker.io/library/foo', { defaultTag: 'latest' }).tag).toBe('latest');
    for (const text of ['foo', 'library/foo:1', 'index.docker.io/library/foo', 'docker.io/foo']) {
      expect(() => parseCanonicalReference(text)).toThrow(
        expect.objectContaining({
          code: 'ERR_REFERENCE_NAME_NOT_CANONICAL',
          message: expect.stringContaining('canonical form'),
        }),
      );
    }
  });

  it('withTag / withDigest / identifier / JSON', () => {
    const r = parseReference('ghcr.io/o/app:1');
    expect(r.identifier).toBe('1');
    const d = r.withDigest(DGST);
    expect(d.toString()).toBe(`ghcr.io/o/app:1@${DGST}`);
    expect(d.identifier).toBe(DGST);
    expect(d.withTag('2').toString()).toBe(`ghcr.io/o/app:2@${DGST}`);
    expect(r.withoutTagOrDigest().toString()).toBe('ghcr.io/o/app');
    expect(r.withoutTagOrDigest().identifier).toBe('latest');
    expect(JSON.stringify({ r })).toBe('{"r":"ghcr.io/o/app:1"}');
    expect(() => r.withTag('-x')).toThrow(expect.objectContaining({ code: 'ERR_REFERENCE_TAG_INVALID' }));
    expect(() => r.withTag('a'.repeat(129))).toThrow(expect.objectContaining({ code: 'ERR_REFERENCE_TAG_INVALID' }));
    expect(() => r.withDigest('sha256:xyz')).toThrow(expect.objectContaining({ code: 'ERR_REFERENCE_DIGEST_INVALID' }));
    expect(() => r.withDigest(`md5:${'0'.repeat(32)}`)).toThrow(
      expect.objectContaining({ code: 'ERR_REFERENCE_DIGEST_UNSUPPORTED' }),
    );
  });

  it('exposes the grammar pieces', () => {
    expect(isValidTag('v1.0_rc-1')).toBe(true);
    expect(isValidTag('.v1')).toBe(false);
    expect(isValidPathComponent('a__b')).toBe(true);
    expect(isValidPathComponent('a___b')).toBe(false);
    expect(isValidPathComponent('a.-b')).toBe(false);
    expect(isValidDomain('[::1]:5000')).toBe(true);
    expect(isValidDomain('host:port')).toBe(false);
  });
});
