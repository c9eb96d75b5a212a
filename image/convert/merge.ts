// Overlay semantics: lay one layer's tree over the merged tree below it.
// Whiteouts and opacity hide lower entries only; a directory over a directory
// merges (taking the upper attributes if the layer described the directory);
// anything else replaces. The result holds no whiteouts.
import { Node, copyMeta, implicitDir } from './tree';

/** The merged tree before the first layer: an empty root. */
export function emptyRoot(): Node {
  return implicitDir();
}

/** Merges `upper` (a layer tree root) into `merged`, in place. */
export function mergeLayer(merged: Node, upper: Node): void {
  mergeDir(merged, upper);
}

function mergeDir(low: Node, up: Node): void {
  if (up.explicit) copyMeta(low, up);
  const kids = low.children!;
  if (up.opaque) kids.clear();
  else for (const w of up.whiteouts ?? []) kids.delete(w);
  for (const [name, u] of up.children!) {
    const l = kids.get(name);
    if (u.kind === 'dir' && l?.kind === 'dir') mergeDir(l, u);
    else kids.set(name, adopt(u));
  }
}

/** A layer subtree becomes part of the merged tree: drop the layer-only markers. */
function adopt(n: Node): Node {
  const stack = [n];
  while (stack.length) {
    const d = stack.pop()!;
    if (d.kind !== 'dir') continue;
    delete d.whiteouts;
    delete d.opaque;
    delete d.explicit;
    for (const c of d.children!.values()) stack.push(c);
  }
  return n;
}
