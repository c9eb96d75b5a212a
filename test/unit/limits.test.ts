// The bounds that keep one client's request from hurting the others: how
// user strings appear in messages, key and label sizes, List batches, filter
// regexes (RE2, in a worker), bounded file reads, flags, and the root's mode.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { status } from '@grpc/grpc-js';
import { excerpt } from '../../log/excerpt';
import { detailsOf, SnapshotError } from '../../snapshotter/storage/errors';
import { validateKey, validateLabels } from '../../snapshotter/storage/snapshots';
import { Info, Kind, MAX_KEY_BYTES, MAX_LABELS_BYTES } from '../../snapshotter/storage/info';
import { LIST_BATCH, LIST_BATCH_BYTES, ListBatcher, toWire, wireInfoBytes } from '../../snapshotter/service';
import { filterView, matches, MAX_REGEX_PROGRAM, parseFilters, usesRegex } from '../../snapshotter/filters';
import { FilterCancelled, FilterPool } from '../../snapshotter/filter-pool';
import { FileRefused, copyRegularFile, readRegularFile } from '../../config/read-file';
import { applyFlags, ConfigError, loadConfig, parseConfig } from '../../config/config';
import { setModes } from '../../snapshotter/snapshotter';
import { snapshotsService } from '../../proto/load';

const info = (o: Partial<Info>): Info => ({ name: 'n', parent: '', kind: Kind.Active, createdUs: 0, updatedUs: 0, labels: {}, ...o });
const invalid = (e: unknown) => e instanceof SnapshotError && e.code === status.INVALID_ARGUMENT;
const tmp = () => fs.mkdtempSync(path.join(os.tmpdir(), 'lazysnap-limits-'));

test('excerpt: short strings as they are, long ones cut with their size, always one line', () => {
  assert.equal(excerpt('default/12/sha256:abc'), 'default/12/sha256:abc');
  assert.equal(excerpt('k'.repeat(128)), 'k'.repeat(128));
  assert.equal(excerpt('k'.repeat(80_000)), `${'k'.repeat(128)}… (80000 bytes)`);
  assert.equal(excerpt('é'.repeat(200)), `${'é'.repeat(128)}… (400 bytes)`);
  assert.equal(excerpt('a\nb\tc\x7f'), 'a\\x0ab\\x09c\\x7f');
  // no half surrogate pair at the cut
  const cut = excerpt('a' + '😀'.repeat(100));
  assert.ok(!/[\ud800-\udbff]…/.test(cut), cut);
  const d = detailsOf(new Error('x'.repeat(1_000_000)));
  assert.ok(d.length < 600 && d.endsWith('… (1000000 bytes)'), `${d.length}`);
});

test('keys of new snapshots up to 4 KiB; labels up to 4 KiB each and 1 MiB in all', () => {
  validateKey('snapshot key', 'k'.repeat(MAX_KEY_BYTES));
  assert.throws(() => validateKey('snapshot key', 'k'.repeat(MAX_KEY_BYTES + 1)), (e: unknown) => invalid(e) && /k{128}… \(4097 bytes\) is longer than 4096 bytes/.test((e as Error).message));
  assert.throws(() => validateKey('snapshot key', ''), invalid);
  const labels = (n: number, size: number) => Object.fromEntries(Array.from({ length: n }, (_, i) => [`l${String(i).padStart(4, '0')}`, 'v'.repeat(size - 5)]));
  validateLabels(labels(42, 4000)); // the 168 KB: within limits
  validateLabels(labels(250, 4000)); // 1,004,000 bytes with 16 a label
  assert.throws(() => validateLabels(labels(300, 4000)), (e: unknown) => invalid(e) && /greater than maximum size \(1048576 bytes\)/.test((e as Error).message));
  // many tiny labels count their framing: 70,000 of them are over the bound
  assert.throws(() => validateLabels(labels(70_000, 6)), invalid);
  assert.ok(MAX_LABELS_BYTES < LIST_BATCH_BYTES * 2, 'one snapshot always fits a List message far below 4 MiB');
});

