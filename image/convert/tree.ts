// The file tree a layer builds and the merged image tree. Names are raw bytes
// kept as latin1 strings (one char per byte), so non-UTF-8 names survive and
// string order is byte order. Hard links are one Node object in several
// directories. Directories of a layer tree also carry what overlay semantics
// need: whether the layer had an entry for them, whiteouts and opacity.
import type { WriterNode } from '../erofs/writer';
import { EROFS_NAME_LEN } from '../erofs/writer';

/** A layer's blob; index is set once the blob list is final (-1 until then). */
export interface LayerBlob {
  index: number;
  /** uncompressed offset of each chunk info index */
  uOffsets: number[];
}

export interface FileData {
  blob: LayerBlob | null;
  /** chunk info index per chunk of the file; HOLE (-1) for all-zero chunks */
  chunks: Int32Array;
}

export interface Node extends WriterNode {
  children?: Map<string, Node>;
  data?: FileData;
  /** layer trees: the layer had an entry for this directory (else it only holds entries) */
  explicit?: boolean;
  /** layer trees: `.wh..wh..opq` seen: lower contents are hidden */
  opaque?: boolean;
  /** layer trees: names hidden in lower layers (`.wh.NAME`) */
  whiteouts?: Set<string>;
}

export type Meta = Pick<Node, 'mode' | 'uid' | 'gid' | 'mtime' | 'mtimeNsec' | 'xattrs'>;

/** A directory no entry described: what containerd creates for missing parents. */
export function implicitDir(): Node {
  return { kind: 'dir', mode: 0o755, uid: 0, gid: 0, mtime: 0, mtimeNsec: 0, xattrs: new Map(), children: new Map(), explicit: false };
}

export function copyMeta(to: Node, from: Meta): void {
  to.mode = from.mode;
  to.uid = from.uid;
  to.gid = from.gid;
  to.mtime = from.mtime;
  to.mtimeNsec = from.mtimeNsec;
  to.xattrs = from.xattrs;
}

export const show = (s: string) => Buffer.from(s, 'latin1').toString('utf8');
export const showPath = (parts: string[]) => '/' + parts.map(show).join('/');

export interface CleanPath {
  parts: string[];
  /** why the name was changed, for a warning */
  note?: string;
}

/**
 * Cleans a tar name as a path rooted at the image root, as containerd's
 * apply does: "." and empty components vanish, ".." never climbs above the
 * root, a leading "/" is dropped. "/" and "." are the root itself.
 */
export function cleanPath(raw: Buffer): CleanPath {
  const s = raw.toString('latin1');
  const parts: string[] = [];
  let escaped = false;
  let dotdot = false;
  for (const c of s.split('/')) {
    if (c === '' || c === '.') continue;
    if (c === '..') {
      dotdot = true;
      if (parts.length === 0) escaped = true;
      else parts.pop();
      continue;
    }
    parts.push(c);
  }
  let note: string | undefined;
  if (escaped) note = "climbs above the root with '..'";
  else if (dotdot) note = "contains '..'";
  else if (s.startsWith('/') && parts.length > 0) note = 'is an absolute path';
  return { parts, note };
}

export class TreeBuildError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'TreeBuildError';
  }
}

const MAX_LINKS = 40; // Linux's MAXSYMLINKS

/**
 * One layer's tree, built entry by entry on top of the merged lower layers.
 * Paths resolve through symlinks in their parent components (in this layer or
 * below), like containerd's fs.RootPath, so nothing lands outside the root.
 */
export class LayerTree {
  readonly root: Node = implicitDir();

  constructor(private readonly lower: Node) {
    this.root.whiteouts = new Set();
  }

