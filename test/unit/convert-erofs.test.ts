// The EROFS/RAFS bootstrap writer, read back through the project's reader
// (ErofsImage, Bootstrap): layout rules, names, xattrs, links, devices, chunks.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Bootstrap, BlobEntry, BlobFeature, Compressor, DigestAlgo, RafsFlags } from '../../image/rafs/bootstrap';
import { ErofsImage, NULL_ADDR } from '../../image/erofs/image';
import { DataLayout, Inode } from '../../image/erofs/inode';
import { parseSuperblock, superblockChecksum } from '../../image/erofs/superblock';
import { Bytes } from '../../image/bytes';
import { WriterNode, encodeDev } from '../../image/erofs/writer';
import { encodeChunkIndex, encodeHoleIndex, writeRafsBootstrap } from '../../image/rafs/writer';
import { encodeXattrIbody } from '../../image/erofs/writer-xattr';

type N = WriterNode;
const meta = (o: Partial<N> = {}) => ({ mode: 0o755, uid: 0, gid: 0, mtime: 1_700_000_000, mtimeNsec: 0, xattrs: new Map<string, Buffer>(), ...o });
const dir = (kids: Record<string, N> | Map<string, N>, o: Partial<N> = {}): N => ({ kind: 'dir', ...meta(o), children: kids instanceof Map ? kids : new Map(Object.entries(kids)) });
const file = (size: number, o: Partial<N> = {}): N => ({ kind: 'reg', ...meta({ mode: 0o644, ...o }), size });

const BLOB_A = 'a'.repeat(64);
const BLOB_B = 'b'.repeat(64);
function blob(id: string, index: number, chunks: number): BlobEntry {
  return {
    blobId: id, blobIndex: index, chunkSize: 1 << 20, chunkCount: chunks, compressor: Compressor.Zstd, digester: DigestAlgo.Blake3,
    features: BlobFeature.ALIGNED | BlobFeature.CHUNK_INFO_V2, compressedSize: 1000, uncompressedSize: 1 << 24, tocSize: 1024,
    ciCompressor: Compressor.Zstd, ciOffset: 10, ciCompressedSize: 20, ciUncompressedSize: chunks * 24,
    tocDigest: Buffer.alloc(32, 1), metaDigest: Buffer.alloc(32), metaSize: 0, cipherAlgo: 0,
  };
}

/** chunk indexes: file size s → chunk i on blob (i % 2), ci i, block 10*i; chunk 1 is a hole for "holey" */
const chunksOf = new Map<N, { dev: number; ci: number; blk: number }[]>();
function chunkIndexes(n: N): Buffer {
  const spec = chunksOf.get(n) ?? [];
  const out = Buffer.alloc(Math.ceil((n.size ?? 0) / (1 << 20)) * 8);
  for (let i = 0; i < out.length / 8; i++) {
    const s = spec[i];
    if (!s || s.dev < 0) encodeHoleIndex(out, i * 8);
    else encodeChunkIndex(out, i * 8, s.dev, s.ci, s.blk);
  }
  return out;
}

function build(root: N, blobs = [blob(BLOB_A, 0, 70000), blob(BLOB_B, 1, 3)]): Buffer {
  return writeRafsBootstrap(root, { chunkSize: 1 << 20, blobs, chunkIndexes, buildTime: 1_600_000_000, buildTimeNsec: 5 });
}

function byPath(img: ErofsImage) {
  const m = new Map<string, { inode: Inode; hardlinkOf?: string }>();
  for (const e of img.walk()) m.set(e.path, e);
  return m;
}

test('bootstrap writer: superblock, RAFS superblock, device table and blob table read back', () => {
  const buf = build(dir({ f: file(10) }));
  const bs = new Bootstrap(buf);
  const sb = bs.erofs.sb;
  assert.equal(buf.length % 4096, 0);
  assert.equal(sb.featureCompat, 0x40000001); // RAFS_V6 | SB_CHKSUM
  assert.equal(sb.checksum, superblockChecksum(buf));
  assert.equal(sb.featureIncompat, 0xc);
  assert.equal(sb.extraDevices, 2);
  assert.equal(sb.devtSlotoff, 11);
  assert.equal(sb.blocks * 4096, buf.length);
  assert.notEqual(sb.rootNid, 0, 'nid 0 would be st_ino 0, which readdir users skip');
  assert.equal(sb.buildTime, 1_600_000_000);
  assert.deepEqual(bs.devices, [
    { tag: BLOB_A, blocks: 4096, mappedBlkaddr: 0 },
    { tag: BLOB_B, blocks: 4096, mappedBlkaddr: 0 },
  ]);
  assert.equal(bs.ext.flags, RafsFlags.COMPRESSION_ZSTD | RafsFlags.HASH_BLAKE3 | RafsFlags.EXPLICIT_UID_GID | RafsFlags.INLINED_CHUNK_DIGEST);
  assert.equal(bs.ext.chunkSize, 1 << 20);
  assert.equal(bs.ext.blobTableOffset % 4096, 0);
  assert.equal(bs.ext.blobTableSize, 512);
  assert.deepEqual(bs.blobs.map((b) => [b.blobId, b.blobIndex, b.chunkCount, b.ciUncompressedSize]), [[BLOB_A, 0, 70000, 70000 * 24], [BLOB_B, 1, 3, 72]]);
  assert.ok(bs.blobs[0].tocDigest.equals(Buffer.alloc(32, 1)));
  // a corrupted block 0 fails the checksum
  const bad = Buffer.from(buf);
  bad[1408 + 3] ^= 1;
  assert.throws(() => parseSuperblock(new Bytes(bad, 'x')), /checksum/);
});

