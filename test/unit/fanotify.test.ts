// The fanotify backend's pure parts: the wire format (against bytes this
// machine's 6.18 kernel produced), the journal, and the daemon against a
// recording fake group with real content (a local file).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pino from 'pino';
import { FAN, FanotifyProtocolError, PRE_CONTENT_EVENT_LEN, parseEvent, parseEvents, response } from '../../worker/fanotify/events';
import { EventJournal, JOURNAL_LEN, SLOTS, SLOT_LEN, readJournal } from '../../worker/fanotify/journal';
import { FanotifyDaemon, FanotifyDaemonOptions, FanotifyIO } from '../../worker/fanotify/daemon';
import { reserveFds } from '../../worker/fanotify/group';
import { BlobContent, ContentResolver, UnknownBlobError } from '../../content/content';
import { FlatFileContent } from '../../content/flatfile';

const log = pino({ level: 'silent' });

// A FAN_PRE_ACCESS event read from a 6.18 kernel: `dd bs=64k skip=3` of a marked file, fd 20, pid 1094.
const REAL_EVENT = Buffer.from('300000000300180000001000000000001400000046040000060018000000000000000300000000000000010000000000', 'hex');

test('a pre-content event from the kernel parses to its mask, fd, pid and range', () => {
  assert.equal(REAL_EVENT.length, PRE_CONTENT_EVENT_LEN);
  assert.deepEqual(parseEvent(REAL_EVENT), { mask: FAN.PRE_ACCESS, fd: 20, pid: 1094, length: 48, range: { offset: 196608, count: 65536 } });
  assert.equal(parseEvents(Buffer.concat([REAL_EVENT, REAL_EVENT])).length, 2);
});

test('malformed events are refused, every length checked', () => {
  const bad = (mut: (b: Buffer) => Buffer, re: RegExp) => assert.throws(() => parseEvent(mut(Buffer.from(REAL_EVENT))), (e) => e instanceof FanotifyProtocolError && re.test(e.message));
  bad((b) => b.subarray(0, 20), /truncated/);
  bad((b) => (b.writeUInt8(2, 4), b), /version 2/);
  bad((b) => (b.writeUInt32LE(64, 0), b), /bad event lengths/);
  bad((b) => (b.writeUInt16LE(8, 6), b), /bad event lengths/);
  bad((b) => (b.writeUInt16LE(100, 26), b), /bad info record length/);
  bad((b) => (b.writeUInt16LE(8, 26), b.writeUInt32LE(32, 0), b.subarray(0, 32)), /range record of 8 bytes/);
  assert.throws(() => parseEvents(REAL_EVENT, 49), /49 bytes claimed/);
});

test('responses: allow, and deny with an errno the kernel passes on', () => {
  assert.equal(response(20, 'allow').toString('hex'), '1400000001000000');
  assert.equal(response(7, { deny: 5 }).toString('hex'), '0700000002000005');
  assert.throws(() => response(7, { deny: 4 }), /cannot be given/); // EINTR: the kernel would refuse it and the reader would hang
});

test('the journal records an event in place, its path after, and forgets it once answered', () => {
  const buf = Buffer.alloc(JOURNAL_LEN);
  const j = new EventJournal(buf);
  const a = j.take()!;
  REAL_EVENT.copy(a.area);
  const b = j.take()!;
  REAL_EVENT.copy(b.area);
  b.area.writeInt32LE(21, 16);
  j.setPath(a.slot, 'vol/blob-a');
  let r = readJournal(buf);
  assert.deepEqual(r.entries.map((e) => [e.event.fd, e.path]), [[20, 'vol/blob-a'], [21, undefined]]);
  j.clear(a.slot);
  r = readJournal(buf);
  assert.deepEqual(r.entries.map((e) => e.event.fd), [21]);
  j.setPath(b.slot, 'x'.repeat(SLOT_LEN)); // too long: not recorded, the successor tries every blob
  assert.equal(readJournal(buf).entries[0].path, undefined);
  buf.fill(0xff, 5 * SLOT_LEN, 5 * SLOT_LEN + 48);
  assert.equal(readJournal(buf).bad, 1);
  while (j.take()) {
    // fill it
  }
  assert.equal(j.inUse, SLOTS);
});

