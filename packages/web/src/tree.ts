/**
 * A virtualized tree over the merged filesystem: only the rows in view are in the DOM, so
 * tens of thousands of paths stay fast. Arrow keys move, Right/Left expand/collapse, Enter opens.
 */
import { formatBytes, h } from './dom.js';
import type { FsNode } from './layers.js';

export const ROW_HEIGHT = 22;

export class TreeView {
  readonly element: HTMLElement;
  private readonly spacer: HTMLElement;
  private readonly rowsEl: HTMLElement;
  private nodes: FsNode[] = [];
  private expanded = new Set<number>();
  private visible: number[] = [];
  private selected = -1;
  private query = '';

  constructor(
    private readonly onOpen: (node: FsNode) => void,
    private readonly layerLabel: (layer: number) => string,
  ) {
    this.rowsEl = h('div', { class: 'tree-rows' });
    this.spacer = h('div', { class: 'tree-spacer' }, this.rowsEl);
    this.element = h(
      'div',
      { class: 'tree', id: 'tree', tabindex: 0, role: 'tree', 'aria-label': 'merged filesystem' },
      this.spacer,
    );
    this.element.addEventListener('scroll', () => this.render());
    this.element.addEventListener('keydown', (e) => this.key(e));
    this.rowsEl.addEventListener('click', (e) => {
      const row = (e.target as HTMLElement).closest<HTMLElement>('[data-index]');
      if (!row) return;
      const i = Number(row.dataset.index);
      this.select(i);
      const node = this.nodes[i] as FsNode;
      if (node.type === 'directory' && !this.query) this.toggle(i);
      else this.onOpen(node);
    });
  }

  setNodes(nodes: FsNode[]): void {
    this.nodes = nodes;
    this.expanded = new Set();
    this.selected = -1;
    this.refresh();
  }

  /** Filters by a substring of the path (case-insensitive); '' shows the tree again. */
  search(query: string): void {
    this.query = query.trim().toLowerCase();
    this.element.scrollTop = 0;
    this.refresh();
  }

  get visibleCount(): number {
    return this.visible.length;
  }

  private refresh(): void {
    const v: number[] = [];
    if (this.query) {
      this.nodes.forEach((n, i) => {
        if (n.path.toLowerCase().includes(this.query)) v.push(i);
      });
    } else {
      for (let i = 0; i < this.nodes.length; ) {
        v.push(i);
        const n = this.nodes[i] as FsNode;
        i = n.type === 'directory' && !this.expanded.has(i) ? n.end : i + 1;
      }
    }
    this.visible = v;
    this.spacer.style.height = `${v.length * ROW_HEIGHT}px`;
    this.render();
  }

  render(): void {
    const top = this.element.scrollTop;
    const height = this.element.clientHeight || 400;
    const first = Math.max(0, Math.floor(top / ROW_HEIGHT) - 5);
    const last = Math.min(this.visible.length, Math.ceil((top + height) / ROW_HEIGHT) + 5);
    this.rowsEl.style.transform = `translateY(${first * ROW_HEIGHT}px)`;
    const rows: HTMLElement[] = [];
    for (let p = first; p < last; p++) {
      const i = this.visible[p] as number;
      const n = this.nodes[i] as FsNode;
      const dir = n.type === 'directory';
      const label = this.query ? n.path : n.name;
      rows.push(
        h(
          'div',
          {
            class: `row${i === this.selected ? ' selected' : ''}`,
            role: 'treeitem',
            'data-index': i,
            'data-path': n.path,
            'data-layer': n.layer,
            'data-type': n.type,
            'aria-expanded': dir ? String(this.expanded.has(i)) : undefined,
            'aria-selected': String(i === this.selected),
            style: `padding-left:${(this.query ? 0 : n.depth) * 16 + 6}px`,
          },
          h('span', { class: 'caret' }, dir && !this.query ? (this.expanded.has(i) ? '▾' : '▸') : ''),
          h('span', { class: `name t-${n.type}` }, label, dir ? '/' : ''),
          n.type === 'symlink' ? h('span', { class: 'link' }, ` → ${n.linkName}`) : null,
          h('span', { class: 'size' }, dir ? '' : formatBytes(n.size)),
          h('span', { class: 'layer', title: this.layerLabel(n.layer) }, `L${n.layer}`),
        ),
      );
    }
    this.rowsEl.replaceChildren(...rows);
  }

  private select(i: number): void {
    this.selected = i;
    const p = this.visible.indexOf(i);
    if (p >= 0) {
      const y = p * ROW_HEIGHT;
      const el = this.element;
      if (y < el.scrollTop) el.scrollTop = y;
      else if (y + ROW_HEIGHT > el.scrollTop + el.clientHeight) el.scrollTop = y + ROW_HEIGHT - el.clientHeight;
    }
    this.render();
  }

  private toggle(i: number, open?: boolean): void {
    const want = open ?? !this.expanded.has(i);
    if (want) this.expanded.add(i);
    else this.expanded.delete(i);
    this.refresh();
  }

  private key(e: KeyboardEvent): void {
    if (this.visible.length === 0) return;
    const p = this.visible.indexOf(this.selected);
    const node = this.nodes[this.selected];
    const page = Math.max(1, Math.floor(this.element.clientHeight / ROW_HEIGHT) - 1);
    let next = -1;
    switch (e.key) {
      case 'ArrowDown':
        next = Math.min(this.visible.length - 1, p + 1);
        break;
      case 'ArrowUp':
        next = Math.max(0, p - 1);
        break;
      case 'PageDown':
        next = Math.min(this.visible.length - 1, p + page);
        break;
      case 'PageUp':
        next = Math.max(0, p - page);
        break;
      case 'Home':
        next = 0;
        break;
      case 'End':
        next = this.visible.length - 1;
        break;
      case 'ArrowRight':
        if (node?.type === 'directory' && !this.query) this.toggle(this.selected, true);
        break;
      case 'ArrowLeft':
        if (node?.type === 'directory' && this.expanded.has(this.selected)) this.toggle(this.selected, false);
        else if (node && node.depth > 0 && !this.query) {
          for (let i = this.selected - 1; i >= 0; i--) {
            if ((this.nodes[i] as FsNode).depth === node.depth - 1) {
              next = this.visible.indexOf(i);
              break;
            }
          }
        }
        break;
      case 'Enter':
      case ' ':
        if (node) this.onOpen(node);
        break;
      default:
        return;
    }
    e.preventDefault();
    if (next >= 0) this.select(this.visible[next] as number);
  }
}
