// Which mounts a snapshot needs, as containerd's overlay snapshotter returns
// them (snapshots/overlay/overlay.go). Pure: paths in, mounts out.
import type { Mount } from '../proto/types';
import { Kind, Snapshot } from './storage/info';

export interface Layout {
  /** the directory holding a snapshot's files */
  upper(id: number): string;
  work(id: number): string;
  /** overlay supports index=off (it has /sys/module/overlay/parameters/index) */
  indexOff: boolean;
}

/**
 * The mounts of snapshot s. `lowers` replaces the parents' directories
 * (nearest first) when some of them are served otherwise: a lazy image's
 * layers are one EROFS mount.
 */
export function mountsFor(s: Snapshot, l: Layout, lowers?: string[]): Mount[] {
  const lower = lowers ?? s.parentIds.map((id) => l.upper(id));
  if (lower.length === 0) {
    // overlay needs at least one lower dir: a lone layer is a bind mount.
    return [{ type: 'bind', source: l.upper(s.id), options: [s.kind === Kind.View ? 'ro' : 'rw', 'rbind'] }];
  }
  const options: string[] = l.indexOff ? ['index=off'] : [];
  if (s.kind === Kind.Active) {
    options.push(`workdir=${l.work(s.id)}`, `upperdir=${l.upper(s.id)}`);
  } else if (lower.length === 1) {
    return [{ type: 'bind', source: lower[0], options: ['ro', 'rbind'] }];
  }
  options.push(`lowerdir=${lower.join(':')}`);
  return [{ type: 'overlay', source: 'overlay', options }];
}
