// Our reference parser against the real docker: a private dockerd (the integration harness),
// `docker tag` with valid and invalid names, with both clients on the machine:
// - the current CLI (/usr/local/bin/docker, distribution/reference 0.6, like Docker 25+ and
//   containerd): our messages start with its reason text, word for word;
// - Debian's 20.10 CLI and daemon (the harness's `bins.docker`, docker/distribution 2.x): the same
//   error class, except where the older library behaved differently (listed below).
import { existsSync } from 'node:fs';
import { InvalidReferenceError, parseReference, type ReferenceErrorCode } from '@stevedore/image';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { useRealComponents } from '../../../test/harness/guard.js';
import {
  bins,
  buildScratchImage,
  type Dockerd,
  type RunResult,
  run,
  startDockerd,
} from '../../../test/harness/index.js';

const MODERN_CLI = process.env.STEVEDORE_DOCKER_MODERN ?? '/usr/local/bin/docker';
const isRoot = process.getuid?.() === 0;
const haveDocker = existsSync(bins.dockerd) && existsSync(bins.docker);
const haveModern = existsSync(MODERN_CLI);
const SOURCE = 'stevedore-ref-src:1';

/** Our error for `input`, or undefined when it parses. */
function ours(input: string): InvalidReferenceError | undefined {
  try {
    parseReference(input);
    return undefined;
  } catch (e) {
    if (e instanceof InvalidReferenceError) return e;
    throw e;
  }
}

/** The reason docker gives: `Error parsing reference: "X" is not a valid repository/tag: <reason>`. */
function reason(r: RunResult): string {
  const text = r.stderr.trim();
  const m = /is not a valid repository\/tag: (.*)$/s.exec(text);
  return m ? m[1]!.trim() : text;
}

function classOf(dockerReason: string): ReferenceErrorCode | 'other' {
  if (/must be lowercase/.test(dockerReason)) return 'ERR_REFERENCE_NAME_CONTAINS_UPPERCASE';
  if (/must not be more than 255 characters/.test(dockerReason)) return 'ERR_REFERENCE_NAME_TOO_LONG';
  if (/cannot specify 64-byte hexadecimal strings/.test(dockerReason)) return 'ERR_REFERENCE_NAME_IS_ID';
  if (/unsupported digest algorithm/.test(dockerReason)) return 'ERR_REFERENCE_DIGEST_UNSUPPORTED';
  if (/invalid checksum digest/.test(dockerReason)) return 'ERR_REFERENCE_DIGEST_INVALID';
  if (/^invalid reference format$/.test(dockerReason)) return 'ERR_REFERENCE_INVALID_FORMAT';
  return 'other';
}

const HEX_ID = '1a3f5e7d9c1b3a5f7e9d1c3b5a7f9e1d3c5b7a9f1e3d5d7c9b1a3f5e7d9c1b3a';

/** References both docker and we reject. */
const INVALID = [
  'Foo', // uppercase
  'foo/Bar',
  'localhost:5000/Foo',
  'docker.io/library/UPPER:tag',
  'foo:-bad', // bad tags
  'foo:.bad',
  'foo:bad tag',
  `foo:${'t'.repeat(129)}`, // tag too long
  `${'a/'.repeat(128)}a`, // name too long (257)
  '-foo',
  'foo//bar',
  'foo/',
  'a:b:c',
  'dock..er/docker',
  '',
  HEX_ID,
  `foo@md5:${'0'.repeat(32)}`,
  'foo@sha256:abc',
];

/** Valid references, as `docker images` then lists them (repository:tag). */
const VALID: [input: string, listed: string][] = [
  ['stevedore-x', 'stevedore-x:latest'],
  ['docker.io/library/stevedore-y:1', 'stevedore-y:1'],
  ['index.docker.io/user/app:2', 'user/app:2'],
  ['docker.io/user/app:3', 'user/app:3'],
  ['library/foo/bar:4', 'library/foo/bar:4'],
  ['localhost/foo', 'localhost/foo:latest'],
  ['localhost:5000/a/b:c', 'localhost:5000/a/b:c'],
  ['example.com/x/y', 'example.com/x/y:latest'],
  [
    '127.0.0.1:5000/dots.and_under__scores---dashes:v1.0_rc-1',
    '127.0.0.1:5000/dots.and_under__scores---dashes:v1.0_rc-1',
  ],
  ['localhost', 'localhost:latest'],
  ['localhost:5000', 'localhost:5000'],
  ['lowercase:Uppercase', 'lowercase:Uppercase'],
  [`foo:${'t'.repeat(128)}`, `foo:${'t'.repeat(128)}`],
  [`${'b'.repeat(237)}`, `${'b'.repeat(237)}:latest`], // docker.io/library/ + 237 = 255: the limit of both
];

useRealComponents();