test('reserved fd numbers are not handed out while held', () => {
  const probe = fs.openSync('/dev/null', 'r');
  fs.closeSync(probe);
  const want = [probe, probe + 2];
  const r = reserveFds(want);
  assert.deepEqual(r.heldElsewhere, []);
  const got = [fs.openSync('/dev/null', 'r'), fs.openSync('/dev/null', 'r')];
  assert.ok(!got.includes(probe) && !got.includes(probe + 2), `${got} avoid ${want}`);
  got.forEach((fd) => fs.closeSync(fd));
  r.release();
  const again = fs.openSync('/dev/null', 'r');
  assert.equal(again, probe);
  fs.closeSync(again);
});

/** A group with queued events over in-memory blob files (sparse: a Set of filled pages). */
class FakeGroup implements FanotifyIO {
  queue: Buffer[] = [];
  responses: [number, string][] = [];
  closed: number[] = [];
  /** fds written through after they were closed (the number may be another file's by then) */
  writtenAfterClose: number[] = [];
  unmarked: string[] = [];
  retriggered: string[] = [];
  files = new Map<string, { data: Buffer; filled: Set<number> }>();
  fdPath = new Map<number, string>();
  /** `<file name>@<offset>` whose read fails */
  failRetrigger = new Set<string>();
  /** called by retrigger(): the fake kernel raises an event for the range */
  onRetrigger?: (file: string, off: number, count: number) => Promise<void>;

  addFile(p: string, size: number) {
    this.files.set(p, { data: Buffer.alloc(size), filled: new Set() });
  }
  event(fd: number, file: string, offset: number, count: number, pid = 1094) {
    const b = Buffer.from(REAL_EVENT);
    b.writeInt32LE(fd, 16);
    b.writeInt32LE(pid, 20);
    b.writeBigUInt64LE(BigInt(offset), 32);
    b.writeBigUInt64LE(BigInt(count), 40);
    this.fdPath.set(fd, file);
    this.queue.push(b);
  }
  readEvent(area: Buffer) {
    const e = this.queue.shift();
    if (!e) return 0;
    e.copy(area);
    return e.length;
  }
  respond(fd: number, v: 'allow' | { deny: number }) {
    this.responses.push([fd, v === 'allow' ? 'allow' : `deny ${v.deny}`]);
  }
  pathOf(fd: number) {
    return this.fdPath.get(fd)!;
  }
  sizeOf(fd: number) {
    return this.files.get(this.fdPath.get(fd)!)!.data.length;
  }
  async pwrite(fd: number, buf: Buffer, off: number) {
    if (this.closed.includes(fd)) this.writtenAfterClose.push(fd);
    const f = this.files.get(this.fdPath.get(fd)!)!;
    assert.ok(off + buf.length <= f.data.length, 'never written past the blob file');
    buf.copy(f.data, off);
    for (let p = off; p < off + buf.length; p += 4096) f.filled.add(p / 4096);
  }
  holeAt(fd: number, off: number) {
    const f = this.files.get(this.fdPath.get(fd)!)!;
    let p = off;
    while (p < f.data.length && f.filled.has(Math.floor(p / 4096))) p = (Math.floor(p / 4096) + 1) * 4096;
    return Math.min(p, f.data.length);
  }
  close(fd: number) {
    this.closed.push(fd);
  }
  unmark(file: string) {
    this.unmarked.push(file);
  }
  async retrigger(file: string, off: number, count: number) {
    this.retriggered.push(`${path.basename(file)}@${off}`);
    if (this.failRetrigger.has(`${path.basename(file)}@${off}`)) throw Object.assign(new Error('EIO: i/o error, read'), { code: 'EIO' });
    await this.onRetrigger?.(file, off, count);
  }
  dataRanges(file: string, size: number) {
    const f = this.files.get(file);
    const out: [number, number][] = [];
    for (let p = 0; f && p * 4096 < Math.min(size, f.data.length); p++) {
      if (!f.filled.has(p)) continue;
      const last = out.at(-1);
      if (last && last[0] + last[1] === p * 4096) last[1] += 4096;
      else out.push([p * 4096, 4096]);
    }
    return out;
  }
  alloc = (n: number) => Buffer.alloc(n);
}

const tick = () => new Promise((r) => setImmediate(r));
async function settle(d: FanotifyDaemon) {
  for (let i = 0; i < 50 && (d.pending > 0 || i < 3); i++) await tick();
}

