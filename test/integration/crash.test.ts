// kill -9 lazysnapd in the middle of a loop of Prepare, Commit and Remove,
// again and again. After each restart the metadata and the directories must
// agree; after Cleanup no directory is orphaned; and containerd's suite
// still passes on the survivor.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { makeTempDir, removeTempDir } from '../support/tmp';
import { startLazysnapd } from '../support/lazysnapd';
import { SnapshotsClient } from '../support/snapshots-client';
import { runConformance } from '../support/conformance';

const CYCLES = 12;
let cleanup: (() => Promise<void>)[] = [];
after(async () => {
  for (const f of cleanup.reverse()) await f();
});

/** Random Prepare/Commit/Remove traffic until the connection dies. */
async function churn(c: SnapshotsClient, tag: string, counts: { ok: number; err: number }) {
  const committed: string[] = [];
  for (let i = 0; ; i++) {
    const key = `${tag}-a${i}`;
    try {
      const parent = committed.length && Math.random() < 0.7 ? committed[Math.floor(Math.random() * committed.length)] : '';
      await c.prepare(key, parent, { n: String(i) });
      if (Math.random() < 0.6) {
        await c.commit(`${tag}-C${i}`, key, { committed: 'yes' });
        committed.push(`${tag}-C${i}`);
      } else {
        await c.remove(key);
      }
      if (committed.length > 4 && Math.random() < 0.3) {
        const victim = committed.pop()!;
        await c.remove(victim).catch(() => committed.push(victim)); // may have children
      }
      counts.ok++;
    } catch (e) {
      const code = (e as { code?: number }).code;
      if (code === 14 || code === 1 || code === 4) return; // UNAVAILABLE/CANCELLED/DEADLINE: the daemon died
      counts.err++;
      throw e;
    }
  }
}

interface Row {
  id: number;
  key: string;
  kind: number;
  parent_id: number | null;
}

function checkConsistent(root: string, allowOrphans: boolean) {
  const db = new Database(path.join(root, 'metadata.db'), { readonly: true, fileMustExist: true });
  try {
    assert.equal(db.pragma('integrity_check', { simple: true }), 'ok');
    assert.deepEqual(db.pragma('foreign_key_check'), []);
    const rows = db.prepare('SELECT id, key, kind, parent_id FROM snapshots').all() as Row[];
    const ids = new Set(rows.map((r) => r.id));
    const parentKinds = new Map(rows.map((r) => [r.id, r.kind]));
    for (const r of rows) {
      const d = path.join(root, 'snapshots', String(r.id));
      assert.ok(fs.existsSync(path.join(d, 'fs')), `snapshot ${r.key} (id ${r.id}) has its fs directory`);
      if (r.kind === 2) assert.ok(fs.existsSync(path.join(d, 'work')), `active ${r.key} has its work directory`);
      if (r.parent_id !== null) assert.equal(parentKinds.get(r.parent_id), 3, `parent of ${r.key} is committed`);
    }
    const dirs = fs.readdirSync(path.join(root, 'snapshots'));
    const orphans = dirs.filter((n) => !(/^\d+$/.test(n) && ids.has(Number(n))));
    if (!allowOrphans) assert.deepEqual(orphans, [], 'no orphaned directories after Cleanup');
    return { rows: rows.length, orphans: orphans.length };
  } finally {
    db.close();
  }
}

test(`kill -9 during Prepare/Commit/Remove, ${CYCLES} times: metadata stays consistent`, { timeout: 25 * 60_000 }, async () => {
  const dir = await makeTempDir('crash');
  cleanup.push(() => removeTempDir(dir));
  const root = path.join(dir, 'root');
  const address = path.join(dir, 'snap.sock');
  const counts = { ok: 0, err: 0 };
  let orphansSeen = 0;
  for (let cycle = 0; cycle < CYCLES; cycle++) {
    const d = await startLazysnapd({ root, address });
    if (cycle > 0) checkConsistent(root, true);
    const clients = [0, 1, 2].map(() => new SnapshotsClient(address));
    const loops = clients.map((c, n) => churn(c, `c${cycle}.${n}`, counts));
    await new Promise((r) => setTimeout(r, 100 + Math.random() * 400));
    await d.kill9();
    await Promise.all(loops);
    clients.forEach((c) => c.close());
    orphansSeen += checkConsistent(root, true).orphans;
  }
  assert.equal(counts.err, 0, 'no request failed with anything but the connection dying');
  assert.ok(counts.ok > CYCLES * 5, `the loop made progress (${counts.ok} operations)`);

  const d = await startLazysnapd({ root, address });
  cleanup.push(() => d.stop());
  const c = new SnapshotsClient(address);
  await c.cleanup();
  const state = checkConsistent(root, false);
  console.log(`crash: cycles=${CYCLES} operations=${counts.ok} snapshots=${state.rows} orphans_before_cleanup=${orphansSeen}`);

  const r = await runConformance(address);
  assert.equal(r.failed, 0, r.output.slice(-6000));
  assert.equal(r.passed, 19);
  await c.cleanup();
  checkConsistent(root, false);
  c.close();
});