test('bootstrap writer: big sorted directories, names below ".", non-UTF-8 names, dot entries', () => {
  const kids = new Map<string, N>();
  for (let i = 0; i < 700; i++) kids.set(`entry-with-a-rather-long-name-${String(i).padStart(4, '0')}`, file(0));
  kids.set('!first', file(0));
  kids.set('-dash', file(0));
  kids.set(Buffer.from([0xff, 0xfe, 0x41]).toString('latin1'), file(0));
  kids.set('sub', dir({ x: file(0) }));
  const img = new Bootstrap(build(dir({ big: dir(kids) }))).erofs;
  const big = [...img.walk()].find((e) => e.path === '/big')!.inode;
  assert.ok(big.size > 4096 * 5, 'spans several blocks');
  const names = img.readdir(big).map((d) => d.name);
  const sorted = [...names].sort(Buffer.compare);
  assert.deepEqual(names, sorted, 'dirents sorted bytewise across all blocks');
  assert.equal(names.length, 704 + 2);
  assert.equal(names[0].toString(), '!first');
  assert.equal(names[1].toString(), '-dash');
  assert.equal(names[2].toString(), '.');
  assert.equal(names[3].toString(), '..');
  assert.ok(names[names.length - 1].equals(Buffer.from([0xff, 0xfe, 0x41])));
  const dots = img.readdir(big).filter((d) => d.name.toString() === '.' || d.name.toString() === '..');
  assert.equal(dots[0].nid, big.nid);
  assert.equal(dots[1].nid, img.sb.rootNid);
  assert.equal(big.nlink, 3, '2 + one subdirectory');
  assert.equal(img.root().nlink, 3);
});

test('bootstrap writer: inline tails never cross a block; plain layout when they cannot fit', () => {
  // many small directories and symlinks of assorted sizes stress the packing
  const kids = new Map<string, N>();
  for (let i = 0; i < 300; i++) {
    const sub = new Map<string, N>();
    for (let j = 0; j < (i * 7) % 23; j++) sub.set(`n${j}-${'z'.repeat(i % 40)}`, file(0));
    kids.set(`d${i}`, dir(sub));
    kids.set(`s${i}`, { kind: 'symlink', ...meta(), target: Buffer.from('t'.repeat(1 + ((i * 131) % 3000))) });
  }
  // xattrs big enough that neither the tail nor the target fits beside the inode
  const fat = new Map([['user.big', Buffer.alloc(4000, 0x61)]]);
  kids.set('fatdir', dir({ a: file(0), b: file(0) }, { xattrs: fat }));
  kids.set('fatlink', { kind: 'symlink', ...meta({ xattrs: fat }), target: Buffer.from('q'.repeat(900)) });
  kids.set('longlink', { kind: 'symlink', ...meta(), target: Buffer.from('L'.repeat(4095)) });
  const img = new Bootstrap(build(dir(kids))).erofs;
  let inline = 0;
  for (const e of img.walk()) {
    const i = e.inode;
    if (i.layout === DataLayout.FlatInline) {
      inline++;
      const tail = i.offset + i.isize + i.xattrSize;
      const len = i.size % 4096;
      assert.ok((tail % 4096) + len <= 4096, `${e.path}: inline tail crosses a block`);
    }
    if (/^\/d\d+$/.test(e.path)) img.readdir(i);
    if (/^\/s\d+$/.test(e.path)) assert.equal(img.readlink(i).length, 1 + ((Number(e.path.slice(2)) * 131) % 3000));
  }
  assert.ok(inline > 500);
  const m = byPath(img);
  assert.equal(m.get('/fatdir')!.inode.layout, DataLayout.FlatPlain);
  assert.deepEqual(img.readdir(m.get('/fatdir')!.inode).map((d) => d.name.toString()), ['.', '..', 'a', 'b']);
  assert.equal(m.get('/fatlink')!.inode.layout, DataLayout.FlatPlain);
  assert.equal(img.readlink(m.get('/fatlink')!.inode), 'q'.repeat(900));
  assert.equal(img.readlink(m.get('/longlink')!.inode), 'L'.repeat(4095));
});

