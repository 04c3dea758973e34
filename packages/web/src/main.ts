/**
 * The web inspector: open a `docker save` tar or an oci-archive (optionally gzip'd) from a
 * dropped or chosen file, an OCI layout (or extracted docker save) from a dropped or chosen
 * folder, or an image from a registry that allows cross-origin requests;
 * verify every blob in the wasm core while streaming, and explore the image: summary, layers
 * and their changes, the merged filesystem, file previews.
 */
import { init, type LayerScan, type LayerStack } from '@stevedore/core/browser';
import { type ArchiveIndex, indexArchive } from './archive.js';
import { asText, formatBytes, h, hexDump, shortDigest } from './dom.js';
import { checkLayout, type FolderFiles, filesFromEntries, filesFromInput, indexFolder } from './folder.js';
import { type Check, type ImageInfo, imageChecks, layerChecks, type OpenedArchive, openArchive } from './image.js';
import { analyse, type FsNode, type LayerAnalysis, mergedTree, readFileFromLayer, scanSource } from './layers.js';
import { type Credentials, parseTarget } from './registry.js';
import { type OpenedRemote, openRemote } from './remote.js';
import { TreeView } from './tree.js';
import './style.css';

const PREVIEW_LIMIT = 64 * 1024;

interface State {
  file?: File;
  opened?: OpenedArchive;
  remote?: OpenedRemote;
  image?: ImageInfo;
  scans: LayerScan[];
  checks: Check[];
  layers: LayerAnalysis[];
  stack?: LayerStack;
  nodes: FsNode[];
  selectedLayer: number;
}

const state: State = { scans: [], checks: [], layers: [], nodes: [], selectedLayer: 0 };
const $ = <T extends HTMLElement = HTMLElement>(id: string) => document.getElementById(id) as T;

const tree = new TreeView(
  (node) => void openPreview(node),
  (layer) => `layer ${layer}: ${state.image?.layers[layer]?.createdBy ?? ''}`,
);

function setStatus(text: string, kind: 'info' | 'error' | 'ok' = 'info'): void {
  const el = $('status');
  el.textContent = text;
  el.dataset.kind = kind;
}

function showTab(name: string): void {
  for (const b of document.querySelectorAll<HTMLButtonElement>('[role=tab]')) {
    const on = b.dataset.tab === name;
    b.setAttribute('aria-selected', String(on));
    b.tabIndex = on ? 0 : -1;
    $(`panel-${b.dataset.tab}`).hidden = !on;
  }
  if (name === 'files') tree.render();
}

function setupTabs(): void {
  const tabs = [...document.querySelectorAll<HTMLButtonElement>('[role=tab]')];
  for (const [i, b] of tabs.entries()) {
    b.addEventListener('click', () => showTab(b.dataset.tab as string));
    b.addEventListener('keydown', (e) => {
      const d = e.key === 'ArrowRight' ? 1 : e.key === 'ArrowLeft' ? -1 : 0;
      if (!d) return;
      const next = tabs[(i + d + tabs.length) % tabs.length] as HTMLButtonElement;
      next.focus();
      showTab(next.dataset.tab as string);
    });
  }
}

/** Marks the start of an open; the page's own timing (`stevedore:open`) is read by the benchmark. */
function startOpen(what: string, keep: { remote?: OpenedRemote } = {}): number {
  document.body.dataset.state = 'loading';
  Object.assign(state, {
    file: undefined,
    opened: undefined,
    remote: keep.remote,
    image: undefined,
    scans: [],
    checks: [],
    layers: [],
    nodes: [],
  });
  $('filename').textContent = what;
  $('errors').replaceChildren();
  $<HTMLSelectElement>('image-select').hidden = true;
  $<HTMLSelectElement>('platform-select').hidden = !keep.remote?.platforms.length;
  performance.clearMeasures('stevedore:open');
  return performance.now();
}