function setup(blobSize = 3 * 4096 + 100, content?: (file: string) => Promise<BlobContent>, more: Partial<FanotifyDaemonOptions> = {}) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lazysnap-fan-'));
  const src = crypto.randomBytes(blobSize);
  fs.writeFileSync(path.join(dir, 'source'), src);
  const g = new FakeGroup();
  const blobDir = '/blobs';
  g.addFile('/blobs/vol/b1', blobSize);
  const resolved: string[] = [];
  const resolver: ContentResolver = {
    async resolve(volume, cookie) {
      resolved.push(`${volume}/${cookie}`);
      if (cookie !== 'b1') throw new UnknownBlobError(volume, cookie);
      return content ? content(cookie) : FlatFileContent.open(path.join(dir, 'source'));
    },
  };
  const journalBuf = Buffer.alloc(JOURNAL_LEN);
  const d = new FanotifyDaemon(g, new EventJournal(journalBuf), resolver, log, { blobDir, readAttempts: 2, retryDelayMs: 1, ...more });
  return { g, d, src, resolved, journalBuf, dir };
}

test('a missing range is filled through content/, written only within the file, then allowed; a present one is allowed at once', async () => {
  const { g, d, src, resolved, journalBuf } = setup();
  g.event(30, '/blobs/vol/b1', 4096, 100);
  assert.equal(d.drain(), true);
  await settle(d);
  assert.deepEqual(g.responses, [[30, 'allow']]);
  assert.deepEqual(g.files.get('/blobs/vol/b1')!.data.subarray(4096, 8192), src.subarray(4096, 8192));
  assert.deepEqual(g.closed, [30]);
  assert.equal(readJournal(journalBuf).entries.length, 0, 'answered events leave the journal');
  g.event(31, '/blobs/vol/b1', 4096, 4096);
  d.drain();
  await settle(d);
  assert.deepEqual(g.responses[1], [31, 'allow']);
  assert.equal(d.stats.eventsPresent, 1);
  assert.deepEqual(resolved, ['vol/b1'], 'the content is resolved once');
  // the rest, up to the unaligned end: filled, and then the blob loses its mark
  g.event(32, '/blobs/vol/b1', 0, 4 * 4096);
  d.drain();
  await settle(d);
  assert.deepEqual(g.files.get('/blobs/vol/b1')!.data, src);
  assert.deepEqual(g.unmarked, ['/blobs/vol/b1']);
  assert.equal(d.stats.marksRemoved, 1);
});

test('a range that cannot be had is denied with EIO, never allowed', async () => {
  const failing: BlobContent = { name: 'broken', size: 3 * 4096 + 100, fill: async () => { throw new Error('digest mismatch'); } };
  const { g, d } = setup(undefined, async () => failing);
  g.event(40, '/blobs/vol/b1', 0, 4096);
  g.event(41, '/blobs/vol/unknown', 0, 4096);
  g.addFile('/blobs/vol/unknown', 4096);
  d.drain();
  await settle(d);
  await new Promise((r) => setTimeout(r, 20));
  await settle(d);
  assert.deepEqual(g.responses.sort(), [[40, 'deny 5'], [41, 'deny 5']]);
  assert.equal(d.stats.eventsDenied, 2);
  assert.deepEqual(g.files.get('/blobs/vol/b1')!.filled, new Set(), 'nothing written');
});

test('mounted blobs are opened at once, before a read asks; one that fails to open is tried again by its read', async () => {
  const { g, d, src, resolved } = setup();
  d.openBlobs([{ file: '/blobs/vol/b1', size: src.length }, { file: '/elsewhere/x', size: 1 }, { file: '/blobs/vol/gone', size: 4096 }]);
  assert.deepEqual(resolved, ['vol/b1', 'vol/gone'], 'opened without any event; paths outside the blob dir ignored');
  await settle(d);
  d.openBlobs([{ file: '/blobs/vol/b1', size: src.length }]);
  g.event(50, '/blobs/vol/b1', 0, 4096);
  d.drain();
  await settle(d);
  assert.deepEqual(g.responses, [[50, 'allow']]);
  assert.deepEqual(resolved, ['vol/b1', 'vol/gone'], 'opened once, by openBlobs');
  // 'gone' failed to open: forgotten, so its read resolves anew (and is denied only because it is unknown)
  g.addFile('/blobs/vol/gone', 4096);
  g.event(51, '/blobs/vol/gone', 0, 4096);
  d.drain();
  await settle(d);
  assert.deepEqual(resolved, ['vol/b1', 'vol/gone', 'vol/gone']);
  assert.deepEqual(g.responses[1], [51, 'deny 5']);
});

