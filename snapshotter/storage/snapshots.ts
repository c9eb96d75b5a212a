// Snapshot queries, run inside a MetaStore transaction. The semantics and
// error kinds follow containerd's snapshots/storage (bolt.go).
import type Database from 'better-sqlite3';
import { alreadyExists, excerpt, failedPrecondition, invalidArgument, notFound } from './errors';
import { Info, Kind, LABEL_OVERHEAD_BYTES, Labels, MAX_KEY_BYTES, MAX_LABEL_BYTES, MAX_LABELS_BYTES, Snapshot, Usage, nowUs } from './info';

interface Row {
  id: number;
  key: string;
  parent_id: number | null;
  kind: Kind;
  created_us: number;
  updated_us: number;
  size: number;
  inodes: number;
}

export function validateLabels(labels: Labels) {
  let total = 0;
  for (const [k, v] of Object.entries(labels)) {
    const n = Buffer.byteLength(k) + Buffer.byteLength(v);
    if (n > MAX_LABEL_BYTES) {
      throw invalidArgument(`label key and value length (${n} bytes) greater than maximum size (${MAX_LABEL_BYTES} bytes)`);
    }
    total += n + LABEL_OVERHEAD_BYTES;
  }
  if (total > MAX_LABELS_BYTES) {
    throw invalidArgument(`labels of one snapshot (${total} bytes, ${LABEL_OVERHEAD_BYTES} counted for each label) greater than maximum size (${MAX_LABELS_BYTES} bytes)`);
  }
}

/** A key or name for a new snapshot (see MAX_KEY_BYTES). */
export function validateKey(what: string, key: string) {
  if (!key) throw invalidArgument(`${what} must not be empty`);
  const n = Buffer.byteLength(key);
  if (n > MAX_KEY_BYTES) throw invalidArgument(`${what} ${excerpt(key)} is longer than ${MAX_KEY_BYTES} bytes`);
}

const statements = new WeakMap<Database.Database, ReturnType<typeof prepare>>();

function prepare(db: Database.Database) {
  return {
    byKey: db.prepare<[string], Row>('SELECT * FROM snapshots WHERE key = ?'),
    byId: db.prepare<[number], Row>('SELECT * FROM snapshots WHERE id = ?'),
    all: db.prepare<[], Row>('SELECT * FROM snapshots ORDER BY id'),
    ids: db.prepare<[], { id: number }>('SELECT id FROM snapshots').pluck(),
    hasChild: db.prepare<[number], { one: number }>('SELECT 1 AS one FROM snapshots WHERE parent_id = ? LIMIT 1'),
    // an active or view snapshot anywhere above id: a container (or a mount) on it
    usedAbove: db.prepare<[number, number, number], { one: number }>(
      'WITH RECURSIVE up(id, kind) AS (SELECT id, kind FROM snapshots WHERE parent_id = ? ' +
      'UNION ALL SELECT s.id, s.kind FROM snapshots s JOIN up ON s.parent_id = up.id) ' +
      'SELECT 1 AS one FROM up WHERE kind IN (?, ?) LIMIT 1'),
    insert: db.prepare(
      'INSERT INTO snapshots (key, parent_id, kind, created_us, updated_us) VALUES (@key, @parent_id, @kind, @now, @now)',
    ),
    commit: db.prepare(
      'UPDATE snapshots SET key = @name, kind = @kind, created_us = @now, updated_us = @now, size = @size, inodes = @inodes WHERE id = @id',
    ),
    touch: db.prepare<[number, number]>('UPDATE snapshots SET updated_us = ? WHERE id = ?'),
    remove: db.prepare<[number]>('DELETE FROM snapshots WHERE id = ?'),
    labels: db.prepare<[number], { name: string; value: string }>('SELECT name, value FROM labels WHERE snapshot_id = ?'),
    allLabels: db.prepare<[], { snapshot_id: number; name: string; value: string }>('SELECT * FROM labels'),
    clearLabels: db.prepare<[number]>('DELETE FROM labels WHERE snapshot_id = ?'),
    putLabel: db.prepare<[number, string, string]>('INSERT OR REPLACE INTO labels (snapshot_id, name, value) VALUES (?, ?, ?)'),
  };
}