test('bootstrap writer: metadata, xattrs, devices, hard links and chunk indexes', () => {
  const shared = file(3 << 20, { mode: 0o4755, uid: 70000, gid: 80000, mtime: 4_102_444_800, mtimeNsec: 999999999 });
  chunksOf.set(shared, [{ dev: 0, ci: 0x1_2345, blk: 7 }, { dev: -1, ci: 0, blk: 0 }, { dev: 1, ci: 2, blk: 0xfffff }]);
  const acl = Buffer.from('0200000001000600ffffffff04000400ffffffff10000400ffffffff20000400ffffffff', 'hex');
  const root = dir(
    {
      a: shared,
      b: shared,
      sub: dir({ c: shared, empty: file(0) }, { mode: 0o1777 }),
      null: { kind: 'char', ...meta({ mode: 0o666 }), rdev: { major: 1, minor: 3 } },
      nvme: { kind: 'block', ...meta({ mode: 0o660 }), rdev: { major: 259, minor: 300 } },
      fifo: { kind: 'fifo', ...meta({ mode: 0o600 }) },
      sock: { kind: 'socket', ...meta({ mode: 0o777 }) },
      x: file(1, {
        xattrs: new Map([
          ['user.a', Buffer.from('1')],
          ['security.capability', Buffer.from([1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])],
          ['trusted.overlay.opaque', Buffer.from('y')],
          ['system.posix_acl_access', acl],
          ['system.posix_acl_default', acl],
        ]),
      }),
    },
    { mode: 0o700, uid: 1, gid: 2 },
  );
  const bs = new Bootstrap(build(root));
  assert.ok(bs.ext.flags & RafsFlags.HAS_XATTR);
  const img = bs.erofs;
  const m = byPath(img);
  const a = m.get('/a')!.inode;
  assert.equal(m.get('/b')!.hardlinkOf, '/a');
  assert.equal(m.get('/sub/c')!.hardlinkOf, '/a');
  assert.equal(a.nlink, 3);
  assert.deepEqual([a.mode & 0o7777, a.uid, a.gid, a.mtime, a.mtimeNsec, a.size], [0o4755, 70000, 80000, 4_102_444_800, 999999999, 3 << 20]);
  assert.deepEqual(img.chunkMap(a), { chunkBits: 20, chunks: [{ deviceId: 1, blkaddr: 7 }, { deviceId: 0, blkaddr: NULL_ADDR }, { deviceId: 2, blkaddr: 0xfffff }] });
  // nydus layout: ci index low 16 bits first, its bits 16-23 in the device id's high byte
  const idx = Math.ceil((a.offset + 64) / 8) * 8;
  assert.equal(img.bytes.buf.readUInt16LE(idx), 0x2345);
  assert.equal(img.bytes.buf.readUInt16LE(idx + 2), 0x0101);
  const empty = m.get('/sub/empty')!.inode;
  assert.equal(empty.layout, DataLayout.ChunkBased);
  assert.equal(empty.size, 0);
  assert.equal(m.get('/sub')!.inode.mode & 0o7777, 0o1777);
  assert.equal(m.get('/null')!.inode.iu, encodeDev(1, 3));
  assert.equal(m.get('/nvme')!.inode.iu, encodeDev(259, 300));
  assert.equal(encodeDev(259, 300), (300 & 0xff) | (259 << 8) | ((300 & ~0xff) << 12));
  assert.equal(m.get('/fifo')!.inode.mode, 0o010600);
  assert.equal(m.get('/sock')!.inode.mode, 0o140777);
  const root0 = img.root();
  assert.deepEqual([root0.mode & 0o7777, root0.uid, root0.gid], [0o700, 1, 2]);
  const xs = Object.fromEntries(img.xattrs(m.get('/x')!.inode).map((x) => [x.name, x.value.toString('hex')]));
  assert.deepEqual(Object.keys(xs).sort(), ['security.capability', 'system.posix_acl_access', 'system.posix_acl_default', 'trusted.overlay.opaque', 'user.a']);
  assert.equal(xs['system.posix_acl_access'], acl.toString('hex'));
});

test('bootstrap writer: output is deterministic and refuses what EROFS cannot hold', () => {
  const mk = () => dir({ z: file(5), a: dir({ y: file(0) }), m: { kind: 'symlink', ...meta(), target: Buffer.from('z') } });
  assert.ok(build(mk()).equals(build(mk())));
  assert.throws(() => encodeXattrIbody(new Map([['btrfs.compression', Buffer.from('zstd')]])), /no EROFS name prefix/);
  assert.throws(() => encodeXattrIbody(new Map([['user.', Buffer.from('x')]])), /nothing after/);
  assert.throws(() => encodeXattrIbody(new Map([['user.' + 'n'.repeat(256), Buffer.from('x')]])), /longer than 255/);
  assert.throws(() => build(dir({ ['n'.repeat(256)]: file(0) })), /name of 256 bytes/);
  assert.throws(() => build(dir({ s: { kind: 'symlink', ...meta(), target: Buffer.alloc(0) } })), /empty target/);
  const d = dir({});
  assert.throws(() => build(dir({ a: d, b: d })), /linked twice/);
});