function finishOpen(t0: number): void {
  const bad = state.checks.filter((c) => c.status === 'mismatch' || c.status === 'missing').length;
  performance.measure('stevedore:open', { start: t0, end: performance.now() });
  const secs = ((performance.now() - t0) / 1000).toFixed(1);
  setStatus(
    bad
      ? `${bad} check${bad === 1 ? '' : 's'} failed: the image does not match its digests (${secs} s)`
      : `verified: ${state.checks.filter((c) => c.status === 'ok').length} checks passed (${secs} s)`,
    bad ? 'error' : 'ok',
  );
  document.body.dataset.state = 'ready';
}

async function openFile(file: File): Promise<void> {
  const t0 = startOpen(`${file.name} (${formatBytes(file.size)})`);
  state.file = file;
  try {
    const archive: ArchiveIndex = await indexArchive(file, (done, total, what) =>
      setStatus(`${what}: ${formatBytes(done)} of ${formatBytes(total)}`),
    );
    await showOpened(openArchive(archive), t0);
  } catch (e) {
    failOpen(file.name, e);
  }
}

/** Opens a folder's files (relative path → file): an OCI layout or an extracted docker save. */
async function openFolder(folder: { name: string; files: FolderFiles }): Promise<void> {
  const { name, files } = folder;
  let size = 0;
  for (const f of files.values()) size += f.size;
  const label = `${name || 'folder'}/`;
  const t0 = startOpen(`${label} (${files.size} files, ${formatBytes(size)})`);
  try {
    await checkLayout(files, name);
    const archive = await indexFolder(files, (done, total, what) =>
      setStatus(`${what}: ${formatBytes(done)} of ${formatBytes(total)}`),
    );
    await showOpened(openArchive(archive), t0);
  } catch (e) {
    failOpen(label, e);
  }
}

/** Shows an opened archive or folder: its images in the chooser, the first one scanned. */
async function showOpened(opened: OpenedArchive, t0: number): Promise<void> {
  state.opened = opened;
  const select = $<HTMLSelectElement>('image-select');
  select.replaceChildren(
    ...opened.images.map((img, i) =>
      h('option', { value: i }, img.tags.join(', ') || shortDigest(img.manifestDigest ?? img.configDigest)),
    ),
  );
  select.hidden = opened.images.length < 2;
  if (opened.errors.length) $('errors').replaceChildren(...opened.errors.map((e) => h('li', {}, e)));
  if (!opened.images[0]) throw new Error(opened.errors.join('; ') || 'no image found');
  await selectImage(0);
  finishOpen(t0);
}

function failOpen(what: string, e: unknown): void {
  console.error(e);
  setStatus(`cannot open ${what}: ${(e as Error).message}`, 'error');
  document.body.dataset.state = 'error';
}

/** Opens the reference typed in the registry fields (or given in the page's URL). */
async function openRegistry(): Promise<void> {
  const registry = $<HTMLInputElement>('registry-url').value;
  const reference = $<HTMLInputElement>('image-ref').value;
  const username = $<HTMLInputElement>('username').value;
  const password = $<HTMLInputElement>('password').value;
  const t0 = startOpen(reference.trim());
  try {
    const target = parseTarget(registry, reference);
    const credentials: Credentials | undefined = username ? { username, password } : undefined;
    setStatus(`connecting to ${target.base}…`);
    const remote = await openRemote(target, credentials);
    state.remote = remote;
    const select = $<HTMLSelectElement>('platform-select');
    select.replaceChildren(...remote.platforms.map((p, i) => h('option', { value: i }, p.label)));
    select.value = String(remote.defaultPlatform);
    select.hidden = remote.platforms.length === 0;
    $('filename').textContent = remote.label;
    await selectPlatform(remote.defaultPlatform);
    finishOpen(t0);
  } catch (e) {
    failOpen(reference.trim() || 'the image', e);
  }
}

async function selectPlatform(i: number): Promise<void> {
  const remote = state.remote as OpenedRemote;
  setStatus(`fetching ${remote.platforms[i]?.label ?? remote.label}…`);
  const { image, checks } = await remote.load(i);
  await showImage(image, [...remote.checks, ...checks, ...imageChecks(image)]);
}

async function selectImage(i: number): Promise<void> {
  const opened = state.opened as OpenedArchive;
  const image = opened.images[i] as ImageInfo;
  await showImage(image, [...opened.blobChecks, ...imageChecks(image)]);
}