describe.skipIf(!isRoot || !haveDocker)('references compared with the real docker', () => {
  let d: Dockerd;
  const modern = (args: string[]) =>
    run(MODERN_CLI, ['--host', d.host, ...args], {
      allowFailure: true,
      env: {
        DOCKER_HOST: undefined,
        DOCKER_CONTEXT: undefined,
        DOCKER_CONFIG: d.clientConfigDir,
        DOCKER_CLI_HINTS: 'false',
      },
    });
  const legacy = (args: string[]) => d.docker(args, { allowFailure: true });

  beforeAll(async () => {
    d = await startDockerd();
    await buildScratchImage(d, SOURCE, { 'ref.txt': 'reference test\n' });
  }, 180_000);
  afterAll(async () => {
    await d?.stop();
  }, 60_000);

  it.skipIf(!haveModern)('current docker CLI: same rejections, and our message starts with its reason', async () => {
    const rows: string[] = [];
    for (const input of INVALID) {
      const r = await modern(['tag', SOURCE, input]);
      const e = ours(input);
      rows.push(`${JSON.stringify(input.slice(0, 40))}: docker "${reason(r).slice(0, 90)}" | ours ${e?.code}`);
      expect(r.code, `docker accepted ${input}`).not.toBe(0);
      expect(e, `we accepted ${input}`).toBeDefined();
      const why = reason(r);
      expect(e!.message.startsWith(why), `ours: ${e!.message}\ndocker: ${why}`).toBe(true);
      expect(e!.code).toBe(classOf(why));
    }
    console.log(`current docker CLI vs ours:\n  ${rows.join('\n  ')}`);
  });

  it('Debian docker 20.10: same error class for the same inputs', async () => {
    for (const input of INVALID) {
      const r = await legacy(['tag', SOURCE, input]);
      expect(r.code, `docker 20.10 accepted ${input}`).not.toBe(0);
      expect(ours(input)?.code, `${input}: docker 20.10 said ${reason(r)}`).toBe(classOf(reason(r)));
    }
  });

  it('valid names: docker lists exactly our familiar form', async () => {
    for (const [input, listed] of VALID) {
      const r = await legacy(['tag', SOURCE, input]);
      expect(r.code, `${input}: ${r.stderr}`).toBe(0);
      expect(parseReference(input).familiar()).toBe(listed);
    }
    const { stdout } = await d.docker(['images', '--format', '{{.Repository}}:{{.Tag}}']);
    const names = new Set(stdout.split('\n').filter(Boolean));
    for (const [, listed] of VALID) expect(names.has(listed), `docker images lacks ${listed}`).toBe(true);
    // and what docker lists parses back to the same references
    for (const name of names) {
      if (name.endsWith(':<none>')) continue;
      expect(parseReference(name).familiar()).toBe(name);
    }
  });

  it.skipIf(!haveModern)('current CLI accepts what distribution/reference 0.6 added, like us', async () => {
    // Docker 20.10 rejects these (older grammar; length counted with the registry).
    for (const input of ['[::1]:5000/ipv6', 'Upper/lower', `${'a'.repeat(240)}`, `${'a/'.repeat(127)}a`]) {
      const cli = await modern(['tag', SOURCE, input]);
      const old = await legacy(['tag', SOURCE, input]);
      const e = ours(input);
      console.log(
        `${input.slice(0, 30)}: current CLI exit ${cli.code} ${reason(cli).slice(0, 80)} | 20.10 exit ${old.code} ${reason(old).slice(0, 80)} | ours ${e?.code ?? 'ok'}`,
      );
      expect(old.code).not.toBe(0);
      expect(e).toBeUndefined();
      // The current CLI parses it; the 20.10 daemon behind it may still refuse it.
      expect(reason(cli)).not.toMatch(/is not a valid repository\/tag/);
    }
  });

  it('documented deviations from docker', async () => {
    // 1. registry-1.docker.io: docker keeps it as a registry of its own; we fold it into docker.io
    //    unless normalizeRegistry1 is false.
    expect((await legacy(['tag', SOURCE, 'registry-1.docker.io/dev/x'])).code).toBe(0);
    const { stdout } = await d.docker(['images', '--format', '{{.Repository}}', 'registry-1.docker.io/dev/x']);
    expect(stdout.trim()).toBe('registry-1.docker.io/dev/x');
    expect(parseReference('registry-1.docker.io/dev/x').familiar()).toBe('dev/x:latest');
    expect(parseReference('registry-1.docker.io/dev/x', { normalizeRegistry1: false }).familiar()).toBe(
      'registry-1.docker.io/dev/x:latest',
    );
    // 2. sha384 digests: docker parses them (and then refuses to tag a digest); our core has
    //    sha256 and sha512 only.
    const sha384 = `foo@sha384:${'a'.repeat(96)}`;
    const r = await legacy(['tag', SOURCE, sha384]);
    expect(r.stderr).toMatch(/refusing to create a tag with a digest reference/);
    expect(ours(sha384)?.code).toBe('ERR_REFERENCE_DIGEST_UNSUPPORTED');
    // 3. a first component taken for a registry but not a valid host name
    const odd = 'foo_bar.com/repo';
    const cli = haveModern ? await modern(['tag', SOURCE, odd]) : undefined;
    const old = await legacy(['tag', SOURCE, odd]);
    console.log(
      `${odd}: 20.10 exit ${old.code} ${reason(old)} | current CLI exit ${cli?.code} ${cli ? reason(cli) : '-'} | ours ${ours(odd)?.code}`,
    );
    expect(old.code).toBe(0); // docker keeps it, as a name without a registry
    expect(ours(odd)?.code).toBe('ERR_REFERENCE_INVALID_FORMAT');
  });
});
