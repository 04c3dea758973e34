// The store commands as a user runs them (subprocesses, a real store under a temp --root) against
// the real distribution registry on loopback: pull → images → inspect/history store: → layers
// (wasted space on a known fixture) → tag → push → save/load → unpack/export → rmi/prune → fsck;
// the common mistakes' one-line errors; the live progress in a real terminal (tmux).
import { spawnSync } from 'node:child_process';
import { chmodSync, chownSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bins, cleanupAll, installExitHooks, type Registry, startRegistry } from '../../../test/harness/index.js';
import { humanSize } from '../src/commands/common.js';
import { bin, busyboxBytes, layeredImage, stevedore, writeLayout } from './fixtures.js';

const canRun = existsSync(bins.registry) && existsSync('/bin/busybox');
const required = process.env.STEVEDORE_REQUIRE_DOCKER === '1';

installExitHooks();
afterAll(async () => {
  await cleanupAll();
});

it.runIf(required && !canRun)('STEVEDORE_REQUIRE_DOCKER=1 but the registry or busybox is missing', () => {
  expect.fail(`need ${bins.registry} and /bin/busybox`);
});

const big = new Uint8Array(10_000).fill(1);
const over = new Uint8Array(3_000).fill(2);
/** Layer 1 deletes /data/big.bin (10000 B) and overwrites /etc/over.txt (3000 B): 13000 B wasted. */
export const wasteSpec = () => [
  { 'bin/busybox': busyboxBytes(), 'data/big.bin': big, 'etc/over.txt': over, 'msg.txt': 'hello from the store\n' },
  { 'data/big.bin': null, 'etc/over.txt': 'small', 'etc/new.txt': 'new\n' },
];