test('wireInfoBytes is never less than the encoded size, and not far above it', () => {
  const encode = snapshotsService().service.List.responseSerialize;
  let seed = 1;
  const rnd = (n: number) => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) % n);
  const str = (n: number) => Array.from({ length: n }, () => String.fromCodePoint([0x61, 0xe9, 0x4e2d, 0x1f600][rnd(4)])).join('');
  for (let i = 0; i < 300; i++) {
    const labels: Record<string, string> = {};
    for (let j = rnd(50); j > 0; j--) labels[str(1 + rnd(30))] = str(rnd(i % 3 === 0 ? 1500 : 20));
    const x = info({ name: str(rnd(300)), parent: str(rnd(100)), kind: 1 + rnd(3), createdUs: rnd(2 ** 31) * 1e6, updatedUs: Date.now() * 1000, labels });
    const real = encode({ info: [toWire(x)] }).length;
    const est = wireInfoBytes(x);
    assert.ok(est >= real, `estimate ${est} < encoded ${real}`);
    assert.ok(est <= real * 1.5 + 100, `estimate ${est} far above encoded ${real}`);
  }
});

test('List batches: at most 100 infos and 1 MiB, in order; an info larger than that goes alone', () => {
  const batchesOf = (infos: Info[]) => {
    const b = new ListBatcher();
    const out = infos.map((i) => b.add(i)).filter((x): x is Info[] => x !== null);
    const last = b.flush();
    return last ? [...out, last] : out;
  };
  const small = Array.from({ length: 250 }, (_, i) => info({ name: `s${i}` }));
  assert.deepEqual(batchesOf(small).map((b) => b.length), [100, 100, 50]);
  assert.deepEqual(batchesOf(small).flat(), small);
  assert.deepEqual(batchesOf([]), []);
  const labels = Object.fromEntries(Array.from({ length: 42 }, (_, i) => [`label-${i}`, 'v'.repeat(3992)]));
  const big = Array.from({ length: 100 }, (_, i) => info({ name: `big-${i}`, labels }));
  const bb = batchesOf(big);
  assert.ok(bb.length > 10);
  assert.deepEqual(bb.flat(), big);
  for (const b of bb) assert.ok(b.reduce((n, i) => n + wireInfoBytes(i), 0) <= LIST_BATCH_BYTES);
  const huge = info({ name: 'huge', labels: Object.fromEntries(Array.from({ length: 300 }, (_, i) => [`h${i}`, 'x'.repeat(4000)])) });
  assert.deepEqual(batchesOf([small[0], huge, small[1]]).map((b) => b.map((i) => i.name)), [['s0'], ['huge'], ['s1']]);
  assert.ok(LIST_BATCH === 100);
});

test('regexes are RE2: linear time, Go syntax, costly ones refused', () => {
  const t = performance.now();
  const f = parseFilters(['name~=/^redos-(a|a)+$/']);
  assert.ok(!matches(f, info({ name: 'redos-' + 'a'.repeat(5000) + '!' })));
  assert.ok(matches(f, info({ name: 'redos-' + 'a'.repeat(5000) })));
  assert.ok(performance.now() - t < 500, `${performance.now() - t} ms`);
  // Go's syntax, which JavaScript's RegExp refused
  assert.ok(matches(parseFilters(['name~=(?i)^EXTRACT']), info({ name: 'extract-1' })));
  assert.ok(matches(parseFilters(['name~=^\\pL+$']), info({ name: 'défaut' })));
  for (const [bad, why] of [
    ['name~=(a)\\1', /invalid escape/],
    ['name~=a(?=b)', /Perl syntax/],
    ['name~=a{1001}', /invalid repeat count/],
    ['name~=' + 'a'.repeat(1025), /regular expression of 1025 bytes, more than 1024/],
    [`name~=.{${MAX_REGEX_PROGRAM}}`, /too complex/],
    ['name~=' + 'a'.repeat(70_000), /filters: 70006 bytes, more than 65536/],
  ] as const) {
    assert.throws(() => parseFilters([bad]), (e: unknown) => invalid(e) && why.test((e as Error).message) && (e as Error).message.length < 800, bad.slice(0, 40));
  }
  // the program bound is over all of a List's regexes
  const half = `.{${MAX_REGEX_PROGRAM / 2}}`;
  parseFilters([`name~=${half}`]);
  assert.throws(() => parseFilters([`name~=${half}`, `parent~=${half}`]), invalid);
  assert.throws(() => parseFilters([`name~=${half},parent~=${half}`]), invalid);
});

