// Which mounts a snapshot needs, as containerd's overlay snapshotter returns
// them (snapshots/overlay/overlay.go). Pure: paths in, mounts out.
import type { Mount } from '../proto/types';
import { Kind, Snapshot } from './info';

export interface Layout {
  /** the directory holding a snapshot's files */
  upper(id: number): string;
  work(id: number): string;
  /** overlay supports index=off (it has /sys/module/overlay/parameters/index) */
  indexOff: boolean;
}

export function mountsFor(s: Snapshot, l: Layout): Mount[] {
  if (s.parentIds.length === 0) {
    // overlay needs at least one lower dir: a lone layer is a bind mount.
    return [{ type: 'bind', source: l.upper(s.id), options: [s.kind === Kind.View ? 'ro' : 'rw', 'rbind'] }];
  }
  const options: string[] = l.indexOff ? ['index=off'] : [];
  if (s.kind === Kind.Active) {
    options.push(`workdir=${l.work(s.id)}`, `upperdir=${l.upper(s.id)}`);
  } else if (s.parentIds.length === 1) {
    return [{ type: 'bind', source: l.upper(s.parentIds[0]), options: ['ro', 'rbind'] }];
  }
  options.push(`lowerdir=${s.parentIds.map((id) => l.upper(id)).join(':')}`);
  return [{ type: 'overlay', source: 'overlay', options }];
}
