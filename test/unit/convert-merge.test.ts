// Overlay semantics of the converter, layer by layer through `convert`:
// whiteouts, opaque directories, replacement, implicit parents, symlinked
// parents, hard links into lower layers. Whiteouts never reach the output.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { convert } from '../../image/convert';
import { emptyRoot, mergeLayer } from '../../image/convert/merge';
import { LayerTree, Node } from '../../image/convert/tree';
import { Bootstrap } from '../../image/rafs/bootstrap';
import { ErofsImage } from '../../image/erofs/image';
import { TarSpec, layoutFromTars, readNydusLayout } from '../support/oci-layout';
import { makeTempDir, removeTempDir } from '../support/tmp';

interface Seen {
  mode: number;
  uid: number;
  link?: string;
  nlink: number;
  hardlinkOf?: string;
  mtime: number;
}

export async function convertLayers(dir: string, layers: TarSpec[][], warnings: string[] = []): Promise<{ img: ErofsImage; tree: Map<string, Seen> }> {
  const src = path.join(dir, 'src');
  const dst = path.join(dir, 'dst');
  fs.rmSync(src, { recursive: true, force: true });
  fs.rmSync(dst, { recursive: true, force: true });
  await layoutFromTars(src, layers);
  await convert(`oci:${src}:latest`, `oci:${dst}:nydus`, { jobs: 1, warn: (m) => warnings.push(m) });
  const n = await readNydusLayout(dst, 'nydus');
  const img = new Bootstrap(n.bootstrap).erofs;
  const tree = new Map<string, Seen>();
  for (const e of img.walk()) {
    const i = e.inode;
    tree.set(e.path, { mode: i.mode, uid: i.uid, nlink: i.nlink, mtime: i.mtime, ...(e.hardlinkOf ? { hardlinkOf: e.hardlinkOf } : {}), ...((i.mode & 0o170000) === 0o120000 && !e.hardlinkOf ? { link: img.readlink(i) } : {}) });
  }
  return { img, tree };
}

const d = (name: string, o: Partial<TarSpec> = {}): TarSpec => ({ name, type: 'dir', mode: 0o755, ...o });
const f = (name: string, data = name, o: Partial<TarSpec> = {}): TarSpec => ({ name, data: Buffer.from(data), ...o });

test('merge: whiteouts delete lower entries, opaque directories hide lower contents, none reach the output', async () => {
  const dir = await makeTempDir('merge');
  try {
    const { tree } = await convertLayers(dir, [
      [d('a'), f('a/keep'), f('a/gone'), d('a/sub'), f('a/sub/x'), d('o'), f('o/old1'), d('o/olddir'), f('o/olddir/y'), f('top')],
      [d('a'), f('a/.wh.gone'), f('a/.wh.sub'), d('o', { mode: 0o700 }), f('o/.wh..wh..opq'), f('o/new'), f('.wh.top'), f('.wh.never-existed')],
      [f('a/sub/again')],
    ]);
    const paths = [...tree.keys()].sort();
    assert.deepEqual(paths, ['/', '/a', '/a/keep', '/a/sub', '/a/sub/again', '/o', '/o/new']);
    assert.equal(tree.get('/o')!.mode & 0o777, 0o700, 'opaque dir takes the upper attributes');
    assert.ok(!paths.some((p) => p.includes('.wh.')));
  } finally {
    await removeTempDir(dir);
  }
});