test('filterView keeps what the filter reads; usesRegex tells which Lists go to a worker', () => {
  const f = parseFilters(['labels.a~=x,labels."b.c"==y', 'name==n']);
  const i = info({ name: 'n', parent: 'p', labels: { a: 'x', 'b.c': 'y', big: 'z'.repeat(4000) } });
  assert.deepEqual(filterView(f, i).labels, { a: 'x', 'b.c': 'y' });
  assert.equal(matches(f, filterView(f, i)), matches(f, i));
  assert.ok(usesRegex(f));
  assert.ok(!usesRegex(parseFilters(['labels."containerd.io/snapshot.ref"==sha256:c,parent==p'])));
});

test('the filter pool matches as the event loop would, and a cancelled job ends its worker', async () => {
  const pool = new FilterPool();
  try {
    const filters = ['name~=^big-[0-9]+$,labels.x~=(?i)^YES', 'kind==view'];
    const infos = Array.from({ length: 200 }, (_, i) =>
      info({ name: i % 3 ? `big-${i}` : `other-${i}`, kind: i % 7 === 0 ? Kind.View : Kind.Active, labels: { x: i % 2 ? 'yes' : 'no' } }));
    const f = parseFilters(filters);
    const got = await pool.match(filters, infos.map((i) => filterView(f, i)), new AbortController().signal);
    assert.deepEqual(got, infos.map((i) => matches(f, i)));
    // a job that would take seconds: aborted, it rejects at once, and the pool goes on
    const abort = new AbortController();
    let seed = 3;
    const ab = () => Array.from({ length: 4000 }, () => (((seed = (seed * 1103515245 + 12345) & 0x7fffffff) >> 16) & 1 ? 'a' : 'b')).join('');
    const costly = Array.from({ length: 40 }, (_, i) => info({ name: `c${i}`, labels: { v: ab() } }));
    const slow = pool.match(['labels.v~=.*a.{440}$'], costly, abort.signal);
    setTimeout(() => abort.abort(), 200);
    const t = performance.now();
    await assert.rejects(slow, FilterCancelled);
    assert.ok(performance.now() - t < 1000, `${performance.now() - t} ms`);
    assert.deepEqual(await pool.match(['name~=^c1$'], costly.slice(0, 3), new AbortController().signal), [false, true, false]);
  } finally {
    pool.close();
  }
});