  /** The node at parts in the view "this layer over the lower ones", without following a final symlink. */
  lookup(parts: string[]): Node | undefined {
    let up: Node | undefined = this.root;
    let low: Node | undefined = this.lower;
    if (parts.length === 0) return this.root;
    for (let i = 0; i < parts.length; i++) {
      const c = parts[i];
      const u: Node | undefined = up?.children?.get(c);
      const hidden = up !== undefined && (up.opaque === true || up.whiteouts?.has(c) === true);
      const l: Node | undefined = hidden ? undefined : low?.children?.get(c);
      const cur = u ?? l;
      if (i === parts.length - 1 || cur === undefined) return cur;
      if (cur.kind !== 'dir') return undefined;
      up = u?.kind === 'dir' ? u : undefined;
      low = u !== undefined && u.kind !== 'dir' ? undefined : l?.kind === 'dir' ? l : undefined;
    }
    return undefined;
  }

  /** Resolves symlinks in a directory path; the result names no symlink. */
  resolveDir(parts: string[]): string[] {
    const queue = [...parts];
    const out: string[] = [];
    let links = 0;
    while (queue.length) {
      const c = queue.shift()!;
      if (c === '' || c === '.') continue;
      if (c === '..') {
        out.pop();
        continue;
      }
      const n = this.lookup([...out, c]);
      if (n?.kind === 'symlink') {
        if (++links > MAX_LINKS) throw new TreeBuildError(`too many levels of symbolic links resolving ${showPath(parts)}`);
        const t = n.target!.toString('latin1');
        if (t.startsWith('/')) out.length = 0;
        queue.unshift(...t.split('/'));
        continue;
      }
      out.push(c);
    }
    return out;
  }

  /** The layer-tree directory at parts (already resolved), creating implicit ones. */
  private dir(parts: string[]): Node {
    let d = this.root;
    for (let i = 0; i < parts.length; i++) {
      const c = parts[i];
      checkName(c, parts);
      let next = d.children!.get(c);
      if (next === undefined) {
        const below = this.lookup(parts.slice(0, i + 1));
        if (below !== undefined && below.kind !== 'dir') {
          throw new TreeBuildError(`${showPath(parts.slice(0, i + 1))} is not a directory in the layers below`);
        }
        next = implicitDir();
        next.whiteouts = new Set();
        d.children!.set(c, next);
      } else if (next.kind !== 'dir') {
        throw new TreeBuildError(`${showPath(parts.slice(0, i + 1))} is not a directory`);
      }
      d = next;
    }
    return d;
  }

  /** Where an entry named parts goes: its resolved parent directory and base name. */
  place(parts: string[]): { dir: Node; name: string; at: string[] } {
    const parent = this.resolveDir(parts.slice(0, -1));
    const name = parts[parts.length - 1];
    checkName(name, parts);
    return { dir: this.dir(parent), name, at: [...parent, name] };
  }

  /** Adds (or replaces) an entry. A directory over a directory only updates its attributes. */
  put(parts: string[], node: Node): string[] {
    const { dir, name, at } = this.place(parts);
    const old = dir.children!.get(name);
    if (node.kind === 'dir' && old?.kind === 'dir') {
      copyMeta(old, node);
      old.explicit = true;
    } else {
      if (node.kind === 'dir') {
        node.children ??= new Map();
        node.whiteouts ??= new Set();
        node.explicit = true;
        // a directory replacing this layer's own non-directory starts empty, as on disk
        if (old !== undefined) node.opaque = true;
      }
      dir.children!.set(name, node);
    }
    return at;
  }

  setRootMeta(meta: Meta): void {
    copyMeta(this.root, meta);
    this.root.explicit = true;
  }

  /** `.wh.NAME` in dirParts: hide NAME of the lower layers. */
  whiteout(dirParts: string[], name: string): void {
    checkName(name, [...dirParts, name]);
    this.dir(this.resolveDir(dirParts)).whiteouts!.add(name);
  }

  /** `.wh..wh..opq` in dirParts: hide all lower contents of the directory. */
  opaque(dirParts: string[]): void {
    this.dir(this.resolveDir(dirParts)).opaque = true;
  }
}

function checkName(c: string, parts: string[]): void {
  if (c.length > EROFS_NAME_LEN) throw new TreeBuildError(`${showPath(parts)}: name component of ${c.length} bytes exceeds ${EROFS_NAME_LEN}`);
  if (c.includes('\0')) throw new TreeBuildError(`${showPath(parts)}: name contains a NUL byte`);
}
