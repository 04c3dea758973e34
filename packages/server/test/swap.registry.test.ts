// Same on-disk layout, both directions: the reference registry writes a data dir (pushed with
// our client from @stevedore/registry), then our server serves it (pulled and verified); our
// server writes one, then the reference registry serves it. Also an upload session started on
// the reference registry and completed by ours (no shared hash state: ours re-hashes the data
// file; the other direction cannot work, the reference registry only takes sessions carrying its
// own HMAC-signed `_state`).
// Skips when the registry binary is missing, unless STEVEDORE_REQUIRE_DOCKER=1.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { parseReference } from '@stevedore/image';
import { pullImage, pushImage, RegistryClient } from '@stevedore/registry';
import { afterAll, describe, expect, it } from 'vitest';
import { cleanupAll, installExitHooks } from '../../../test/harness/index.js';
import { busyboxImage, collect } from '../../registry/test/fixtures.js';
import { hasReference, type Kind, rand, req, requireDocker, sha, startTarget, tempDir } from './helpers.js';

installExitHooks();
afterAll(async () => {
  await cleanupAll();
});

it.runIf(requireDocker && !hasReference)('STEVEDORE_REQUIRE_DOCKER=1 but the registry binary is missing', () => {
  expect.fail('need docker-registry');
});

const client = (chunkSize?: number) =>
  new RegistryClient({
    credentials: false,
    retry: { baseDelayMs: 10, maxDelayMs: 500 },
    ...(chunkSize ? { chunkSize } : {}),
  });

async function roundTrip(writer: Kind, reader: Kind) {
  const dir = tempDir(`swap-${writer}`);
  const img = busyboxImage(`written by ${writer}\n`, 600 * 1024);
  const w = await startTarget(writer, dir);
  let session: string;
  const leftover = rand(300_000);
  try {
    // chunked (256 KiB PATCHes) so the session path is used by both writers
    await pushImage(client(256 * 1024), parseReference(`${w.host}/swap/img:1`), img, { tags: ['1', 'also'] });
    // a half-finished upload session the other server completes
    const start = await req(`${w.url}/v2/swap/img/blobs/uploads/`, { method: 'POST' });
    const u = new URL(start.headers.get('location')!, w.url);
    session = u.pathname + u.search; // the reference registry signs its sessions (_state=…)
    const p = await req(`${w.url}${session}`, {
      method: 'PATCH',
      headers: { 'content-type': 'application/octet-stream' },
      body: leftover.subarray(0, 100_000),
    });
    expect(p.status).toBe(202);
  } finally {
    await w.stop();
  }
  // the layout the reference registry's filesystem driver uses
  const v2 = path.join(dir, 'docker', 'registry', 'v2');
  const hex = img.digest.hex;
  expect(readFileSync(path.join(v2, 'repositories/swap/img/_manifests/tags/1/current/link'), 'utf8')).toBe(
    `sha256:${hex}`,
  );
  expect(readFileSync(path.join(v2, `repositories/swap/img/_manifests/tags/1/index/sha256/${hex}/link`), 'utf8')).toBe(
    `sha256:${hex}`,
  );
  expect(readFileSync(path.join(v2, `repositories/swap/img/_manifests/revisions/sha256/${hex}/link`), 'utf8')).toBe(
    `sha256:${hex}`,
  );
  for (const l of img.layers) {
    expect(readFileSync(path.join(v2, `repositories/swap/img/_layers/sha256/${l.digest.hex}/link`), 'utf8')).toBe(
      l.digest.toString(),
    );
    const data = readFileSync(path.join(v2, `blobs/sha256/${l.digest.hex.slice(0, 2)}/${l.digest.hex}/data`));
    expect(sha(data)).toBe(l.digest.toString());
  }

  const r = await startTarget(reader, dir);
  try {
    const c = client();
    for (const tag of ['1', 'also']) {
      const pulled = await pullImage(c, parseReference(`${r.host}/swap/img:${tag}`));
      expect(pulled.digest.equals(img.digest)).toBe(true);
      for (const [i, l] of pulled.layers.entries()) {
        const got = await collect(l.compressed()); // verified while streaming by the client
        expect(Buffer.compare(got, await collect(img.layers[i]!.compressed()))).toBe(0);
      }
    }
    expect((await req(`${r.url}/v2/_catalog`)).json().repositories).toEqual(['swap/img']);
    expect([...(await req(`${r.url}/v2/swap/img/tags/list`)).json().tags].sort()).toEqual(['1', 'also']);
    // finish the other server's session: only reference → ours, since the reference registry
    // only accepts sessions carrying a `_state` HMAC made with its own (per-start) secret
    if (reader !== 'stevedore') return;
    const st = await req(`${r.url}${session}`);
    expect(st.status).toBe(204);
    expect(st.headers.get('range')).toBe('0-99999');
    const fin = await req(`${r.url}${session}&digest=${sha(leftover)}`, {
      method: 'PUT',
      headers: { 'content-type': 'application/octet-stream' },
      body: leftover.subarray(100_000),
    });
    expect(fin.status).toBe(201);
    const back = await req(`${r.url}/v2/swap/img/blobs/${sha(leftover)}`);
    expect(sha(back.body)).toBe(sha(leftover));
  } finally {
    await r.stop();
  }
}

describe.skipIf(!hasReference)('data directories swap between the reference registry and ours', () => {
  it('reference registry writes, stevedore serves', () => roundTrip('reference', 'stevedore'));
  it('stevedore writes, reference registry serves', () => roundTrip('stevedore', 'reference'));
});
