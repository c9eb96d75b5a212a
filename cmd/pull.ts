// `lazysnap pull REF`: the CLI side of pull/pull.ts.
import { RegistryClient } from '../registry/client';
import { chainCredentials, dockerConfigCredentials, staticCredentials } from '../registry/docker-config';
import { parseImageRef, parsePlatform } from '../registry/manifest';
import { pullImage, PullError } from '../pull/pull';

export interface PullCliOptions {
  address: string;
  namespace: string;
  snapshotter: string;
  hostsDir: string;
  plainHttp?: boolean;
  user?: string;
  platform: string;
  json?: boolean;
}

export async function pullCommand(ref: string, o: PullCliOptions): Promise<number> {
  const host = parseImageRef(ref).host;
  let mine;
  if (o.user !== undefined) {
    const i = o.user.indexOf(':');
    if (i < 0) throw new PullError('--user wants USER:PASS');
    mine = staticCredentials({ [host]: { username: o.user.slice(0, i), password: o.user.slice(i + 1) } });
  }
  const registry = new RegistryClient({ hostsDir: o.hostsDir, plainHttp: o.plainHttp, credentials: chainCredentials(mine, dockerConfigCredentials()) });
  try {
    const r = await pullImage({
      ref, address: o.address, namespace: o.namespace, snapshotter: o.snapshotter, platform: parsePlatform(o.platform), registry,
      progress: o.json ? undefined : (line) => process.stderr.write(`${line}\n`),
    });
    if (o.json) process.stdout.write(`${JSON.stringify(r, null, 2)}\n`);
    else process.stdout.write(`${r.name}: pulled; run it with ctr run --snapshotter ${o.snapshotter} ${r.name} ID\n`);
    return 0;
  } finally {
    await registry.close();
  }
}
