// Whether containerd's config sends what lazysnap needs: the proxy plugin on
// lazysnapd's socket, CRI pulls into it with the snapshot annotations, and on
// 2.x (version 3) the exported annotations and the transfer service's
// unpack_config that make `ctr pull` lazy. Pure: text in, findings out.
import { parse } from 'smol-toml';
import { Finding, fail, ok, warn } from './finding';

type Table = Record<string, unknown>;
const table = (v: unknown): Table | undefined => (typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Table) : undefined);

export function checkContainerdConfig(text: string | null, file: string, socket: string): Finding[] {
  const snippet = `[proxy_plugins.lazysnap] type = "snapshot" address = "${socket}" (the README has the whole config for 1.6/1.7 and 2.x)`;
  if (text === null) return [fail('containerd: config', `${file} does not exist: containerd knows no lazysnap`, `create it with ${snippet}`)];
  let doc: Table;
  try {
    doc = parse(text) as Table;
  } catch (e) {
    return [fail('containerd: config', `${file} is not valid TOML: ${(e as Error).message.split('\n')[0]}`, 'fix the syntax; containerd refuses it too')];
  }
  const version = typeof doc.version === 'number' ? doc.version : 1;
  const out: Finding[] = [];
  if (version !== 2 && version !== 3) {
    return [fail('containerd: config', `${file} is config version ${version}`, 'use version = 2 (containerd 1.6/1.7) or version = 3 (2.x)')];
  }
  const proxies = table(doc.proxy_plugins) ?? {};
  const entries = Object.entries(proxies).map(([name, v]) => [name, table(v) ?? {}] as const);
  const mine = entries.find(([, p]) => p.address === socket) ?? entries.find(([name]) => name === 'lazysnap');
  if (!mine) {
    out.push(fail('containerd: proxy plugin', `no [proxy_plugins] entry in ${file}`, `add ${snippet}`));
    return out;
  }
  const [name, plugin] = mine;
  if (plugin.type !== 'snapshot') out.push(fail('containerd: proxy plugin', `[proxy_plugins.${name}] has type = ${JSON.stringify(plugin.type)}`, 'set type = "snapshot"'));
  else if (plugin.address !== socket) {
    out.push(fail('containerd: proxy plugin', `[proxy_plugins.${name}] dials ${JSON.stringify(plugin.address)}, lazysnapd serves ${socket}`, `set address = "${socket}" (or lazysnapd's "address" to match)`));
  } else out.push(ok('containerd: proxy plugin', `[proxy_plugins.${name}] dials ${socket}`));

  // CRI: which snapshotter its pulls unpack into, and whether it labels layers for remote snapshotters
  const plugins = table(doc.plugins) ?? {};
  const cri = version === 3 ? table(plugins['io.containerd.cri.v1.images']) : table(table(plugins['io.containerd.grpc.v1.cri'])?.containerd);
  const where = version === 3 ? '[plugins."io.containerd.cri.v1.images"]' : '[plugins."io.containerd.grpc.v1.cri".containerd]';
  if (cri?.snapshotter !== name) {
    out.push(warn('containerd: CRI snapshotter', `${where} snapshotter is ${JSON.stringify(cri?.snapshotter ?? 'overlayfs (default)')}: Kubernetes pulls do not go to lazysnap`, `set snapshotter = "${name}" in ${where}`));
  } else if (cri.disable_snapshot_annotations !== false) {
    out.push(fail('containerd: CRI snapshot annotations', `${where} does not set disable_snapshot_annotations = false: CRI pulls of nydus images fail (lazysnap cannot locate their blobs)`, `set disable_snapshot_annotations = false in ${where}`));
  } else out.push(ok('containerd: CRI', `pulls into ${name} with snapshot annotations`));

  if (version === 3) {
    const exports = table(plugin.exports);
    if (exports?.enable_remote_snapshot_annotations !== 'true') {
      out.push(warn('containerd: ctr pull', `[proxy_plugins.${name}] exports no enable_remote_snapshot_annotations = "true": 2.x's unpacker sends no image reference, and ctr pull of a nydus image fails`, `add exports = { enable_remote_snapshot_annotations = "true" } to [proxy_plugins.${name}]`));
    }
    const transfer = plugins['io.containerd.transfer.v1.local'];
    const unpack = (table(transfer)?.unpack_config ?? []) as unknown[];
    if (!Array.isArray(unpack) || !unpack.some((u) => table(u)?.snapshotter === name)) {
      out.push(warn('containerd: ctr pull', `no [[plugins."io.containerd.transfer.v1.local".unpack_config]] with snapshotter = "${name}": ctr pull --snapshotter ${name} fails with "no unpack platforms defined"`, `add [[plugins."io.containerd.transfer.v1.local".unpack_config]] platform = "linux/amd64" snapshotter = "${name}"`));
    }
  }
  return out;
}