test('merge: replacement across kinds, implicit parents keep lower attributes, same-layer whiteout spares the layer', async () => {
  const dir = await makeTempDir('merge');
  try {
    const { tree } = await convertLayers(dir, [
      [d('p', { mode: 0o711, uid: 7 }), f('p/file'), d('dir2file'), f('dir2file/child'), f('file2dir'), d('keepattrs', { mode: 0o750, uid: 9 })],
      [f('dir2file'), d('file2dir'), f('file2dir/c'), f('keepattrs/new'), f('p/.wh.file'), f('p/file', 'new content')],
    ]);
    assert.equal(tree.get('/dir2file')!.mode & 0o170000, 0o100000);
    assert.ok(!tree.has('/dir2file/child'));
    assert.equal(tree.get('/file2dir')!.mode & 0o170000, 0o040000);
    assert.ok(tree.has('/file2dir/c'));
    assert.deepEqual([tree.get('/keepattrs')!.mode & 0o777, tree.get('/keepattrs')!.uid], [0o750, 9], 'no entry for the dir in layer 2: lower attributes stay');
    assert.ok(tree.has('/p/file'), 'a whiteout hides lower entries only, not the same layer\'s file');
    assert.deepEqual([tree.get('/p')!.mode & 0o777, tree.get('/p')!.uid], [0o711, 7]);
  } finally {
    await removeTempDir(dir);
  }
});

test('merge: hard links share an inode, also into lower layers; nlink counts what is left', async () => {
  const dir = await makeTempDir('merge');
  try {
    const { tree } = await convertLayers(dir, [
      [d('x'), f('x/orig', 'payload'), { name: 'x/l1', type: 'link', linkname: 'x/orig' }, f('x/victim'), { name: 'x/l2', type: 'link', linkname: 'x/victim' }],
      [{ name: 'up', type: 'link', linkname: '/x/orig' }, f('x/.wh.victim'), f('x/orig', 'replaced')],
    ]);
    assert.equal(tree.get('/up')!.nlink, 2, 'x/l1 and up; x/orig was replaced by a new file');
    assert.ok(tree.get('/x/l1')!.hardlinkOf === '/up' || tree.get('/up')!.hardlinkOf === '/x/l1');
    assert.equal(tree.get('/x/orig')!.nlink, 1);
    assert.equal(tree.get('/x/l2')!.nlink, 1, 'its twin was whited out');
  } finally {
    await removeTempDir(dir);
  }
});

test('merge: parents resolve through symlinks (usrmerge /bin -> usr/bin), rooted, as containerd applies them', async () => {
  const dir = await makeTempDir('merge');
  try {
    const warnings: string[] = [];
    const { tree } = await convertLayers(dir, [
      [d('usr'), d('usr/bin'), { name: 'bin', type: 'symlink', linkname: 'usr/bin' }, { name: 'abs', type: 'symlink', linkname: '/usr' }, { name: 'esc', type: 'symlink', linkname: '../../../../usr' }],
      [f('bin/tool'), f('abs/bin/tool2'), f('esc/bin/tool3')],
    ], warnings);
    assert.ok(tree.has('/usr/bin/tool'));
    assert.ok(tree.has('/usr/bin/tool2'));
    assert.ok(tree.has('/usr/bin/tool3'), '.. in a symlink target stops at the root');
    assert.equal(tree.get('/bin')!.link, 'usr/bin', 'the symlink itself is untouched');
  } finally {
    await removeTempDir(dir);
  }
});

test('layer tree: lookup sees this layer over the lower ones, minus whiteouts and opacity', () => {
  const lower = emptyRoot();
  const base = new LayerTree(lower);
  const file = (): Node => ({ kind: 'reg', mode: 0o644, uid: 0, gid: 0, mtime: 0, mtimeNsec: 0, xattrs: new Map(), size: 0 });
  base.put(['a', 'b'], file());
  base.put(['c'], file());
  mergeLayer(lower, base.root);
  const up = new LayerTree(lower);
  assert.ok(up.lookup(['a', 'b']));
  up.whiteout([], 'c');
  assert.equal(up.lookup(['c']), undefined);
  up.opaque(['a']);
  assert.equal(up.lookup(['a', 'b']), undefined);
  assert.ok(up.lookup(['a']), 'the opaque directory itself stays');
  up.put(['c', 'x'], file()); // c is whited out here: a directory may take its place
  assert.throws(() => new LayerTree(lower).put(['c', 'x'], file()), /\/c is not a directory in the layers below/);
});
