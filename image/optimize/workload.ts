// What `lazysnap optimize` runs: the image's own process (entrypoint + cmd,
// env, working dir, as a runtime would start it) or the command given, and
// how it is started: in its own mount, pid, ipc and uts namespaces, with
// /proc and /dev, rooted in the image. Pure, but for the paths of the tools.
import fs from 'node:fs';
import type { ImageConfig } from '../convert/oci';

export interface Workload {
  argv: string[];
  env: string[];
  cwd: string;
}

export class WorkloadError extends Error {}

const DEFAULT_PATH = 'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

/** The process a container of this image would run: `command` replaces entrypoint + cmd. */
export function workloadOf(config: ImageConfig, command: string[] = []): Workload {
  const c = (config.config ?? {}) as { Entrypoint?: unknown; Cmd?: unknown; Env?: unknown; WorkingDir?: unknown };
  const strings = (v: unknown): string[] => (Array.isArray(v) && v.every((x) => typeof x === 'string') ? v : []);
  const argv = command.length ? command : [...strings(c.Entrypoint), ...strings(c.Cmd)];
  if (argv.length === 0) throw new WorkloadError('the image has no entrypoint or cmd: give the command to run after --');
  const env = strings(c.Env);
  if (!env.some((e) => e.startsWith('PATH='))) env.unshift(DEFAULT_PATH);
  const cwd = typeof c.WorkingDir === 'string' && c.WorkingDir.startsWith('/') ? c.WorkingDir : '/';
  return { argv, env, cwd };
}

/** A tool of the host, by absolute path (the workload's PATH is the image's). */
function hostTool(name: string): string {
  const found = [`/usr/bin/${name}`, `/bin/${name}`, `/usr/sbin/${name}`, `/sbin/${name}`].find((p) => fs.existsSync(p));
  if (!found) throw new WorkloadError(`${name} (util-linux) is not installed`);
  return found;
}

/** PID 1 of the new namespaces: mounts /proc and /dev under the root, then becomes the workload inside it. */
const INIT = 'root=$1; wd=$2; mount=$3; unshare=$4; shift 4; ' +
  '"$mount" -t proc proc "$root/proc" && "$mount" --rbind /dev "$root/dev" || exit 125; ' +
  'exec "$unshare" --root="$root" --wd="$wd" -- "$@"';

/** The command line that runs `w` rooted at `root`; killing its process kills every process of the workload. */
export function workloadCommand(root: string, w: Workload): { file: string; args: string[]; env: Record<string, string> } {
  const unshare = hostTool('unshare');
  const env: Record<string, string> = {};
  for (const e of w.env) {
    const i = e.indexOf('=');
    if (i > 0) env[e.slice(0, i)] = e.slice(i + 1);
  }
  return {
    file: unshare,
    args: ['--mount', '--pid', '--ipc', '--uts', '--propagation', 'private', '--kill-child', '--', '/bin/sh', '-c', INIT, 'lazysnap-optimize',
      root, w.cwd, hostTool('mount'), unshare, ...w.argv],
    env,
  };
}
