/**
 * Per-layer progress on stderr, as `docker pull`/`docker push` draw it. On a TTY: one live line
 * per layer (state, a bar, bytes and speed), redrawn in place about ten times a second and left
 * on screen, finished, at the end. Off a TTY: one plain line per finished step. Silent with -q.
 */
import { humanSize } from './commands/common.js';
import type { Output } from './output.js';

interface Row {
  id: string;
  state: string;
  bytes: number;
  total: number;
  /** When the current byte-counting phase started (ms), for the speed. */
  since: number;
  done: boolean;
}

export class Progress {
  private readonly rows = new Map<string, Row>();
  private readonly order: string[] = [];
  private drawn = 0;
  private finished = false;
  private timer: NodeJS.Timeout | undefined;
  private readonly live: boolean;
  private readonly silent: boolean;

  constructor(
    out: Output,
    private readonly stream: NodeJS.WriteStream = process.stderr,
  ) {
    this.silent = out.quiet;
    this.live = !out.quiet && Boolean(stream.isTTY) && process.env.TERM !== 'dumb';
    if (this.live) {
      this.timer = setInterval(() => this.draw(), 100);
      this.timer.unref();
    }
  }

  /** Adds a row (a layer), shown in insertion order. */
  add(id: string, state: string, total = 0): void {
    if (this.rows.has(id)) return;
    this.rows.set(id, { id, state, bytes: 0, total, since: Date.now(), done: false });
    this.order.push(id);
  }

  /** Moves a row to a new state; `done` states print a line off a TTY. */
  set(
    id: string,
    state: string,
    o: { done?: boolean; total?: number; resetBytes?: boolean; note?: string } = {},
  ): void {
    const r = this.rows.get(id);
    if (!r) return;
    if (r.state === state && r.done === Boolean(o.done)) return;
    r.state = state;
    r.done = Boolean(o.done);
    if (o.total !== undefined) r.total = o.total;
    if (o.resetBytes) {
      r.bytes = 0;
      r.since = Date.now();
    }
    if (!this.live && !this.silent && o.done) {
      this.stream.write(`${id}: ${state}${o.note ? ` ${o.note}` : ''}\n`);
    }
  }

  /** Byte progress of a row's current phase. */
  bytes(id: string, bytes: number, total?: number): void {
    const r = this.rows.get(id);
    if (!r) return;
    if (r.bytes === 0 && bytes > 0) r.since = Date.now();
    r.bytes = bytes;
    if (total !== undefined) r.total = total;
  }

  /** Final redraw; the lines stay on screen. */
  finish(): void {
    if (this.finished) return;
    this.finished = true;
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    if (this.live) this.draw();
  }

  private line(r: Row): string {
    const cols = Math.max(40, (this.stream.columns ?? 80) - 1);
    let text = `${r.id}: ${r.state}`;
    if (!r.done && r.total > 0 && r.bytes > 0) {
      const frac = Math.min(1, r.bytes / r.total);
      const width = 30;
      const full = Math.floor(frac * width);
      const bar = `[${'='.repeat(Math.max(0, full - 1))}${full > 0 ? '>' : ''}${' '.repeat(width - full)}]`;
      const secs = Math.max(0.001, (Date.now() - r.since) / 1000);
      const speed = `${humanSize(Math.round(r.bytes / secs))}/s`;
      text = `${r.id}: ${r.state.padEnd(12)} ${bar} ${humanSize(r.bytes)}/${humanSize(r.total)} ${speed}`;
    } else if (!r.done && r.state !== 'Waiting') {
      const secs = ((Date.now() - r.since) / 1000).toFixed(1);
      text = `${r.id}: ${r.state.padEnd(12)} ${secs}s`;
    }
    return text.length > cols ? text.slice(0, cols) : text;
  }

  private draw(): void {
    let s = this.drawn > 0 ? `\x1b[${this.drawn}A` : '';
    for (const id of this.order) s += `\r\x1b[2K${this.line(this.rows.get(id) as Row)}\n`;
    this.drawn = this.order.length;
    this.stream.write(s);
  }
}

/** `sha256:abcdef…` → the 12 hex characters docker shows. */
export const shortId = (d: string | { toString(): string }) =>
  String(d)
    .replace(/^sha256:/, '')
    .slice(0, 12);