describe.skipIf(!canRun)('stevedore store commands against the distribution registry', () => {
  let reg: Registry;
  const work = mkdtempSync(join(tmpdir(), 'sd-cli-store-'));
  const root = join(work, 'root');
  const image = layeredImage(wasteSpec(), { cat: '/msg.txt', history: ['COPY . /', 'RUN rm big; edit over'] });
  let ref: string;
  const sd = (args: string[], o: Parameters<typeof stevedore>[1] = {}) => stevedore(['--root', root, ...args], o);

  beforeAll(async () => {
    reg = await startRegistry();
    const layout = join(work, 'layout');
    await writeLayout(layout, image, 'v1');
    ref = `${reg.host}/sd/store:1`;
    const r = await stevedore(['-q', 'copy', `oci:${layout}:v1`, `docker://${ref}`]);
    expect(r.code, r.stderr).toBe(0);
  }, 240_000);
  afterAll(async () => {
    await reg?.stop();
    rmSync(work, { recursive: true, force: true });
  }, 60_000);

  it('pull: one line per finished step off a TTY, the reference on stdout, --json result', async () => {
    const r = await sd(['pull', ref]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout.trim()).toBe(ref);
    for (const l of image.layers) {
      const id = l.digest.hex.slice(0, 12);
      expect(r.stderr).toContain(`${id}: Download complete`);
      expect(r.stderr).toContain(`${id}: Pull complete`);
    }
    expect(r.stderr).toContain(`Digest: ${image.digest}`);
    expect(r.stderr).not.toContain('\u001b[');
    const again = await sd(['--json', 'pull', ref]);
    expect(again.code, again.stderr).toBe(0);
    const j = JSON.parse(again.stdout);
    expect(j).toMatchObject({
      digest: image.digest.toString(),
      id: image.manifest.config.digest.toString(),
      applied: 0,
    });
    expect(again.stderr).toMatch(/Already exists/);
    expect(again.stderr).toMatch(/Image is up to date/);
    const q = await sd(['-q', 'pull', ref]);
    expect(q.stderr).toBe('');
  });

  it('images / ls: docker columns; --json rows', async () => {
    const r = await sd(['images']);
    expect(r.code, r.stderr).toBe(0);
    const [head, row] = r.stdout.trim().split('\n');
    expect(head).toMatch(/^REPOSITORY\s+TAG\s+IMAGE ID\s+CREATED\s+SIZE$/);
    expect(row).toMatch(
      new RegExp(`^${reg.host}/sd/store\\s+1\\s+${image.manifest.config.digest.hex.slice(0, 12)}\\s+.+ago\\s+\\d`),
    );
    const j = JSON.parse((await sd(['--json', 'ls'])).stdout);
    expect(j).toEqual([
      expect.objectContaining({
        Repository: `${reg.host}/sd/store`,
        Tag: '1',
        Id: image.manifest.config.digest.toString(),
        Digest: image.digest.toString(),
      }),
    ]);
  });

  it('inspect and history read store:REF', async () => {
    const r = await sd(['--json', 'inspect', `store:${ref}`]);
    expect(r.code, r.stderr).toBe(0);
    const info = JSON.parse(r.stdout);
    expect(info.Digest).toBe(image.digest.toString());
    expect(info.RepoTags).toEqual([`${reg.host}/sd/store:1`]);
    expect(info.RepoDigests).toEqual([`${reg.host}/sd/store@${image.digest}`]);
    const h = await sd(['--json', 'history', `store:${ref}`]);
    expect(JSON.parse(h.stdout).map((x: { createdBy: string }) => x.createdBy)).toEqual([
      'RUN rm big; edit over',
      'COPY . /',
    ]);
  });

  it('layers: added/changed/deleted, wasted bytes and efficiency on the fixture', async () => {
    const r = await sd(['--json', 'layers', ref]);
    expect(r.code, r.stderr).toBe(0);
    const j = JSON.parse(r.stdout);
    const bb = busyboxBytes().length;
    const base = bb + 10_000 + 3_000 + 'hello from the store\n'.length;
    expect(j.layers[0]).toMatchObject({ added: 4, changed: 0, deleted: 0, wasted: 13_000, size: base });
    expect(j.layers[1]).toMatchObject({ added: 1, changed: 1, deleted: 1, wasted: 0, size: 5 + 4 });
    expect(j.layers[1].files).toEqual(
      expect.arrayContaining([
        { kind: 'D', path: '/data/big.bin', size: 10_000 },
        { kind: 'C', path: '/etc/over.txt', size: 5 },
        { kind: 'A', path: '/etc/new.txt', size: 4 },
      ]),
    );
    expect(j.wastedBytes).toBe(13_000);
    expect(j.totalBytes).toBe(base + 9);
    expect(j.efficiency).toBeCloseTo((base + 9 - 13_000) / (base + 9), 6);
    expect(j.wastedFiles[0]).toEqual({ path: '/data/big.bin', layers: [0], bytes: 10_000 });
    const human = await sd(['layers', ref]);
    expect(human.stdout).toMatch(/^#\s+LAYER\s+SIZE\s+ADDED\s+CHANGED\s+DELETED\s+WASTED\s+CREATED BY/);
    expect(human.stdout).toMatch(/D\s+10\.0 kB\s+\/data\/big\.bin/);
    expect(human.stdout).toMatch(/wasted 13\.0 kB, efficiency \d+\.\d%/);
  });

  it('tag, push from the store, copy store: → oci:, and the registry serves the same digest', async () => {
    const t = await sd(['tag', ref, `${reg.host}/sd/pushed:2`]);
    expect(t.code, t.stderr).toBe(0);
    const p = await sd(['push', `${reg.host}/sd/pushed:2`]);
    expect(p.code, p.stderr).toBe(0);
    expect(p.stdout.trim()).toBe(`${reg.host}/sd/pushed@${image.digest}`);
    expect(p.stderr).toMatch(/The push refers to repository/);
    const m = await stevedore(['--json', 'manifest', `${reg.host}/sd/pushed:2`]);
    expect(JSON.parse(m.stdout).digest).toBe(image.digest.toString());
    const c = await sd(['-q', 'copy', `store:${ref}`, `oci:${join(work, 'out')}:x`]);
    expect(c.code, c.stderr).toBe(0);
    const i = await stevedore(['--json', 'inspect', `oci:${join(work, 'out')}:x`]);
    expect(JSON.parse(i.stdout).Digest).toBe(image.digest.toString());
    // and copy into the store
    const root3 = join(work, 'root3');
    const into = await stevedore(['--root', root3, '-q', 'copy', `oci:${join(work, 'out')}:x`, 'store:copied:1']);
    expect(into.code, into.stderr).toBe(0);
    expect((await stevedore(['--root', root3, 'images'])).stdout).toMatch(/copied\s+1\s/);
  });

  it('save → load into a second store (STEVEDORE_ROOT) → images; unpack and export flatten', async () => {
    const tar = join(work, 'saved.tar');
    const s = await sd(['save', '-o', tar, ref]);
    expect(s.code, s.stderr).toBe(0);
    const root2 = join(work, 'root2');
    const l = await stevedore(['load', '-i', tar], { env: { STEVEDORE_ROOT: root2 } });
    expect(l.code, l.stderr).toBe(0);
    expect(l.stderr).toContain(`Loaded image: ${reg.host}/sd/store:1`);
    const imgs = await stevedore(['--json', 'images'], { env: { STEVEDORE_ROOT: root2 } });
    expect(JSON.parse(imgs.stdout).map((x: { Id: string }) => x.Id)).toEqual([image.manifest.config.digest.toString()]);

    const dir = join(work, 'unpacked');
    const u = await sd(['unpack', ref, dir]);
    expect(u.code, u.stderr).toBe(0);
    expect(existsSync(join(dir, 'data/big.bin'))).toBe(false);
    expect(readFileSync(join(dir, 'etc/over.txt'), 'utf8')).toBe('small');
    const e = await sd(['export', ref, '-o', join(work, 'flat.tar')]);
    expect(e.code, e.stderr).toBe(0);
    const list = spawnSync('tar', ['-tf', join(work, 'flat.tar')], { encoding: 'utf8' }).stdout;
    expect(list).toMatch(/etc\/new\.txt/);
    expect(list).not.toMatch(/big\.bin/);
  });

  it('rmi, prune, fsck --verify', async () => {
    const f = await sd(['--json', 'fsck', '--verify']);
    expect(f.code, f.stderr).toBe(0);
    expect(JSON.parse(f.stdout)).toMatchObject({ problems: [], verifiedLayers: 2 });
    const r = await sd(['rmi', `${reg.host}/sd/pushed:2`]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toContain(`Untagged: ${reg.host}/sd/pushed:2`);
    expect(r.stderr).not.toMatch(/Deleted/);
    const p = await sd(['--json', 'prune']);
    expect(p.code, p.stderr).toBe(0);
    expect(JSON.parse(p.stdout).blobs).toEqual([]);
    const all = await sd(['--json', 'rmi', ref, `${reg.host}/sd/store@${image.digest}`]);
    expect(all.code, all.stderr).toBe(0);
    expect(JSON.parse(all.stdout)[1].deleted).toEqual([image.manifest.config.digest.toString()]);
    const p2 = await sd(['--json', 'prune']);
    expect(JSON.parse(p2.stdout).blobs.length).toBeGreaterThanOrEqual(3);
    expect(JSON.parse((await sd(['--json', 'images'])).stdout)).toEqual([]);
    expect((await sd(['fsck'])).code).toBe(0);
  });

  it('the common mistakes: one line with what to do', async () => {
    const cases: [string[], number, RegExp][] = [
      [['inspect', 'store:nope:1'], 1, /^stevedore: no such image nope:1: run `stevedore images`/],
      [['rmi', 'nope:1'], 1, /^stevedore: no such image nope:1: run `stevedore images`/],
      [['layers', 'nope'], 1, /no such image nope: run `stevedore images`/],
      [['save', 'x:1'], 2, /save needs -o FILE/],
      [
        ['diff', join(work, 'nowhere')],
        1,
        /no writable mount or container layer .*: mount one with `stevedore mount --writable/,
      ],
      [['umount', join(work, 'nowhere')], 1, /is not mounted/],
      [['copy', 'store:', 'oci:x'], 2, /missing image/],
      [['pull', 'bad ref!'], 2, /invalid reference/],
    ];
    for (const [args, code, re] of cases) {
      const r = await sd(args);
      expect(r.code, `${args.join(' ')}: ${r.stderr}`).toBe(code);
      expect(r.stderr.trim().split('\n'), r.stderr).toHaveLength(1);
      expect(r.stderr).toMatch(re);
    }
    const help = await sd(['pull', '--help']);
    expect(help.stdout).toMatch(/Examples:/);
  });

  it.runIf(process.getuid?.() === 0 && existsSync('/usr/bin/setpriv'))(
    'mount as a user without root or fuse-overlayfs says so and points at unpack',
    async () => {
      const userRoot = join(work, 'user-root');
      mkdirSync(userRoot);
      chownSync(userRoot, 65534, 65534);
      chmodSync(work, 0o755);
      const tar = join(work, 'user.tar');
      const one = layeredImage([{ 'bin/busybox': busyboxBytes() }]);
      await writeLayout(join(work, 'one'), one, 'v1');
      expect((await stevedore(['-q', 'copy', `oci:${join(work, 'one')}:v1`, `docker-archive:${tar}:one:1`])).code).toBe(
        0,
      );
      chmodSync(tar, 0o644);
      const as = (args: string[]) =>
        spawnSync(
          '/usr/bin/setpriv',
          ['--reuid=65534', '--regid=65534', '--clear-groups', process.execPath, bin, '--root', userRoot, ...args],
          { encoding: 'utf8', env: { ...process.env, NO_COLOR: '1', STEVEDORE_FUSE_OVERLAYFS: '/nonexistent' } },
        );
      const l = as(['-q', 'load', '-i', tar]);
      expect(l.status, l.stderr).toBe(0);
      const m = as(['mount', 'one:1', join(userRoot, 'mnt')]);
      expect(m.status).toBe(1);
      expect(m.stderr.trim()).toBe(
        'stevedore: mount needs root (or fuse-overlayfs): run as root or use `stevedore unpack`',
      );
    },
  );

  /**
   * Runs a shell command in a real terminal (a 120×30 tmux pane): its exit status, the screen it
   * leaves and every byte it wrote to the terminal (tmux pipe-pane, attached before it starts).
   */
  async function inTerminal(name: string, cmd: string): Promise<{ exit: string; pane: string; raw: string }> {
    const session = `sd-${name}-${process.pid}`;
    const go = join(work, `${name}.go`);
    const done = join(work, `${name}.done`);
    const raw = join(work, `${name}.raw`);
    const script = `while [ ! -e ${go} ]; do sleep 0.05; done; ${cmd}; echo EXIT=$? > ${done}; echo SD-END; sleep 60`;
    const t = spawnSync('tmux', ['new-session', '-d', '-s', session, '-x', '120', '-y', '30', script], {
      encoding: 'utf8',
    });
    expect(t.status, t.stderr).toBe(0);
    try {
      const p = spawnSync('tmux', ['pipe-pane', '-o', '-t', session, `cat >> ${raw}`], { encoding: 'utf8' });
      expect(p.status, p.stderr).toBe(0);
      writeFileSync(go, '');
      const finished = () => existsSync(raw) && readFileSync(raw, 'latin1').includes('SD-END');
      const deadline = Date.now() + 60_000;
      while (!finished() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
      const pane = spawnSync('tmux', ['capture-pane', '-p', '-t', session], { encoding: 'utf8' }).stdout;
      return { exit: readFileSync(done, 'utf8').trim(), pane, raw: readFileSync(raw, 'latin1') };
    } finally {
      spawnSync('tmux', ['kill-session', '-t', session]);
    }
  }
  /** The line a finished layer leaves on screen: the bar at 100% and the layer's size. */
  const finalLine = (id: string, state: string, size: number) =>
    `${id}: ${state.padEnd(17)} [${'='.repeat(30)}] 100% | ${humanSize(size)}`;
  /** The last of two terminal mode switches written wins: `on` must come after the last `off`. */
  const restored = (raw: string, off: string, on: string) => raw.lastIndexOf(on) > raw.lastIndexOf(off);

  it.runIf(required && !existsSync('/usr/bin/tmux'))('STEVEDORE_REQUIRE_DOCKER=1 but tmux is missing', () => {
    expect.fail('need /usr/bin/tmux for the terminal progress test');
  });

  it.runIf(existsSync('/usr/bin/tmux'))('pull on a terminal: one live bar per layer, finished cleanly', async () => {
    const root4 = join(work, 'root-tty');
    const pull = (flags: string) => `${process.execPath} ${bin} --root ${root4} ${flags} pull ${ref}`;

    // First pull, NO_COLOR: the bars end at 100% with each layer's size, one line per layer.
    const first = await inTerminal('pull1', `env NO_COLOR=1 ${pull('')}`);
    expect(first.exit, first.pane).toBe('EXIT=0');
    const lines = first.pane.split('\n').filter((x) => x.trim());
    for (const l of image.layers) {
      const id = l.digest.hex.slice(0, 12);
      // exactly one line per layer: redrawn in place, left in its final state
      expect(
        lines.filter((x) => x.startsWith(`${id}:`)),
        first.pane,
      ).toEqual([finalLine(id, 'Pull complete', l.size)]);
    }
    expect(first.pane).toContain(`Status: Downloaded newer image for ${reg.host}/sd/store:1`);
    // The reference (stdout) comes after the bars and the status, on a line of its own.
    expect(lines.at(-2)).toBe(ref);
    // No escape sequence left as visible garbage; cursor and line wrapping restored at the end.
    for (const garbage of ['\u001b', '[?25', '[?7']) expect(first.pane).not.toContain(garbage);
    expect(first.raw).toContain('\u001b[?25l');
    expect(restored(first.raw, '\u001b[?25l', '\u001b[?25h')).toBe(true);
    expect(restored(first.raw, '\u001b[?7l', '\u001b[?7h')).toBe(true);
    expect(first.raw).not.toContain('\u001b[32m'); // NO_COLOR: not the green the second pull shows

    // Second pull, colours allowed: every layer already exists, also shown as a finished bar.
    const second = await inTerminal('pull2', `env -u NO_COLOR ${pull('')}`);
    expect(second.exit, second.pane).toBe('EXIT=0');
    for (const l of image.layers) {
      const id = l.digest.hex.slice(0, 12);
      expect(
        second.pane.split('\n').filter((x) => x.startsWith(`${id}:`)),
        second.pane,
      ).toEqual([finalLine(id, 'Already exists', l.size)]);
    }
    expect(second.raw).toContain('\u001b[32mAlready exists\u001b[39m');
    expect(restored(second.raw, '\u001b[?25l', '\u001b[?25h')).toBe(true);

    // -q on a terminal: not one byte of progress, only the reference.
    const quiet = await inTerminal('pull3', pull('-q'));
    expect(quiet.exit).toBe('EXIT=0');
    expect(quiet.raw).toBe(`${ref}\r\nSD-END\r\n`);
  });
});