/** Scans every layer of `image` (verifying it) and renders all views; `checks` come first. */
async function showImage(image: ImageInfo, checks: Check[]): Promise<void> {
  state.image = image;
  renderSummary(image);
  const scans: LayerScan[] = [];
  for (const l of image.layers) {
    setStatus(`scanning layer ${l.index + 1} of ${image.layers.length} (${formatBytes(l.source.size)})`);
    const scan = await scanSource(l.source);
    scans.push(scan);
    checks.push(...layerChecks(l, scan));
  }
  state.scans = scans;
  // Failures first; otherwise the order of discovery (stable sort).
  const failed = (c: Check) => (c.status === 'mismatch' || c.status === 'missing' ? 0 : 1);
  state.checks = checks.sort((a, b) => failed(a) - failed(b));
  const { layers, stack } = analyse(scans);
  state.layers = layers;
  state.stack = stack;
  state.nodes = mergedTree(stack);
  renderVerify();
  renderLayers();
  state.selectedLayer = 0;
  renderLayerDetail(0);
  tree.setNodes(state.nodes);
  $('file-count').textContent = `${state.nodes.length} paths`;
  $('preview').replaceChildren(h('p', { class: 'hint' }, 'Select a file (Enter) to preview it.'));
}

function kv(rows: [string, Node | string | undefined][]): HTMLElement {
  return h(
    'dl',
    { class: 'kv' },
    rows.filter(([, v]) => v !== undefined && v !== '').flatMap(([k, v]) => [h('dt', {}, k), h('dd', {}, v)]),
  );
}

const list = (items: string[] | null | undefined) =>
  items?.length ? h('ul', { class: 'plain' }, ...items.map((s) => h('li', {}, h('code', {}, s)))) : undefined;

function renderSummary(img: ImageInfo): void {
  const c = img.config.config ?? {};
  const labels = Object.entries(c.Labels ?? {});
  $('panel-summary').replaceChildren(
    h('h2', {}, img.tags.join(', ') || '(untagged)'),
    kv([
      ['format', img.format],
      ['platform', img.platform],
      [
        'manifest',
        img.manifestDigest ? h('code', { 'data-testid': 'manifest-digest' }, img.manifestDigest) : undefined,
      ],
      ['config', h('code', { 'data-testid': 'config-digest' }, img.configDigest)],
      ['created', img.config.created],
      ['layers', String(img.layers.length)],
      ['user', c.User],
      ['working dir', c.WorkingDir],
      ['entrypoint', c.Entrypoint?.length ? h('code', {}, JSON.stringify(c.Entrypoint)) : undefined],
      ['cmd', c.Cmd?.length ? h('code', {}, JSON.stringify(c.Cmd)) : undefined],
      ['env', list(c.Env)],
      ['ports', list(Object.keys(c.ExposedPorts ?? {}))],
      ['volumes', list(Object.keys(c.Volumes ?? {}))],
      [
        'labels',
        labels.length
          ? h('ul', { class: 'plain' }, ...labels.map(([k, v]) => h('li', {}, h('code', {}, `${k}=${v}`))))
          : undefined,
      ],
    ]),
    h('h3', {}, 'History'),
    h(
      'table',
      { class: 'grid', id: 'history' },
      h('thead', {}, h('tr', {}, h('th', {}, 'created'), h('th', {}, 'created by'), h('th', {}, 'layer'))),
      h(
        'tbody',
        {},
        ...(img.config.history ?? []).map((e) =>
          h(
            'tr',
            {},
            h('td', {}, e.created ?? ''),
            h('td', {}, h('code', {}, e.created_by ?? '')),
            h('td', {}, e.empty_layer ? 'empty' : ''),
          ),
        ),
      ),
    ),
  );
}

