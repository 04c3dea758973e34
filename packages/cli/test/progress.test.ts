// The line each layer's bar shows, from the numbers cli-progress hands the formatter. The live
// drawing itself (in place, cursor restored, NO_COLOR, -q) is tested in a real terminal in
// store.test.ts; this pins the text of the states a fast loopback pull never shows mid-way.
import type { Options, Params } from 'cli-progress';
import { describe, expect, it } from 'vitest';
import { formatRow } from '../src/progress.js';

// What cli-progress derives for its bars when autopadding is off.
const options: Options = { autopaddingChar: '' };
const params = (o: Partial<Params>): Params => ({
  progress: 0,
  eta: 0,
  startTime: 0,
  stopTime: null,
  total: 0,
  value: 0,
  maxWidth: 120,
  ...o,
});
const plain = (s: string) => s.replaceAll('\u001b[32m', '').replaceAll('\u001b[39m', '');

describe('formatRow', () => {
  it('a phase under way: bar, percent, bytes of total, speed of the phase, ETA', () => {
    const p = params({ progress: 0.5, value: 500_000, total: 1_000_000, startTime: 10_000, eta: 3 });
    expect(formatRow({ id: 'abc123def456', state: 'Extracting', done: false }, p, options, 11_000)).toBe(
      `abc123def456: Extracting        [==============>               ]  50% | 500 kB/1.00 MB | 500 kB/s | ETA 3s`,
    );
  });

  it('an ETA cli-progress cannot compute yet shows as --; minutes in its own format', () => {
    const row = { id: 'abc123def456', state: 'Downloading', done: false };
    const unknown = params({ progress: 0.1, value: 100, total: 1000, eta: 'NULL' as unknown as number });
    expect(formatRow(row, unknown, options, 1000)).toMatch(/ \| ETA --$/);
    const long = params({ progress: 0.1, value: 100, total: 1000, eta: 125 });
    expect(formatRow(row, long, options, 1000)).toMatch(/ \| ETA 2m5s$/);
  });

  it('a finished step: the full bar, 100% and the total, whatever the last byte count was', () => {
    const p = params({ progress: 0.2, value: 200, total: 2_345_678 });
    expect(plain(formatRow({ id: 'abc123def456', state: 'Pull complete', done: true }, p, options))).toBe(
      `abc123def456: Pull complete     [${'='.repeat(30)}] 100% | 2.35 MB`,
    );
  });

  it('before any byte: only the state', () => {
    const p = params({ total: 1000 });
    expect(formatRow({ id: 'abc123def456', state: 'Waiting', done: false }, p, options)).toBe('abc123def456: Waiting');
  });

  it('never wider than the terminal (one column spare), so redraws stay in place', () => {
    const p = params({ progress: 0.5, value: 500_000, total: 1_000_000, eta: 3, maxWidth: 60 });
    const line = formatRow({ id: 'abc123def456', state: 'Downloading', done: false }, p, options, 1000);
    expect(line).toHaveLength(59);
    expect(line.startsWith('abc123def456: Downloading       [')).toBe(true);
  });
});