export class SnapshotTx {
  private readonly q: ReturnType<typeof prepare>;

  constructor(db: Database.Database) {
    let q = statements.get(db);
    if (!q) statements.set(db, (q = prepare(db)));
    this.q = q;
  }

  private row(key: string): Row {
    const r = this.q.byKey.get(key);
    if (!r) throw notFound(`snapshot ${excerpt(key)}`);
    return r;
  }

  private parentIds(r: Row): number[] {
    const ids: number[] = [];
    for (let p = r.parent_id; p !== null; ) {
      ids.push(p);
      const pr = this.q.byId.get(p);
      if (!pr) throw notFound(`parent ${p} of snapshot ${excerpt(r.key)}`);
      p = pr.parent_id;
    }
    return ids;
  }

  private labelsOf(id: number): Labels {
    const out: Labels = {};
    for (const l of this.q.labels.all(id)) out[l.name] = l.value;
    return out;
  }

  private setLabels(id: number, labels: Labels) {
    validateLabels(labels);
    this.q.clearLabels.run(id);
    // As in containerd, an empty value means "no such label".
    for (const [k, v] of Object.entries(labels)) if (v !== "") this.q.putLabel.run(id, k, v);
  }

  private toInfo(r: Row, labels: Labels): Info {
    const parent = r.parent_id === null ? '' : (this.q.byId.get(r.parent_id)?.key ?? '');
    return { name: r.key, parent, kind: r.kind, createdUs: r.created_us, updatedUs: r.updated_us, labels };
  }

  create(kind: Kind.Active | Kind.View, key: string, parent: string, labels: Labels): Snapshot {
    validateKey('snapshot key', key);
    let parentRow: Row | undefined;
    if (parent) {
      parentRow = this.q.byKey.get(parent);
      if (!parentRow) throw notFound(`missing parent "${excerpt(parent)}"`);
      if (parentRow.kind !== Kind.Committed) throw invalidArgument(`parent "${excerpt(parent)}" is not committed snapshot`);
    }
    if (this.q.byKey.get(key)) throw alreadyExists(`snapshot ${excerpt(key)}`);
    const res = this.q.insert.run({ key, parent_id: parentRow?.id ?? null, kind, now: nowUs() });
    const id = Number(res.lastInsertRowid);
    this.setLabels(id, labels);
    return { id, kind, parentIds: parentRow ? [parentRow.id, ...this.parentIds(parentRow)] : [] };
  }

  /**
   * A committed snapshot created directly, for a remote layer whose content
   * is never downloaded: what Prepare + Commit would leave, in one step.
   */
  createCommitted(name: string, parent: string, labels: Labels): Snapshot {
    const s = this.create(Kind.Active, name, parent, labels);
    this.q.commit.run({ id: s.id, name, kind: Kind.Committed, now: nowUs(), size: 0, inodes: 0 });
    return { ...s, kind: Kind.Committed };
  }

  exists(key: string): boolean {
    return this.q.byKey.get(key) !== undefined;
  }

  /** Whether an active or view snapshot (a container's rootfs, a view) has snapshot `id` below it. */
  inUse(id: number): boolean {
    return this.q.usedAbove.get(id, Kind.Active, Kind.View) !== undefined;
  }

  hasChildren(key: string): boolean {
    return this.q.hasChild.get(this.row(key).id) !== undefined;
  }

  /** Ids and keys of a chain, nearest first, with their labels: for finding a bootstrap layer. */
  chain(ids: number[]): { id: number; key: string; labels: Labels }[] {
    return ids.map((id) => {
      const r = this.q.byId.get(id);
      if (!r) throw notFound(`snapshot id ${id}`);
      return { id, key: r.key, labels: this.labelsOf(id) };
    });
  }