function renderVerify(): void {
  const checks = state.checks;
  const bad = checks.filter((c) => c.status === 'mismatch' || c.status === 'missing');
  $('panel-verify').replaceChildren(
    h(
      'p',
      { class: `banner ${bad.length ? 'bad' : 'good'}`, id: 'verify-summary' },
      bad.length
        ? `${bad.length} of ${checks.length} checks failed`
        : `All ${checks.filter((c) => c.status === 'ok').length} checks passed`,
    ),
    h(
      'table',
      { class: 'grid', id: 'checks' },
      h(
        'thead',
        {},
        h(
          'tr',
          {},
          h('th', {}, 'status'),
          h('th', {}, 'check'),
          h('th', {}, 'member'),
          h('th', {}, 'expected / actual'),
        ),
      ),
      h(
        'tbody',
        {},
        ...checks.map((c) =>
          h(
            'tr',
            { 'data-status': c.status, 'data-what': c.what, 'data-member': c.member },
            h('td', {}, h('span', { class: `badge s-${c.status}` }, c.status)),
            h('td', {}, c.what),
            h('td', {}, h('code', {}, c.member)),
            h(
              'td',
              { class: 'digests' },
              c.status === 'ok'
                ? h('code', { class: 'actual' }, c.actual)
                : [
                    h('div', {}, 'expected ', h('code', { class: 'expected' }, c.expected)),
                    h('div', {}, 'actual\u00a0\u00a0 ', h('code', { class: 'actual' }, c.actual || '(none)')),
                  ],
            ),
          ),
        ),
      ),
    ),
  );
}

function renderLayers(): void {
  const img = state.image as ImageInfo;
  const tbody = h('tbody', {});
  state.layers.forEach((l, i) => {
    const ref = img.layers[i];
    const tr = h(
      'tr',
      {
        tabindex: 0,
        class: i === state.selectedLayer ? 'selected' : '',
        'data-layer': i,
        'data-digest': l.scan.digest,
        'data-diff-id': l.scan.diffId,
        onclick: () => renderLayerDetail(i),
        onkeydown: (e: Event) => {
          const k = (e as KeyboardEvent).key;
          if (k === 'Enter' || k === ' ') {
            e.preventDefault();
            renderLayerDetail(i);
          } else if (k === 'ArrowDown' || k === 'ArrowUp') {
            e.preventDefault();
            const next = tbody.children[i + (k === 'ArrowDown' ? 1 : -1)] as HTMLElement | undefined;
            next?.focus();
          }
        },
      },
      h('td', {}, String(i)),
      h('td', {}, h('code', { title: l.scan.digest }, shortDigest(l.scan.digest))),
      h('td', {}, h('code', { title: l.scan.diffId }, shortDigest(l.scan.diffId))),
      h('td', { class: 'num' }, formatBytes(l.scan.compressedSize)),
      h('td', { class: 'num' }, formatBytes(l.scan.uncompressedSize)),
      h('td', { class: 'num' }, String(l.scan.entries.length)),
      h('td', { class: `num${l.wastedBytes ? ' warn' : ''}` }, l.wastedBytes ? formatBytes(l.wastedBytes) : '–'),
      h('td', { class: 'created-by' }, h('code', {}, ref?.createdBy ?? '')),
    );
    tbody.append(tr);
  });
  const total = state.layers.reduce((n, l) => n + l.wastedBytes, 0);
  $('panel-layers').replaceChildren(
    h(
      'table',
      { class: 'grid', id: 'layers' },
      h(
        'thead',
        {},
        h(
          'tr',
          {},
          ...['#', 'digest', 'diff_id', 'size', 'uncompressed', 'entries', 'wasted', 'created by'].map((t) =>
            h('th', {}, t),
          ),
        ),
      ),
      tbody,
    ),
    h('p', { class: 'hint' }, `Wasted in total: ${formatBytes(total)} (files overwritten or deleted by later layers)`),
    h('div', { id: 'layer-detail' }),
  );
}