test('copyRegularFile: a copy of 3 MiB with its sha256 and head, in bounded memory; what readRegularFile refuses is refused, and /proc past the bound too', () => {
  const dir = tmp();
  try {
    const src = path.join(dir, 'src');
    const data = crypto.randomBytes(3 * (1 << 20) + 123);
    fs.writeFileSync(src, data);
    const r = copyRegularFile(src, path.join(dir, 'dst'), 4 << 20, 64 << 10);
    assert.ok(fs.readFileSync(path.join(dir, 'dst')).equals(data));
    assert.equal(r.sha256, crypto.createHash('sha256').update(data).digest('hex'));
    assert.ok(r.head.equals(data.subarray(0, 64 << 10)));
    assert.equal((fs.statSync(path.join(dir, 'dst')).mode & 0o777), 0o600);
    assert.throws(() => copyRegularFile(src, path.join(dir, 'dst'), 4 << 20, 16), { code: 'EEXIST' }, 'never over an existing file');
    const small = path.join(dir, 'small');
    fs.writeFileSync(small, 'abc');
    assert.equal(copyRegularFile(small, path.join(dir, 'd2'), 10, 64 << 10).head.toString(), 'abc');
    assert.throws(() => copyRegularFile(src, path.join(dir, 'd3'), 1 << 20, 16), /more than 1048576/);
    assert.throws(() => copyRegularFile('/dev/zero', path.join(dir, 'd4'), 1 << 20, 16), /is a character device/);
    assert.throws(() => copyRegularFile('/proc/self/maps', path.join(dir, 'd5'), 10, 16), /more than 10 bytes/);
    assert.throws(() => copyRegularFile(path.join(dir, 'none'), path.join(dir, 'd6'), 10, 16), { code: 'ENOENT' });
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('readRegularFile: FIFOs, devices, directories and large files are refused, without hanging', () => {
  const dir = tmp();
  try {
    const fifo = path.join(dir, 'fifo');
    execFileSync('mkfifo', [fifo]);
    assert.throws(() => readRegularFile(fifo, 1 << 20), (e: unknown) => e instanceof FileRefused && /is a FIFO, not a regular file/.test((e as Error).message));
    assert.throws(() => readRegularFile('/dev/zero', 1 << 20), /is a character device/);
    assert.throws(() => readRegularFile(dir, 1 << 20), /is a directory/);
    const f = path.join(dir, 'f');
    fs.writeFileSync(f, 'x'.repeat(1000));
    assert.equal(readRegularFile(f, 1000).length, 1000);
    assert.throws(() => readRegularFile(f, 999), /is 1000 bytes, more than 999/);
    // /proc files say they are empty: the bound holds while reading
    assert.throws(() => readRegularFile('/proc/self/maps', 10), /more than 10 bytes/);
    assert.throws(() => readRegularFile(path.join(dir, 'none'), 10), { code: 'ENOENT' });
    assert.throws(() => loadConfig(fifo), (e: unknown) => e instanceof ConfigError && /^config .*fifo: is a FIFO, not a regular file$/.test((e as Error).message));
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('flags are checked like the keys they replace; admin.mount_dirs', () => {
  const base = parseConfig('');
  assert.deepEqual(base.admin.mount_dirs, ['/mnt', '/run/lazysnap/mnt']);
  const c = applyFlags(base, { root: 'r', address: '/s.sock', logLevel: 'debug' }, (p) => `/abs/${p}`);
  assert.equal(c.root, '/abs/r');
  assert.equal(c.address, '/abs//s.sock');
  assert.equal(c.log.level, 'debug');
  assert.equal(base.log.level, 'info', 'the config given is not changed');
  assert.throws(() => applyFlags(base, { logLevel: 'bogus' }, (p) => p), (e: unknown) => e instanceof ConfigError && /^--log-level must be one of .*got "bogus"$/.test((e as Error).message));
  assert.throws(() => applyFlags(base, { root: '' }, (p) => p), /--root must not be empty/);
  assert.deepEqual(parseConfig('[admin]\nmount_dirs = ["/srv/x"]\n').admin.mount_dirs, ['/srv/x']);
  for (const bad of ['mount_dirs = ["/"]', 'mount_dirs = ["rel"]', 'mount_dirs = "/mnt"', 'mount_dirs = [1]']) {
    assert.throws(() => parseConfig(`[admin]\n${bad}\n`), (e: unknown) => e instanceof ConfigError && /admin\.mount_dirs/.test((e as Error).message), bad);
  }
});

test('setModes tightens what others could read, and says what it changed', () => {
  const dir = tmp();
  try {
    const db = path.join(dir, 'metadata.db');
    fs.writeFileSync(db, '');
    fs.chmodSync(dir, 0o755);
    fs.chmodSync(db, 0o644);
    const modes: [string, number][] = [[dir, 0o700], [db, 0o600], [`${db}-wal`, 0o600]];
    assert.deepEqual(setModes(modes), [
      { path: dir, from: '0755', to: '0700' },
      { path: db, from: '0644', to: '0600' },
    ]);
    assert.equal(fs.statSync(dir).mode & 0o7777, 0o700);
    assert.equal(fs.statSync(db).mode & 0o7777, 0o600);
    assert.deepEqual(setModes(modes), [], 'nothing more to change');
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
