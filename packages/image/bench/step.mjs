#!/usr/bin/env node
// One step of image:bench, run as its own process so its peak RSS is the step's alone.
// Usage: node bench/step.mjs <prepare|save|save-noverify|load> ARGS…
// Prints one JSON line: { step, seconds (the operation alone), maxRssKiB, … }.
import { copyImage, DockerArchive, OciLayoutReader, ociLayoutSink, writeDockerArchive } from '@stevedore/image';

const [step, ...args] = process.argv.slice(2);

async function timed(fn) {
  const s = process.hrtime.bigint();
  const extra = (await fn()) ?? {};
  return { seconds: Number(process.hrtime.bigint() - s) / 1e9, ...extra };
}

/** docker-archive → OCI layout dir: `DockerArchive.open` (full verification) + `copyImage`. */
async function load(archive, layoutDir, tag) {
  const a = await DockerArchive.open(archive, { verify: true });
  try {
    const image = a.image();
    const sink = ociLayoutSink(layoutDir);
    await copyImage(image, sink, { tags: [tag] });
    await sink.close();
    return { format: a.format, layers: image.layers.length, manifestDigest: sink.lastDigest?.toString() };
  } finally {
    await a.close();
  }
}

/** OCI layout dir → docker-archive file (what `docker save` produces from docker's storage). */
async function save(layoutDir, tag, out, repoTag, verify) {
  const r = await OciLayoutReader.openDir(layoutDir, { verify });
  try {
    const image = await r.image(tag);
    await writeDockerArchive(out, [{ image, tags: [repoTag] }]);
    return { layers: image.layers.length };
  } finally {
    await r.close();
  }
}

let result;
switch (step) {
  case 'prepare':
  case 'load': {
    const [archive, layoutDir, tag] = args;
    result = await timed(() => load(archive, layoutDir, tag));
    break;
  }
  case 'save':
  case 'save-noverify': {
    const [layoutDir, tag, out, repoTag] = args;
    result = await timed(() => save(layoutDir, tag, out, repoTag, step === 'save'));
    break;
  }
  default:
    throw new Error(`unknown step ${step}`);
}
// maxRSS is in KiB (Linux getrusage ru_maxrss).
process.stdout.write(`${JSON.stringify({ step, ...result, maxRssKiB: process.resourceUsage().maxRSS })}\n`);