function renderLayerDetail(i: number): void {
  state.selectedLayer = i;
  for (const tr of document.querySelectorAll<HTMLElement>('#layers tbody tr')) {
    tr.classList.toggle('selected', tr.dataset.layer === String(i));
  }
  const l = state.layers[i];
  const el = $('layer-detail');
  if (!l || !el) return;
  const counts = { added: 0, changed: 0, deleted: 0, opaque: 0 };
  for (const c of l.changes) counts[c.kind]++;
  el.replaceChildren(
    h(
      'h3',
      {},
      `Layer ${i} changes: ${counts.added} added, ${counts.changed} changed, ${counts.deleted} deleted, ${counts.opaque} opaque`,
    ),
    h(
      'ul',
      { class: 'changes', id: 'changes' },
      ...l.changes
        .slice(0, 2000)
        .map((c) =>
          h(
            'li',
            { 'data-kind': c.kind, 'data-path': c.path },
            h('span', { class: `badge k-${c.kind}` }, c.kind === 'opaque' ? 'opaque dir' : c.kind),
            ' ',
            h('code', {}, c.path + (c.type === 'directory' ? '/' : '')),
            c.size ? h('span', { class: 'size' }, ` ${formatBytes(c.size)}`) : null,
          ),
        ),
      l.changes.length > 2000 ? h('li', {}, `… ${l.changes.length - 2000} more`) : null,
    ),
    ...(l.wasted.length
      ? [
          h('h3', {}, `Wasted: ${formatBytes(l.wastedBytes)}`),
          h(
            'ul',
            { class: 'changes', id: 'wasted' },
            ...l.wasted
              .slice(0, 2000)
              .map((w) =>
                h(
                  'li',
                  { 'data-path': w.path },
                  h('code', {}, w.path),
                  h('span', { class: 'size' }, ` ${formatBytes(w.size)} — ${w.by}`),
                ),
              ),
          ),
        ]
      : []),
  );
}

async function openPreview(node: FsNode): Promise<void> {
  const pane = $('preview');
  const img = state.image as ImageInfo;
  const head = h(
    'div',
    { class: 'preview-head' },
    h('code', { id: 'preview-path' }, node.path),
    kv([
      ['type', node.type + (node.linkName ? ` → ${node.linkName}` : '')],
      ['size', node.type === 'directory' ? undefined : formatBytes(node.size)],
      ['mode', (node.mode & 0o7777).toString(8).padStart(4, '0')],
      ['layer', `${node.layer}${node.implicit ? ' (implicit)' : ''}: ${img.layers[node.layer]?.createdBy ?? ''}`],
      ['sha256', node.digest || undefined],
    ]),
  );
  pane.replaceChildren(head);
  if (node.type !== 'file' && node.type !== 'hardlink') return;
  const layer = img.layers[node.layer];
  if (!layer) return;
  pane.dataset.loading = 'true';
  try {
    const { data, truncated } = await readFileFromLayer(layer.source, node.path, PREVIEW_LIMIT);
    const bytes = new Uint8Array(await new Blob(data as BlobPart[]).arrayBuffer());
    const text = asText(bytes);
    const textView = h('pre', { class: 'text', id: 'preview-text' }, text ?? '(binary)');
    const hexView = h('pre', { class: 'hex', id: 'preview-hex', hidden: text !== undefined }, hexDump(bytes));
    textView.hidden = text === undefined;
    const toggle = h('button', {
      type: 'button',
      id: 'toggle-hex',
      onclick: () => {
        hexView.hidden = !hexView.hidden;
        textView.hidden = !hexView.hidden;
      },
    });
    toggle.textContent = 'text / hex';
    const download = h('button', { type: 'button', id: 'download', onclick: () => void downloadFile(node) });
    download.textContent = 'download';
    pane.append(
      h('div', { class: 'toolbar' }, toggle, download, truncated ? ` first ${formatBytes(PREVIEW_LIMIT)} shown` : ''),
      textView,
      hexView,
    );
  } catch (e) {
    pane.append(h('p', { class: 'error' }, (e as Error).message));
  } finally {
    delete pane.dataset.loading;
  }
}

async function downloadFile(node: FsNode): Promise<void> {
  const img = state.image as ImageInfo;
  const layer = img.layers[node.layer];
  if (!layer) return;
  const { data } = await readFileFromLayer(layer.source, node.path);
  const url = URL.createObjectURL(new Blob(data as BlobPart[], { type: 'application/octet-stream' }));
  const a = h('a', { href: url, download: node.name });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}