test('a file outside the blob dir is not held back', async () => {
  const { g, d } = setup();
  g.addFile('/etc/other', 4096);
  g.event(50, '/etc/other', 0, 4096);
  d.drain();
  await settle(d);
  assert.deepEqual(g.responses, [[50, 'allow']]);
  assert.equal(d.stats.foreign, 1);
});

/** Blobs b1 and b2 (4 KiB), a recorder, and a fake kernel that turns our own reads into events this daemon serves. */
function orphanSetup() {
  const rec = fakeRecorder([]);
  const s = setup(undefined, undefined, { recorder: rec, pid: 1094 }); // the fake kernel's events carry pid 1094: ours here
  s.g.addFile('/blobs/vol/b2', 4096);
  let nextFd = 60;
  s.g.onRetrigger = async (file, off, count) => {
    s.g.event(nextFd++, file, off, count);
    s.d.drain();
    await settle(s.d);
  };
  return { ...s, rec };
}

test('orphans: each range is filled through a read of our own first, then every orphan is answered by number (and recorded as the reader asked)', async () => {
  const { g, d, src, rec } = orphanSetup();
  const orphan = (fd: number, p: string | undefined, off: number) => ({
    slot: 0, path: p, event: { mask: FAN.PRE_ACCESS, fd, pid: 1, length: 48, range: { offset: off, count: 4096 } },
  });
  g.failRetrigger.add('b2@0'); // a guess past b2's end reads nothing (no error); its own range cannot be had
  // and one a dead worker raised itself (its refill of an orphan of its own predecessor): answered, not recorded
  const own = { ...orphan(22, 'vol/b1', 4096), worker: 77 };
  own.event.pid = 77;
  await d.answerOrphans([orphan(20, 'vol/b1', 0), orphan(20, undefined, 8192), orphan(21, 'vol/b2', 0), own], () => ['/blobs/vol/b1', '/blobs/vol/b2']);
  assert.deepEqual(g.retriggered, ['b1@0', 'b1@8192', 'b2@8192', 'b2@0', 'b1@4096']);
  // our own events (60-62; 62 is past b2's end) first, while filling; the orphans only after all were filled
  assert.deepEqual(g.responses, [[60, 'allow'], [61, 'allow'], [62, 'allow'], [63, 'allow'], [20, 'allow'], [20, 'allow'], [21, 'deny 5'], [22, 'allow']]);
  assert.deepEqual(g.files.get('/blobs/vol/b1')!.data.subarray(0, 4096), src.subarray(0, 4096));
  assert.equal(d.stats.orphansAnswered, 4);
  // our own reads are not recorded (they may be wider than the reader's); the orphans are, from the journal, but for the one
  // whose blob was never written down (it cannot be known) and the one denied
  assert.deepEqual(rec.accesses, ['b1@0+4096']);
});

test("orphans: one whose path was never written down, but whose file its dead worker's keeper still names, is filled on that blob alone and recorded", async () => {
  const { g, d, rec } = orphanSetup();
  const event = { mask: FAN.PRE_ACCESS, fd: 20, pid: 1, length: 48, range: { offset: 4096, count: 4096 } };
  await d.answerOrphans([{ slot: 0, event, worker: 77, keptFile: '/blobs/vol/b1' }], () => ['/blobs/vol/b1', '/blobs/vol/b2']);
  assert.deepEqual(g.retriggered, ['b1@4096'], 'not guessed on every blob');
  assert.deepEqual(g.responses.at(-1), [20, 'allow']);
  assert.deepEqual(rec.accesses, ['b1@4096+4096']);
  // a kept file outside the blob dir names no blob: guessed, and not recorded
  g.retriggered = [];
  await d.answerOrphans([{ slot: 0, event: { ...event, fd: 21 }, worker: 77, keptFile: '/etc/hostname' }], () => ['/blobs/vol/b1', '/blobs/vol/b2']);
  assert.deepEqual(g.retriggered, ['b1@4096', 'b2@4096']);
  assert.deepEqual(rec.accesses, ['b1@4096+4096']);
});