  /** An active or view snapshot, for Mounts. */
  get(key: string): Snapshot {
    const r = this.row(key);
    if (r.kind !== Kind.Active && r.kind !== Kind.View) {
      throw failedPrecondition(`requested snapshot ${excerpt(key)} not active or view`);
    }
    return { id: r.id, kind: r.kind, parentIds: this.parentIds(r) };
  }

  /** Any snapshot, with its ancestors. */
  lookup(key: string): Snapshot & { info: Info } {
    const r = this.row(key);
    return { id: r.id, kind: r.kind, parentIds: this.parentIds(r), info: this.toInfo(r, this.labelsOf(r.id)) };
  }

  stat(key: string): Info {
    const r = this.row(key);
    return this.toInfo(r, this.labelsOf(r.id));
  }

  update(info: Info, paths: string[]): Info {
    const r = this.row(info.name);
    let labels = this.labelsOf(r.id);
    if (paths.length === 0) labels = { ...info.labels };
    for (const p of paths) {
      if (p.startsWith('labels.')) {
        const k = p.slice('labels.'.length);
        // containerd stores the given value, and an empty value drops the label.
        if (info.labels[k]) labels[k] = info.labels[k];
        else delete labels[k];
      } else if (p === 'labels') {
        labels = { ...info.labels };
      } else {
        throw invalidArgument(`cannot update "${excerpt(p)}" field on snapshot "${excerpt(info.name)}"`);
      }
    }
    const now = nowUs();
    this.setLabels(r.id, labels);
    this.q.touch.run(now, r.id);
    return this.toInfo({ ...r, updated_us: now }, labels);
  }

  commit(key: string, name: string, usage: Usage, labels: Labels): number {
    validateKey('commit name', name);
    if (this.q.byKey.get(name)) throw alreadyExists(`committed snapshot ${excerpt(name)}`);
    const r = this.q.byKey.get(key);
    if (!r) throw notFound(`failed to get active snapshot "${excerpt(key)}"`);
    if (r.kind !== Kind.Active) throw failedPrecondition(`snapshot "${excerpt(key)}" is not active`);
    this.q.commit.run({ id: r.id, name, kind: Kind.Committed, now: nowUs(), size: usage.size, inodes: usage.inodes });
    this.setLabels(r.id, labels);
    return r.id;
  }

  remove(key: string): { id: number; kind: Kind } {
    const r = this.row(key);
    if (this.q.hasChild.get(r.id)) throw failedPrecondition(`cannot remove snapshot ${excerpt(key)} with child`);
    this.q.remove.run(r.id);
    return { id: r.id, kind: r.kind };
  }

  /** Stored usage of a committed snapshot, or the id to measure for the others. */
  usage(key: string): { id: number; kind: Kind; usage: Usage } {
    const r = this.row(key);
    return { id: r.id, kind: r.kind, usage: { size: r.size, inodes: r.inodes } };
  }

  list(): Info[] {
    const labels = new Map<number, Labels>();
    for (const l of this.q.allLabels.all()) {
      let m = labels.get(l.snapshot_id);
      if (!m) labels.set(l.snapshot_id, (m = {}));
      m[l.name] = l.value;
    }
    const rows = this.q.all.all();
    const keys = new Map(rows.map((r) => [r.id, r.key]));
    return rows.map((r) => ({
      name: r.key,
      parent: r.parent_id === null ? '' : (keys.get(r.parent_id) ?? ''),
      kind: r.kind,
      createdUs: r.created_us,
      updatedUs: r.updated_us,
      labels: labels.get(r.id) ?? {},
    }));
  }

  ids(): Set<number> {
    return new Set(this.q.ids.all() as unknown as number[]);
  }
}
