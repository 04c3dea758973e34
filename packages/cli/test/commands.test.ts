// Offline checks of the image commands: help with examples, and usage errors (exit 2) that need no registry.
import { describe, expect, it } from 'vitest';
import { stevedoreSync } from './fixtures.js';

const commands = [
  'copy',
  'inspect',
  'history',
  'manifest',
  'blob',
  'tags',
  'catalog',
  'login',
  'logout',
  'pull',
  'push',
  'images',
  'ls',
  'tag',
  'rmi',
  'prune',
  'save',
  'load',
  'unpack',
  'export',
  'mount',
  'umount',
  'diff',
  'commit',
  'layers',
  'fsck',
];

describe('image command line', () => {
  it.each(commands)('%s --help shows examples', (c) => {
    const r = stevedoreSync([c, '--help']);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/Examples:\n {2}.*stevedore /);
  });

  it.each([
    [['copy', 'oci:/tmp/x'], /missing required argument/],
    [['copy', 'store:', 'oci:/tmp/x'], /store:: missing image/],
    [['copy', 'oci:', 'oci:/tmp/x'], /missing path/],
    [['copy', 'oci:/tmp/a:bad tag', 'oci:/tmp/x'], /invalid tag/],
    [['copy', 'docker-archive:/tmp/a.tar:Bad Ref', 'oci:/tmp/x'], /invalid reference/],
    [['inspect', 'docker-daemon:app:1'], /unknown or unsupported transport docker-daemon:/],
    [['inspect', 'ftp://host/x'], /unknown or unsupported transport ftp:/],
    [['manifest', 'localhost:5000/UPPER'], /invalid reference "localhost:5000\/UPPER".*lowercase/],
    [['manifest', '--platform', 'x', 'localhost:5000/a:1'], /invalid --platform "x"/],
    [['blob', 'localhost:5000/a'], /expected REPO@DIGEST/],
    [['blob', 'localhost:5000/a:1', 'sha256:' + '0'.repeat(64)], /without a tag or digest/],
    [['tags', 'localhost:5000/a:1'], /without a tag or digest/],
    [['catalog', 'not a host'], /invalid registry/],
    [['login', 'localhost:5000'], /needs -u USER/],
    [['login', 'localhost:5000', '-u', 'a', '-p', 'b', '--password-stdin'], /exclusive/],
  ])('%j is a usage error', (args, message) => {
    const r = stevedoreSync(args);
    expect(r.code, r.stderr).toBe(2);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(message);
  });
});