test('a sequential reader is filled ahead in the background; its next reads find their bytes; a blob completed so loses its mark', async () => {
  const size = 6 << 20; // two on-demand fills of 1 MiB, then the last 4 MiB ahead
  const { g, d, src } = setup(size);
  g.event(70, '/blobs/vol/b1', 0, 1 << 20);
  d.drain();
  await settle(d);
  g.event(71, '/blobs/vol/b1', 1 << 20, 1 << 20); // sequential: within AHEAD of the last fill
  d.drain();
  await settle(d);
  for (let i = 0; i < 40 && g.closed.length < 2; i++) await new Promise((r) => setTimeout(r, 5));
  assert.deepEqual(g.responses, [[70, 'allow'], [71, 'allow']]);
  assert.equal(d.stats.fills, 2);
  assert.equal(d.stats.fillsAhead, 1);
  assert.deepEqual(g.closed.sort(), [70, 71], 'the fd the fill ahead wrote through is closed once it is done');
  assert.deepEqual(g.files.get('/blobs/vol/b1')!.data, src, 'whole: [2 MiB, 6 MiB) came ahead');
  assert.deepEqual(g.unmarked, ['/blobs/vol/b1'], 'completed by the fill ahead: unmarked');
  g.event(72, '/blobs/vol/b1', 3 << 20, 131072);
  d.drain();
  await settle(d);
  assert.deepEqual(g.responses[2], [72, 'allow']);
  assert.equal(d.stats.fills, 2, 'no fill for bytes filled ahead');
});

test('a remote blob is filled ahead by fillAhead, one call per window, doubling; an image whose start is being recorded is not', async () => {
  const M = 1 << 20;
  for (const learning of [false, true]) {
    const calls: Array<[number, number]> = [];
    const size = 64 * M;
    const src = crypto.randomBytes(size);
    const content = async (): Promise<BlobContent> => ({
      name: 'remote',
      size,
      fill: async (off, len, sink, alloc) => {
        const s = off - (off % 4096);
        const e = Math.min(Math.ceil((off + len) / 4096) * 4096, size);
        const b = alloc(e - s);
        src.copy(b, 0, s, e);
        await sink(s, b);
      },
      fillAhead: async (off, len) => {
        calls.push([off, len]);
        return 0; // writes nothing: the reader's own events fill its bytes
      },
    });
    const rec = { access: () => {}, learning: () => learning };
    const { g, d } = setup(size, content, { recorder: rec, readahead: { initial: 4 * M, max: 8 * M, streams: 4, gap: 4 * M } });
    for (const [i, off] of [0, 1, 5, 13].entries()) {
      g.event(80 + i, '/blobs/vol/b1', off * M, M);
      d.drain();
      await settle(d);
    }
    assert.deepEqual(g.responses.map((r) => r[1]), ['allow', 'allow', 'allow', 'allow']);
    assert.deepEqual(calls, learning ? [] : [[2 * M, 4 * M], [6 * M, 8 * M], [14 * M, 8 * M]],
      learning ? 'nothing ahead of a start being recorded' : 'windows after each fill, 4 then 8 MiB');
    assert.equal(d.stats.fillsAhead, learning ? 0 : 3);
  }
});

test('a local blob\'s window is filled in parts, in order, partsAtOnce at a time; a read in a part waits for that part', async () => {
  const M = 1 << 20;
  const fills: number[] = [];
  const gates = new Map<number, () => void>();
  const size = 64 * M;
  const content = async (): Promise<BlobContent> => ({
    name: 'local',
    size,
    fill: async (off, len, sink, alloc) => {
      fills.push(off / M);
      if (len === 4 * M) await new Promise<void>((r) => gates.set(off / M, r));
      await sink(off, alloc(len));
    },
  });
  const { g, d } = setup(size, content, { readahead: { initial: 16 * M, max: 16 * M, streams: 4, gap: 4 * M, partsAtOnce: 2 } });
  const until = async (n: number) => {
    for (let i = 0; i < 40 && fills.length < n; i++) await new Promise((r) => setTimeout(r, 2));
  };
  for (const [i, off] of [0, 1].entries()) {
    g.event(110 + i, '/blobs/vol/b1', off * M, M);
    d.drain();
    await settle(d);
  }
  await until(4);
  assert.deepEqual(fills, [0, 1, 2, 6], 'the two reads, then the window [2, 18) MiB two parts at a time');
  g.event(112, '/blobs/vol/b1', 11 * M, 4096); // in the third part, not begun
  d.drain();
  await settle(d);
  assert.deepEqual(fills, [0, 1, 2, 6], 'waits for its part, which waits its turn');
  gates.get(6)!();
  await until(5);
  assert.deepEqual(fills, [0, 1, 2, 6, 10]);
  assert.equal(g.responses.length, 2);
  gates.get(10)!();
  await until(6);
  await settle(d);
  assert.deepEqual(g.responses.map((r) => r[0]), [110, 111, 112], 'answered once its part is written');
  assert.deepEqual(fills, [0, 1, 2, 6, 10, 14]);
  gates.get(2)!();
  gates.get(14)!();
  await settle(d);
  assert.equal(d.stats.fillsAhead, 4);
  assert.equal(d.stats.fills, 2, 'no fill of its own for the read that waited');
});