function setupInputs(): void {
  const input = $<HTMLInputElement>('file');
  input.addEventListener('change', () => {
    const f = input.files?.[0];
    if (f) void openFile(f);
  });
  const folderInput = $<HTMLInputElement>('folder');
  folderInput.addEventListener('change', () => {
    if (folderInput.files?.length) void openFolder(filesFromInput(folderInput.files));
  });
  const drop = document.body;
  drop.addEventListener('dragover', (e) => {
    e.preventDefault();
    drop.classList.add('dragging');
  });
  drop.addEventListener('dragleave', () => drop.classList.remove('dragging'));
  drop.addEventListener('drop', (e) => {
    e.preventDefault();
    drop.classList.remove('dragging');
    // Entries must be taken while the event is dispatched; a folder (or several items) is read
    // recursively, a single file opens as an archive.
    const entries = [...(e.dataTransfer?.items ?? [])]
      .filter((i) => i.kind === 'file')
      .map((i) => i.webkitGetAsEntry())
      .filter((x): x is FileSystemEntry => x !== null);
    if (entries.length > 1 || entries[0]?.isDirectory) {
      startOpen('reading the dropped folder…');
      void filesFromEntries(entries).then(
        (folder) => openFolder(folder),
        (err) => failOpen('the dropped folder', err),
      );
      return;
    }
    const f = e.dataTransfer?.files[0];
    if (f) void openFile(f);
  });
  $<HTMLSelectElement>('image-select').addEventListener('change', (e) => {
    void selectImage(Number((e.target as HTMLSelectElement).value));
  });
  $<HTMLFormElement>('registry-form').addEventListener('submit', (e) => {
    e.preventDefault();
    void openRegistry();
  });
  $<HTMLSelectElement>('platform-select').addEventListener('change', (e) => {
    const t0 = startOpen($('filename').textContent ?? '', { remote: state.remote });
    void selectPlatform(Number((e.target as HTMLSelectElement).value)).then(
      () => finishOpen(t0),
      (err) => failOpen('the platform', err),
    );
  });
  const search = $<HTMLInputElement>('search');
  let timer: ReturnType<typeof setTimeout> | undefined;
  search.addEventListener('input', () => {
    clearTimeout(timer);
    timer = setTimeout(() => {
      tree.search(search.value);
      tree.element.dataset.query = search.value;
      $('file-count').textContent = search.value
        ? `${tree.visibleCount} of ${state.nodes.length} paths match`
        : `${state.nodes.length} paths`;
    }, 80);
  });
  search.addEventListener('keydown', (e) => {
    if (e.key === 'ArrowDown' || e.key === 'Enter') {
      e.preventDefault();
      tree.element.focus();
      tree.element.dispatchEvent(new KeyboardEvent('keydown', { key: 'Home' }));
    }
  });
}

async function main(): Promise<void> {
  $('tree-host').append(tree.element);
  setupTabs();
  setupInputs();
  showTab('summary');
  try {
    await init();
    document.body.dataset.state = 'idle';
    setStatus(
      'Choose or drop a docker save tar or an oci-archive (.tar or .tar.gz), an OCI layout folder, or open an image from a registry. Nothing leaves your browser.',
    );
    if (await prefillRegistry()) await openRegistry();
  } catch (e) {
    setStatus(`cannot load the wasm core: ${(e as Error).message}`, 'error');
    document.body.dataset.state = 'error';
  }
}

/**
 * `?registry=URL&image=REF` fills the registry fields (and opens the image when both are set).
 * Without `registry`, a page served by a registry itself (`stevedore serve --ui`) defaults the
 * registry field to its own origin: a same-origin `/v2/` answering with the distribution
 * API version header. Returns true when there is something to open.
 */
async function prefillRegistry(): Promise<boolean> {
  const q = new URLSearchParams(location.search);
  const url = $<HTMLInputElement>('registry-url');
  const image = $<HTMLInputElement>('image-ref');
  const registry = q.get('registry');
  if (registry) url.value = registry;
  else if (location.protocol === 'http:' || location.protocol === 'https:') {
    try {
      const res = await fetch('/v2/', { method: 'GET', credentials: 'same-origin', cache: 'no-store' });
      await res.body?.cancel();
      if (res.headers.get('docker-distribution-api-version')) url.value = location.origin;
    } catch {
      // not served by a registry
    }
  }
  const ref = q.get('image');
  if (ref) image.value = ref;
  return Boolean(url.value && ref);
}

void main();
