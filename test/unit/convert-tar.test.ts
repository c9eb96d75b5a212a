// The converter's own tar reader: raw names, PAX (binary xattrs, sub-second
// mtimes, long paths), GNU long names, tar-stream's output, corruption.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import * as tarStream from 'tar-stream';
import { readTar, TarHeader, TarFormatError } from '../../image/convert/tar';
import { TruncatedError } from '../../image/convert/bytereader';
import { Tap } from '../../image/convert/layer';
import { tarBuffer, tarHeader } from '../support/oci-layout';

async function* pieces(b: Buffer, size = 777): AsyncGenerator<Buffer> {
  for (let i = 0; i < b.length; i += size) yield b.subarray(i, i + size);
}

async function readAll(b: Buffer, size?: number): Promise<{ h: TarHeader; body: Buffer }[]> {
  const out = [];
  for await (const e of readTar(pieces(b, size))) {
    const parts: Buffer[] = [];
    for await (const p of e.body()) parts.push(Buffer.from(p));
    out.push({ h: e.header, body: Buffer.concat(parts) });
  }
  return out;
}

test('tar reader: types, modes, bodies split across pieces, devices', async () => {
  const data = Buffer.alloc(3000, 7);
  const tar = await tarBuffer([
    { name: 'd/', type: 'dir', mode: 0o1755, uid: 1000, gid: 1001, mtime: 1234567890 },
    { name: 'd/f', data, mode: 0o4755 },
    { name: 'd/l', type: 'symlink', linkname: '../x' },
    { name: 'd/h', type: 'link', linkname: 'd/f' },
    { name: 'dev/null', type: 'char', devmajor: 1, devminor: 3 },
    { name: 'dev/sda', type: 'block', devmajor: 8, devminor: 0 },
    { name: 'p', type: 'fifo' },
  ]);
  for (const size of [1, 511, 512, 4096, 1 << 20]) {
    const es = await readAll(tar, size);
    assert.deepEqual(es.map((e) => [e.h.name.toString(), e.h.type]), [
      ['d/', 'dir'], ['d/f', 'file'], ['d/l', 'symlink'], ['d/h', 'link'], ['dev/null', 'char'], ['dev/sda', 'block'], ['p', 'fifo'],
    ]);
    assert.equal(es[0].h.mode, 0o1755);
    assert.equal(es[0].h.uid, 1000);
    assert.equal(es[0].h.gid, 1001);
    assert.equal(es[0].h.mtime, 1234567890);
    assert.equal(es[1].h.mode, 0o4755);
    assert.ok(es[1].body.equals(data));
    assert.equal(es[2].h.linkname.toString(), '../x');
    assert.equal(es[3].h.linkname.toString(), 'd/f');
    assert.deepEqual([es[4].h.devmajor, es[4].h.devminor, es[5].h.devmajor], [1, 3, 8]);
  }
});

test('tar reader: raw bytes survive (non-UTF-8 names, binary xattr values, nanosecond mtimes)', async () => {
  const name = Buffer.from([0x66, 0xff, 0xfe, 0x2e, 0x74, 0x78, 0x74]); // "f\xff\xfe.txt"
  const cap = Buffer.from([0x01, 0x00, 0x00, 0x02, 0x00, 0x20, 0x00, 0x00, 0xff, 0x80, 0x0a, 0x3d, 0x00]);
  const long = 'a/'.repeat(80) + 'end';
  const es = await readAll(await tarBuffer([
    { name, data: Buffer.from('x'), xattrs: { 'security.capability': cap, 'user.note': 'héllo' }, mtime: 1700000000, mtimeNsec: 123456789 },
    { name: long, data: Buffer.from('y'), paxPath: true },
  ]));
  assert.ok(es[0].h.name.equals(name));
  assert.ok(es[0].h.xattrs.get('security.capability')!.equals(cap));
  assert.equal(es[0].h.xattrs.get('user.note')!.toString(), 'héllo');
  assert.deepEqual([es[0].h.mtime, es[0].h.mtimeNsec], [1700000000, 123456789]);
  assert.equal(es[1].h.name.toString(), long);
});