test('after a failover, a blob file that holds a reader\'s trail is filled ahead from the successor\'s first fill there', async () => {
  const M = 1 << 20;
  const calls: Array<[number, number]> = [];
  const size = 64 * M;
  const content = async (): Promise<BlobContent> => ({
    name: 'remote',
    size,
    fill: async (off, len, sink, alloc) => sink(off - (off % 4096), alloc(4096)),
    fillAhead: async (off, len) => {
      calls.push([off, len]);
      return 0;
    },
  });
  for (const trail of [true, false]) {
    calls.length = 0;
    const { g, d } = setup(size, content, { readahead: { initial: 4 * M, max: 8 * M, streams: 4, gap: 4 * M } });
    // what the predecessor's reader left: [0, 20 MiB) filled
    if (trail) for (let p = 0; p < (20 * M) / 4096; p++) g.files.get('/blobs/vol/b1')!.filled.add(p);
    d.openBlobs([{ file: '/blobs/vol/b1', size }]);
    await settle(d);
    g.event(90, '/blobs/vol/b1', 20 * M, 128 * 1024);
    d.drain();
    await settle(d);
    assert.deepEqual(g.responses, [[90, 'allow']]);
    assert.deepEqual(calls, trail ? [[20 * M + 128 * 1024, 4 * M]] : [], trail ? 'the first window at once' : 'a fresh file: a lone read, nothing ahead');
  }
});

test('writes a fill goes on with after it returns (a remote blob\'s widened chunks) keep the event\'s fd open until they end', async () => {
  const size = 64 * 4096;
  const src = crypto.randomBytes(size);
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  const content = async (): Promise<BlobContent> => ({
    name: 'widening',
    size,
    fill: async (off, len, sink, alloc, _signal, hints) => {
      const s = off - (off % 4096);
      const e = Math.min(Math.ceil((off + len) / 4096) * 4096, size);
      // the chunks after the window, written once the gate opens, after this fill has resolved
      hints?.background?.((async () => {
        await gate;
        const b = alloc(8 * 4096);
        src.copy(b, 0, e, e + b.length);
        await sink(e, b);
      })());
      const b = alloc(e - s);
      src.copy(b, 0, s, e);
      await sink(s, b);
    },
  });
  const { g, d } = setup(size, content);
  g.event(40, '/blobs/vol/b1', 0, 4096);
  d.drain();
  await settle(d);
  assert.deepEqual(g.responses, [[40, 'allow']], 'the reader goes on without the widened chunks');
  assert.deepEqual(g.closed, [], 'the fd stays open for the writes still to come');
  release();
  for (let i = 0; i < 40 && g.closed.length === 0; i++) await new Promise((r) => setTimeout(r, 5));
  assert.deepEqual(g.closed, [40]);
  assert.deepEqual(g.writtenAfterClose, [], 'nothing written through a closed fd');
  assert.ok(g.files.get('/blobs/vol/b1')!.data.subarray(0, 9 * 4096).equals(src.subarray(0, 9 * 4096)));
});

/** A local file as content that replays: each offset's page filled in order, once `gate` opens; `replayed` says which. */
function replayingFlat(source: () => string, replayed: number[] = [], gate: Promise<void> = Promise.resolve()): () => Promise<BlobContent> {
  return async () => {
    const flat = await FlatFileContent.open(source());
    return {
      name: flat.name,
      size: flat.size,
      fill: (o, l, sink, alloc, signal) => flat.fill(o, l, sink, alloc, signal),
      replay(offsets, sink, alloc) {
        const done = (async () => {
          await gate;
          for (const o of offsets) {
            await flat.fill(o, 4096, sink, alloc);
            replayed.push(o);
          }
          return { chunks: offsets.length };
        })();
        return { cancel: () => undefined, done };
      },
    };
  };
}

