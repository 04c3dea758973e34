#!/usr/bin/env node
// One of our registry:bench steps in a process of its own (run by bench/run.mjs): it imports
// only what a program using the library would, so the measured process pays no harness code.
//
//   node bench/step.mjs pull REF DIR TAG [direct]   pullImage + copyImage → ociLayoutSink(DIR[, { directIo }])
//   node bench/step.mjs push DIR TAG REF      OCI layout DIR:TAG → copyImage → registrySink(REF)
//
// Prints one JSON line: { step, seconds (the operation alone), digest, layers, maxRssKiB }.
const [step, ...args] = process.argv.slice(2);
const { pullImage, RegistryClient, registrySink } = await import('@stevedore/registry');
const { copyImage, OciLayoutReader, ociLayoutSink } = await import('@stevedore/image');
const s = process.hrtime.bigint();
const client = new RegistryClient({ credentials: false });
let extra = {};
try {
  if (step === 'pull') {
    const [ref, dir, tag, direct] = args;
    const image = await pullImage(client, ref);
    const sink = ociLayoutSink(dir, { directIo: direct === 'direct' });
    await copyImage(image, sink, { tags: [tag] });
    await sink.close();
    extra = { digest: sink.lastDigest?.toString(), layers: image.layers.length };
  } else if (step === 'push') {
    const [dir, tag, ref] = args;
    // Layers verified (digest and diff_id) while they upload, as `stevedore copy` does.
    const r = await OciLayoutReader.openDir(dir, { verify: 'on-read' });
    try {
      const image = await r.image(tag);
      const sink = registrySink(client, ref);
      await copyImage(image, sink);
      extra = { digest: sink.lastDigest?.toString(), layers: image.layers.length };
    } finally {
      await r.close();
    }
  } else {
    throw new Error(`unknown step ${step}`);
  }
} finally {
  await client.close();
}
const seconds = Number(process.hrtime.bigint() - s) / 1e9;
process.stdout.write(`${JSON.stringify({ step, seconds, ...extra, maxRssKiB: process.resourceUsage().maxRSS })}\n`);
process.exit(0);
