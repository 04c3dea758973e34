/**
 * Per-layer progress on stderr, as `docker pull`/`docker push` show it. On a TTY: one live bar per
 * layer (state, bar, percent, bytes, speed, ETA), drawn by cli-progress's MultiBar about ten times
 * a second and left on screen, finished, at the end (cursor shown again). Off a TTY: one plain line
 * per finished step, for CI logs. Silent with -q; never writes to stdout.
 */
import cliProgress from 'cli-progress';
import { humanSize } from './commands/common.js';
import { type Output, style } from './output.js';

/** What a bar's formatter reads; kept in the bar's payload. */
interface RowState {
  id: string;
  state: string;
  done: boolean;
}

interface Row extends RowState {
  bytes: number;
  total: number;
  bar?: cliProgress.SingleBar;
}

const BAR_WIDTH = 30;
const STATE_WIDTH = 17; // 'Download complete'

/** A docker-like bar: `=====>     `. */
const formatBar: cliProgress.BarFormatter = (progress) => {
  const full = Math.round(progress * BAR_WIDTH);
  if (full >= BAR_WIDTH) return '='.repeat(BAR_WIDTH);
  return `${'='.repeat(Math.max(0, full - 1))}${full > 0 ? '>' : ''}${' '.repeat(BAR_WIDTH - full)}`;
};

/** One layer's line; `options` are the bar's (for the library's time format). */
export function formatRow(
  row: RowState,
  p: cliProgress.Params,
  options: cliProgress.Options,
  now = Date.now(),
): string {
  const head = `${row.id}: ${row.state.padEnd(STATE_WIDTH)}`;
  let text: string;
  if (row.done) {
    text = `${head} [${formatBar(1, {})}] 100% | ${humanSize(p.total)}`;
  } else if (p.value > 0 && p.total > 0) {
    const secs = Math.max(0.001, (now - p.startTime) / 1000);
    const speed = `${humanSize(Math.round(p.value / secs))}/s`;
    const eta =
      typeof p.eta === 'number' && p.value < p.total ? cliProgress.Format.TimeFormat(p.eta, options, 1) : '--';
    const pct = String(Math.floor(p.progress * 100)).padStart(3);
    text = `${head} [${formatBar(p.progress, {})}] ${pct}% | ${humanSize(p.value)}/${humanSize(p.total)} | ${speed} | ETA ${eta}`;
  } else {
    text = `${row.id}: ${row.state}`;
  }
  // Lines are never wider than the terminal: a wrapped line would break the in-place redraw.
  const cols = Math.max(40, p.maxWidth - 1);
  const line = text.length > cols ? text.slice(0, cols) : text;
  return row.done ? line.replace(row.state, style.green(row.state)) : line;
}

export class Progress {
  private readonly rows = new Map<string, Row>();
  private bars: cliProgress.MultiBar | undefined;
  private finished = false;
  private readonly live: boolean;
  private readonly silent: boolean;
  private readonly onSignal = (signal: NodeJS.Signals) => {
    // Restore the cursor before dying of the signal as the default handler would.
    this.finish();
    process.kill(process.pid, signal);
  };

  constructor(
    out: Output,
    private readonly stream: NodeJS.WriteStream = process.stderr,
  ) {
    this.silent = out.quiet;
    this.live = !out.quiet && Boolean(stream.isTTY) && process.env.TERM !== 'dumb';
  }

  /** Adds a row (a layer), shown in insertion order. */
  add(id: string, state: string, total = 0): void {
    if (this.rows.has(id) || this.finished) return;
    const row: Row = { id, state, done: false, bytes: 0, total };
    this.rows.set(id, row);
    if (this.live) row.bar = this.multiBar().create(total, 0, this.payload(row));
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
    if (o.resetBytes) r.bytes = 0;
    if (r.bar) {
      // A new byte-counting phase restarts the bar's clock, so speed and ETA are the phase's own.
      if (o.resetBytes) r.bar.start(r.total, 0, this.payload(r));
      else {
        if (o.total !== undefined) r.bar.setTotal(r.total);
        r.bar.update(r.done ? r.total : r.bytes, this.payload(r));
      }
    }
    if (!this.live && !this.silent && o.done) {
      this.stream.write(`${id}: ${state}${o.note ? ` ${o.note}` : ''}\n`);
    }
  }

  /** Byte progress of a row's current phase. */
  bytes(id: string, bytes: number, total?: number): void {
    const r = this.rows.get(id);
    if (!r) return;
    if (total !== undefined && total !== r.total) {
      r.total = total;
      r.bar?.setTotal(total);
    }
    r.bytes = bytes;
    r.bar?.update(bytes);
  }

  /** Marks every row that has not finished with a final state (e.g. layers a push skipped). */
  settle(state: string): void {
    for (const r of this.rows.values()) if (!r.done) this.set(r.id, state, { done: true });
  }

  /** Final redraw; the lines stay on screen and the cursor is shown again. */
  finish(): void {
    if (this.finished) return;
    this.finished = true;
    if (!this.bars) return;
    process.off('SIGINT', this.onSignal);
    process.off('SIGTERM', this.onSignal);
    this.bars.stop();
  }

  private payload(r: Row): RowState {
    return { id: r.id, state: r.state, done: r.done };
  }

  private multiBar(): cliProgress.MultiBar {
    if (this.bars) return this.bars;
    this.bars = new cliProgress.MultiBar({
      stream: this.stream,
      fps: 10,
      hideCursor: true,
      clearOnComplete: false,
      etaBuffer: 50,
      format: (options, params, payload: RowState) => formatRow(payload, params, options),
    });
    process.once('SIGINT', this.onSignal);
    process.once('SIGTERM', this.onSignal);
    return this.bars;
  }
}

/** `sha256:abcdef…` → the 12 hex characters docker shows. */
export const shortId = (d: string | { toString(): string }) =>
  String(d)
    .replace(/^sha256:/, '')
    .slice(0, 12);