test('a blob opened by a worker that took over (a read of it served first or not) marks what its file holds already as present, then replays', async () => {
  const size = 16 * 4096;
  const order: string[] = [];
  const flat = replayingFlat(() => path.join(dir, 'source'));
  const { g, d, dir } = setup(size, async (cookie) => {
    const c = await flat();
    return { ...c, markPresent: (off: number, len: number) => (order.push(`present ${off}+${len}`), len / 4096) };
  }, {
    pid: 4242,
    replayPlan: () => (order.push('plan'), [8 * 4096]),
  });
  g.onRetrigger = async (file, off) => {
    order.push(`trigger ${off}`);
    g.event(90, file, off, 4096, 4242);
    d.drain();
    await settle(d);
  };
  for (const p of [2, 3, 7]) g.files.get('/blobs/vol/b1')!.filled.add(p); // filled by the worker that died
  // a reader's event comes first (a successor serves the readers before lazysnapd tells it the mounted blobs)
  g.event(20, '/blobs/vol/b1', 2 * 4096, 4096);
  d.drain();
  await settle(d);
  assert.deepEqual(g.responses, [[20, 'allow']]);
  d.openBlobs([{ file: '/blobs/vol/b1', size }]);
  for (let i = 0; i < 20 && d.stats.replays === 0; i++) await settle(d);
  assert.deepEqual(order, [`present ${2 * 4096}+${2 * 4096}`, `present ${7 * 4096}+4096`, 'plan', `trigger ${8 * 4096}`]);
  assert.equal(d.stats.replays, 1, 'replayed, though a read had opened the blob first');
  d.openBlobs([{ file: '/blobs/vol/b1', size }]);
  await settle(d);
  assert.equal(order.filter((o) => o === 'plan').length, 1, 'told again: nothing to do');
});

/** A recorder that learns every blob of volume "vol" and notes each access in `order`. */
function fakeRecorder(order: string[], learning = true) {
  return {
    accesses: [] as string[],
    learning: (volume: string) => learning && volume === 'vol',
    access(volume: string, cookie: string, off: number, len: number) {
      this.accesses.push(`${cookie}@${off}+${len}`);
      order.push(`recorded ${off}`);
    },
  };
}

test('learning: each allowed event is recorded before its answer, present ranges too; a denied one is not; a complete blob keeps its mark', async () => {
  const order: string[] = [];
  const rec = fakeRecorder(order);
  const size = 3 * 4096 + 100;
  const { g, d } = setup(size, undefined, { recorder: rec });
  const respond = g.respond.bind(g);
  g.respond = (fd, v) => {
    order.push(`answered ${fd}`);
    respond(fd, v);
  };
  g.event(80, '/blobs/vol/b1', 4096, 100); // missing: filled
  d.drain();
  await settle(d);
  g.event(81, '/blobs/vol/b1', 4096, 4096); // present now
  g.event(82, '/blobs/vol/b1', 0, 4 * 4096); // the rest: the blob becomes complete
  g.event(83, '/blobs/vol/b1', size, 4096); // past the end: nothing read, nothing recorded
  d.drain();
  await settle(d);
  assert.deepEqual(rec.accesses, ['b1@4096+100', 'b1@4096+4096', `b1@0+${size}`]);
  assert.deepEqual(order.slice(0, 4), ['recorded 4096', 'answered 80', 'recorded 4096', 'answered 81']);
  assert.deepEqual(g.unmarked, [], 'while the start is recorded, every read must still raise its event');
  assert.equal(d.stats.marksRemoved, 0);

  const failing: BlobContent = { name: 'broken', size, fill: async () => { throw new Error('digest mismatch'); } };
  const order2: string[] = [];
  const rec2 = fakeRecorder(order2);
  const f = setup(size, async () => failing, { recorder: rec2 });
  f.g.event(84, '/blobs/vol/b1', 0, 4096);
  f.d.drain();
  await settle(f.d);
  await new Promise((r) => setTimeout(r, 20));
  assert.deepEqual(f.g.responses, [[84, 'deny 5']]);
  assert.deepEqual(rec2.accesses, [], 'a read that failed is not part of the start');
});

