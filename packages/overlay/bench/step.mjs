#!/usr/bin/env node
// One of our overlay:bench steps in a process of its own (run by bench/run.mjs): only what a
// program using the library imports, so the measured process pays no harness code.
//
//   node bench/step.mjs pull STORE_ROOT REF             Store.pull with phase timestamps
//   node bench/step.mjs phases STORE_ROOT REF SCRATCH   the pull's work layer by layer, isolated
//
// Prints one JSON line.
import { spawnSync } from 'node:child_process';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';

const now = () => Number(process.hrtime.bigint()) / 1e9;

{
  const [step, ...args] = process.argv.slice(2);
  const out = step === 'pull' ? await pullStep(...args) : step === 'phases' ? await phasesStep(...args) : undefined;
  if (!out) throw new Error(`unknown step ${step}`);
  process.stdout.write(`${JSON.stringify({ step, ...out, maxRssKiB: process.resourceUsage().maxRSS })}\n`);
  process.exit(0);
}

/**
 * `Store.pull` of `ref` into a fresh store at `storeRoot`, with timestamps: public methods are
 * wrapped (not changed) to see when each layer blob's download starts and ends, when it is
 * stored, when its apply starts and ends (onLayer) and when the commit is done.
 */
async function pullStep(storeRoot, ref) {
  const t0 = now();
  const { Store } = await import('@stevedore/overlay');
  const { RegistryClient } = await import('@stevedore/registry');
  const tImported = now();
  const blobs = new Map(); // digest → { start, downloaded, stored, bytes }
  const layers = new Map(); // diffId → { applying, applied }
  let loadStart = 0;
  const putBlob = Store.prototype.putBlob;
  Store.prototype.putBlob = async function (d, size, source) {
    if (source instanceof Uint8Array) return putBlob.call(this, d, size, source);
    const rec = { start: now(), downloaded: 0, stored: 0, bytes: 0 };
    blobs.set(d.toString(), rec);
    async function* counted() {
      for await (const chunk of source) {
        rec.bytes += chunk.length;
        yield chunk;
      }
      rec.downloaded = now();
    }
    const r = await putBlob.call(this, d, size, counted());
    rec.stored = now();
    return r;
  };
  // A pull that extracts while it downloads streams layer blobs past putBlob: time the
  // registry client's blob streams themselves.
  const fetchBlob = RegistryClient.prototype.fetchBlob;
  RegistryClient.prototype.fetchBlob = async function* (repo, digest, size, o) {
    const key = digest.toString();
    const rec = blobs.get(key) ?? { start: now(), downloaded: 0, stored: 0, bytes: 0 };
    blobs.set(key, rec);
    for await (const chunk of fetchBlob.call(this, repo, digest, size, o)) {
      rec.bytes += chunk.length;
      yield chunk;
    }
    rec.downloaded = now();
  };
  const loadImage = Store.prototype.loadImage;
  Store.prototype.loadImage = function (image, options = {}) {
    loadStart = now();
    const onLayer = options.onLayer;
    return loadImage.call(this, image, {
      ...options,
      onLayer: (ev) => {
        const rec = layers.get(ev.diffId.toString()) ?? {};
        rec[ev.state] = now();
        layers.set(ev.diffId.toString(), rec);
        onLayer?.(ev);
      },
    });
  };
  const store = await Store.open({ root: storeRoot });
  const tOpened = now();
  const client = new RegistryClient({ credentials: false });
  let result;
  try {
    result = await store.pull(ref, { client });
  } finally {
    await client.close();
  }
  const tDone = now();
  const img = await store.image(ref);
  const diffIds = img.config.rootfs.diff_ids.map(String);
  const blobDigests = (await store.layerBlobs(img)).map((b) => b.digest.toString());
  const rel = (t) => (t ? t - t0 : undefined);
  return {
    seconds: tDone - tImported, // the operation alone: open + pull (module loading excluded)
    imageId: result.imageId.toString(),
    applied: result.applied,
    timeline: {
      imported: rel(tImported),
      opened: rel(tOpened),
      manifestDone: rel(loadStart),
      done: rel(tDone),
      layers: diffIds.map((diffId, i) => {
        const b = blobs.get(blobDigests[i]) ?? {};
        const l = layers.get(diffId) ?? {};
        return {
          bytes: b.bytes,
          downloadStart: rel(b.start),
          downloaded: rel(b.downloaded),
          // kept in the content store: after its download (putBlob), or with its apply
          stored: rel(b.stored || l.applied),
          applying: rel(l.applying),
          applied: rel(l.applied),
        };
      }),
    },
  };
}

/**
 * The pull's work, layer by layer and one thing at a time, on the blobs of a stored image:
 * re-verify the stored blob (hashFile, as putBlob does), applyLayer into a fresh diff dir (as
 * loadImage does), the content-manifest walk (scanTree) and its gzip'd JSON.
 */
async function phasesStep(storeRoot, ref, scratch) {
  const { applyLayer, hashFile } = await import('@stevedore/core');
  const { Store, walkDiff } = await import('@stevedore/overlay');
  const store = await Store.open({ root: storeRoot });
  const img = await store.image(ref);
  const blobs = await store.layerBlobs(img);
  const rows = [];
  // Wall and CPU (user+sys of the whole process: native threads included) of each piece.
  const timed = async (fn) => {
    const c = process.cpuUsage();
    const t = now();
    const value = await fn();
    const cpu = process.cpuUsage(c);
    return { value, wall: now() - t, cpu: (cpu.user + cpu.system) / 1e6 };
  };
  for (let i = 0; i < img.layers.length; i++) {
    const blob = store.blobPath(blobs[i].digest);
    const diff = join(scratch, `diff${i}`);
    const hash = await timed(() => hashFile(blob));
    const apply = await timed(() =>
      applyLayer(blob, diff, {
        mode: 'overlay',
        expectedDigest: blobs[i].digest,
        expectedDiffId: img.layers[i].diffId,
        xattrNamespace: 'trusted',
        // what Store.pull asks: the tar-split recorded, the result scanned for its metadata
        scan: true,
        tarSplit: true,
      }),
    );
    // fsck --verify's walk of a layer with a tar-split (metadata, no hashing)
    const walk = await timed(() => walkDiff(diff, { hash: false }));
    const encode = await timed(() => gzipSync(JSON.stringify({ version: 1, entries: walk.value.entries })));
    const sync = await timed(() => spawnSync('sync'));
    rows.push({
      layer: i,
      compressedBytes: blobs[i].size,
      entries: apply.value.entries,
      hashFile: hash.wall,
      applyLayer: apply.wall,
      scanTreeWalk: walk.wall,
      manifestEncode: encode.wall,
      manifestGzBytes: encode.value.length,
      tarSplitGzBytes: apply.value.tarSplit?.length ?? 0,
      syncAfter: sync.wall,
      cpu: { hashFile: hash.cpu, applyLayer: apply.cpu, scanTreeWalk: walk.cpu, manifestEncode: encode.cpu },
    });
    rmSync(diff, { recursive: true, force: true });
  }
  return { seconds: 0, layers: rows };
}
