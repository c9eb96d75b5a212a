// The layout's promises, checked on the source: folders import each other in
// one direction only (no cycle, type-only imports included), and the worker's
// folders never reach into lazysnapd's.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';

const REPO = path.resolve(__dirname, '../../..');
const PRODUCTION = ['admin', 'cmd', 'config', 'content', 'image', 'log', 'mounts', 'native', 'proto', 'registry', 'snapshotter', 'supervisor', 'worker'];

function sources(dir: string): string[] {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) return e.name === 'node_modules' || e.name === 'build' ? [] : sources(p);
    return e.name.endsWith('.ts') && !e.name.endsWith('.d.ts') ? [p] : [];
  });
}

/** Folder → folders it imports (relative paths from the repository root). */
function folderGraph(): Map<string, Set<string>> {
  const g = new Map<string, Set<string>>();
  for (const top of PRODUCTION) {
    for (const file of sources(path.join(REPO, top))) {
      const from = path.relative(REPO, path.dirname(file));
      const text = fs.readFileSync(file, 'utf8');
      for (const m of text.matchAll(/(?:from\s+|import\s*\(|require\()\s*['"](\.{1,2}\/[^'"]+)['"]/g)) {
        const target = path.resolve(path.dirname(file), m[1]);
        const isDir = fs.existsSync(target) && fs.statSync(target).isDirectory();
        const to = path.relative(REPO, isDir ? target : path.dirname(target));
        if (to === from) continue;
        if (!g.has(from)) g.set(from, new Set());
        g.get(from)!.add(to);
      }
    }
  }
  return g;
}

function findCycle(g: Map<string, Set<string>>): string[] | null {
  const state = new Map<string, 'open' | 'done'>();
  const stack: string[] = [];
  const visit = (n: string): string[] | null => {
    if (state.get(n) === 'done') return null;
    if (state.get(n) === 'open') return [...stack.slice(stack.indexOf(n)), n];
    state.set(n, 'open');
    stack.push(n);
    for (const m of g.get(n) ?? []) {
      const c = visit(m);
      if (c) return c;
    }
    stack.pop();
    state.set(n, 'done');
    return null;
  };
  for (const n of g.keys()) {
    const c = visit(n);
    if (c) return c;
  }
  return null;
}

test('no import cycle between folders', () => {
  const g = folderGraph();
  assert.ok(g.size >= 10, `the graph covers the folders (${g.size})`);
  const cycle = findCycle(g);
  assert.equal(cycle, null, `cycle: ${cycle?.join(' → ')}`);
});

test('the cycle check finds a planted cycle', () => {
  const g = new Map([['a', new Set(['b'])], ['b', new Set(['c'])], ['c', new Set(['a'])]]);
  assert.deepEqual(findCycle(g), ['a', 'b', 'c', 'a']);
});

test('the READ path stays in worker/ → content/ → registry/ → native/, below lazysnapd', () => {
  const g = folderGraph();
  const lazysnapd = ['supervisor', 'mounts', 'admin', 'snapshotter'];
  for (const dir of ['worker', 'content', 'content/remote', 'registry']) {
    for (const to of g.get(dir) ?? []) {
      // the worker reads lazysnapd's metadata through storage/, read-only
      if (dir === 'worker' && to === 'snapshotter/storage') continue;
      assert.ok(!lazysnapd.some((d) => to === d || to.startsWith(`${d}/`)), `${dir} imports ${to}`);
    }
  }
  for (const to of g.get('registry') ?? []) assert.ok(!to.startsWith('content') && !to.startsWith('worker'), `registry imports ${to}`);
});