test('replay: a mounted blob with recorded chunks borrows the fd of an event its own one-byte read raises, and fetches the chunks in order through it', async () => {
  const size = 16 * 4096;
  const order: string[] = [];
  const rec = fakeRecorder(order, false);
  const replayed: number[] = [];
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  const content = replayingFlat(() => path.join(dir, 'source'), replayed, gate); // the fd must stay open until the replay is over
  const plans: string[] = [];
  const { g, d, src, dir } = setup(size, content, {
    recorder: rec,
    pid: 4242,
    replayPlan: (volume, cookie) => {
      plans.push(`${volume}/${cookie}`);
      return [8 * 4096, 2 * 4096, 12 * 4096];
    },
  });
  g.onRetrigger = async (file, off, count) => {
    assert.equal(count, 1);
    g.event(90, file, off, 4096, 4242); // our own read of one byte: the kernel names its page
    d.drain();
    await settle(d);
  };
  d.openBlobs([{ file: '/blobs/vol/b1', size }]);
  for (let i = 0; i < 20 && g.responses.length === 0; i++) await settle(d);
  assert.deepEqual(plans, ['vol/b1']);
  assert.deepEqual(g.retriggered, [`b1@${8 * 4096}`], 'one byte of the first recorded chunk');
  assert.deepEqual(g.responses, [[90, 'allow']], 'the trigger is answered like any read');
  assert.deepEqual(g.closed, [], 'its fd stays open for the replay');
  assert.deepEqual(rec.accesses, [], 'the trigger is not the start\'s read');
  assert.equal(d.stats.replays, 1);
  release();
  for (let i = 0; i < 40 && g.closed.length === 0; i++) await new Promise((r) => setTimeout(r, 5));
  assert.deepEqual(replayed, [8 * 4096, 2 * 4096, 12 * 4096], 'in recorded order');
  assert.deepEqual(g.closed, [90], 'closed once the replay is done');
  const file = g.files.get('/blobs/vol/b1')!;
  for (const o of [2, 8, 12]) assert.deepEqual(file.data.subarray(o * 4096, (o + 1) * 4096), src.subarray(o * 4096, (o + 1) * 4096));
  // a reader's event for the same page from another process is a read like any other
  g.event(91, '/blobs/vol/b1', 8 * 4096, 4096);
  d.drain();
  await settle(d);
  assert.deepEqual(rec.accesses, ['b1@32768+4096']);
  assert.equal(d.stats.replays, 1);
  // mounted again over the same file: nothing to do; over a new file of that name (the image was removed): replayed again
  d.openBlobs([{ file: '/blobs/vol/b1', size }]);
  await settle(d);
  assert.deepEqual(plans, ['vol/b1']);
  g.files.get('/blobs/vol/b1')!.filled.clear();
  d.openBlobs([{ file: '/blobs/vol/b1', size, created: true }]);
  for (let i = 0; i < 40 && d.stats.replays < 2; i++) await new Promise((r) => setTimeout(r, 5));
  assert.deepEqual(plans, ['vol/b1', 'vol/b1']);
  assert.equal(d.stats.replays, 2);
});

test('replay: a trigger whose read raises no event of its own gives up (said once), and a wider event naming the byte begins it', async (t) => {
  const size = 16 * 4096;
  const flatReplay = replayingFlat(() => path.join(dir, 'source'));
  const warned: string[] = [];
  const { g, d, dir } = setup(size, flatReplay, { pid: 4242, replayPlan: () => [5 * 4096 + 100] });
  const logger = (d as unknown as { log: { warn: (o: object, m: string) => void } }).log; // the file's silent logger: put back below
  const warn = logger.warn;
  logger.warn = (_o, m) => void warned.push(m);
  t.after(() => void (logger.warn = warn));
  d.openBlobs([{ file: '/blobs/vol/b1', size }]); // the fake kernel raises nothing for our read
  for (let i = 0; i < 20 && warned.length === 0; i++) await settle(d);
  assert.deepEqual(warned, ['cannot start replaying a recorded start; its reads fetch on demand']);
  assert.equal(d.stats.replays, 0);
  // a blob made anew: replayed, through an event of ours wider than a page that holds the byte
  g.onRetrigger = async (file) => {
    g.event(95, file, 4 * 4096, 3 * 4096, 4242);
    d.drain();
    await settle(d);
  };
  d.openBlobs([{ file: '/blobs/vol/b1', size, created: true }]);
  for (let i = 0; i < 20 && d.stats.replays === 0; i++) await settle(d);
  assert.equal(d.stats.replays, 1);
  assert.equal(warned.length, 1, 'begun: nothing more to say');
});
