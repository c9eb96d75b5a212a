// `lazysnap optimize`: what an image's start opens, found by running it once.
// The image is converted into a scratch layout, its blobs unpacked into
// EROFS devices, mounted (EROFS file-backed, an overlay for writes) and its
// process run there for a while; the files it opens, in first-open order,
// become the prefetch table of the image converted again to DST, so a node
// that never ran it starts it as one that did (like stargz's
// `ctr-remote image optimize`).
import { execFile, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { convert, type ConvertOptions } from '../convert';
import { openNydusLayout } from '../convert/nydus-layout';
import { LayoutSource, parseLayoutRef } from '../convert/oci';
import { fileBackedMount } from '../../mounts/blob-files';
import { mountFs } from '../../native';
import { unpackBlobFiles } from './blob-files';
import { OpenRecorder } from './open-recorder';
import { workloadCommand, workloadOf, type Workload } from './workload';

const exec = promisify(execFile);
const TAG = 'optimize';

export interface RecordOptions extends ConvertOptions {
  /** replaces the image's entrypoint and cmd */
  command?: string[];
  /** the workload is stopped after this long (a server never exits) */
  timeoutMs: number;
  /** told each step */
  say?(line: string): void;
}

export interface RecordedStart {
  workload: Workload;
  /** files of the image it opened, first open first */
  paths: string[];
  /** its exit code, the signal that killed it, or null if it was stopped at the timeout */
  exitCode: number | string | null;
  ms: number;
  overflowed: boolean;
}

/** Runs the image once and records the files its start opens. Needs root (mounts, fanotify). */
export async function recordStart(src: string, o: RecordOptions): Promise<RecordedStart> {
  const say = o.say ?? (() => undefined);
  const tmp = fs.mkdtempSync(path.join(o.tmpDir ?? os.tmpdir(), 'lazysnap-optimize-'));
  const lower = path.join(tmp, 'lower');
  const merged = path.join(tmp, 'merged');
  const mounted: string[] = [];
  let recorder: OpenRecorder | undefined;
  try {
    const layout = path.join(tmp, 'layout');
    say(`converting ${src} to run it`);
    await convert(src, `oci:${layout}:${TAG}`, { ...o, prefetchPaths: undefined, onLayerStart: undefined, onLayerBytes: undefined, onLayerDone: undefined });
    const ref = `oci:${layout}:${TAG}`;
    const img = await openNydusLayout(ref);
    const config = (await new LayoutSource(parseLayoutRef(ref)!).resolve()).config;
    const workload = workloadOf(config, o.command);
    const boot = path.join(tmp, 'image.boot');
    fs.writeFileSync(boot, img.bootstrap);
    const devices = await unpackBlobFiles(img.bootstrap, img.blobsDir, path.join(tmp, 'devices'));
    for (const d of [lower, merged, path.join(tmp, 'upper'), path.join(tmp, 'work')]) fs.mkdirSync(d);
    const m = fileBackedMount({ devices });
    await mountFs(boot, lower, 'erofs', m.flags, m.data);
    mounted.unshift(lower);
    await mountFs('overlay', merged, 'overlay', 0, `lowerdir=${lower},upperdir=${path.join(tmp, 'upper')},workdir=${path.join(tmp, 'work')}`);
    mounted.unshift(merged);
    for (const d of ['proc', 'dev']) fs.mkdirSync(path.join(merged, d), { recursive: true });

    const cmd = workloadCommand(merged, workload);
    recorder = new OpenRecorder(merged);
    say(`running ${JSON.stringify(workload.argv)} for at most ${o.timeoutMs} ms`);
    const t0 = Date.now();
    let exitCode: number | string | null;
    try {
      exitCode = await new Promise<number | string | null>((resolve, reject) => {
        const child = spawn(cmd.file, cmd.args, { env: cmd.env, stdio: ['ignore', 2, 2] });
        let stopped = false;
        const timer = setTimeout(() => {
          stopped = true;
          child.kill('SIGKILL'); // --kill-child takes the whole pid namespace with it
        }, o.timeoutMs);
        child.on('error', (e) => {
          clearTimeout(timer);
          reject(e);
        });
        child.on('exit', (code, signal) => {
          clearTimeout(timer);
          resolve(stopped ? null : code ?? signal);
        });
      });
    } finally {
      // opens queued as it ended are read before the group goes
      await new Promise((r) => setTimeout(r, 100));
    }
    const r = recorder;
    recorder = undefined;
    const paths = r.stop();
    return { workload, paths, exitCode, ms: Date.now() - t0, overflowed: r.overflowed };
  } finally {
    try {
      recorder?.stop();
    } catch {
      // the group goes with the process anyway; the mounts must not stay
    }
    const left: string[] = [];
    for (const mp of mounted) {
      await exec('umount', [mp]).catch(() => exec('umount', ['-l', mp])).catch(() => left.push(mp));
    }
    // never delete through a mount that is still there (the overlay's upper would be the least of it)
    if (left.length === 0) fs.rmSync(tmp, { recursive: true, force: true });
    else say(`could not unmount ${left.join(', ')}: left ${tmp} in place`);
  }
}