test('tar reader: reads what tar-stream packs (GNU/PAX long names and link names)', async () => {
  const pack = tarStream.pack();
  const longName = 'x'.repeat(150) + '/' + 'y'.repeat(120);
  pack.entry({ name: longName, mode: 0o600, mtime: new Date(1_600_000_000_000) }, 'hello');
  pack.entry({ name: 'sym', type: 'symlink', linkname: 'z'.repeat(200) });
  pack.entry({ name: 'ünïcode', type: 'file' }, 'u');
  pack.finalize();
  const parts: Buffer[] = [];
  for await (const c of pack) parts.push(c as Buffer);
  const es = await readAll(Buffer.concat(parts));
  assert.equal(es[0].h.name.toString(), longName);
  assert.equal(es[0].body.toString(), 'hello');
  assert.equal(es[0].h.mtime, 1_600_000_000);
  assert.equal(es[1].h.linkname.toString(), 'z'.repeat(200));
  assert.equal(es[2].h.name.toString('utf8'), 'ünïcode');
});

test('tar reader: GNU base-256 numbers and GNU long names', async () => {
  const h = tarHeader(Buffer.from('big'), '0', 0, { uid: 0 });
  // uid 2^33 in base-256
  const f = Buffer.alloc(8);
  f[0] = 0x80;
  f.writeUIntBE(2 ** 33, 2, 6);
  f.copy(h, 108);
  h.fill(0x20, 148, 156);
  let sum = 0;
  for (const b of h) sum += b;
  h.write(sum.toString(8).padStart(6, '0') + '\0 ', 148, 'latin1');
  const longName = Buffer.from('L'.repeat(300));
  const lhdr = tarHeader(Buffer.from('././@LongLink'), 'L', longName.length + 1, {});
  const lbody = Buffer.concat([longName, Buffer.alloc(1), Buffer.alloc(512 - ((longName.length + 1) % 512))]);
  const file = tarHeader(Buffer.from('short'), '0', 0, {});
  const es = await readAll(Buffer.concat([h, lhdr, lbody, file, Buffer.alloc(1024)]));
  assert.equal(es[0].h.uid, 2 ** 33);
  assert.equal(es[1].h.name.toString(), longName.toString());
});

test('tar reader: truncation and corruption are errors, a missing end marker is not', async () => {
  const tar = await tarBuffer([{ name: 'f', data: Buffer.alloc(5000, 1) }]);
  await assert.rejects(readAll(tar.subarray(0, 2000)), TruncatedError);
  await assert.rejects(readAll(tar.subarray(0, 300)), TruncatedError);
  const bad = Buffer.from(tar);
  bad[10] ^= 0xff;
  await assert.rejects(readAll(bad), TarFormatError);
  const noEnd = await tarBuffer([{ name: 'f', data: Buffer.from('x') }], { end: false });
  assert.equal((await readAll(noEnd)).length, 1);
  // umoci 0.4.7 `insert` stops right after the last body: no padding, no end blocks (Go reads it)
  const bare = noEnd.subarray(0, 512 + 1);
  assert.equal((await readAll(bare))[0].body.toString(), 'x');
  await assert.rejects(readAll(noEnd.subarray(0, 512 + 100)), TruncatedError, 'partial padding is truncation');
  const sparse = tarHeader(Buffer.from('s'), 'S', 0, {});
  await assert.rejects(readAll(Buffer.concat([sparse, Buffer.alloc(1024)])), /GNU sparse/);
});

test('the layer stream\'s tap hands its buffers on as they came, hashed and counted (a byte stream\'s iterator would join them)', async () => {
  const bufs = [Buffer.alloc(1000, 1), Buffer.alloc(3000, 2), Buffer.alloc(10, 3)];
  for (const pieces of [true, false]) {
    const t = new Tap(undefined, pieces);
    for (const b of bufs) t.write(b);
    t.end();
    await new Promise((resolve) => setImmediate(resolve)); // all three are buffered before the first read
    const got: Buffer[] = [];
    for await (const b of t) got.push(b as Buffer);
    assert.deepEqual(Buffer.concat(got), Buffer.concat(bufs));
    assert.equal(t.bytes, 4010);
    assert.equal(t.sha.digest('hex'), createHash('sha256').update(Buffer.concat(bufs)).digest('hex'));
    if (pieces) assert.deepEqual(got.map((b) => b.length), [1000, 3000, 10]);
    else assert.deepEqual(got.map((b) => b.length), [4010], 'byte mode joins them: what pieces mode avoids');
  }
});
