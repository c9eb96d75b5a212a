// Mounts what a snapshotter returns, as containerd's mount.All would, with mount(8).
import type { Mount } from '../../proto/types';
import { runOk } from './proc';

export async function mountAll(mounts: Mount[], target: string): Promise<void> {
  for (const m of mounts) {
    const opts = m.options.join(',');
    const type = m.type === 'bind' ? 'none' : m.type;
    await runOk('mount', ['-t', type, ...(opts ? ['-o', opts] : []), m.source, target]);
  }
}

export async function unmount(target: string): Promise<void> {
  await runOk('umount', [target]);
}
