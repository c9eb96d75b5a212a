// A private image under Kubernetes, in the UML guest through fscache (and,
// with LAZYSNAP_TEST_BACKEND=fanotify, on the host's own kernel: see
// integration/cri-private-fanotify): the registry wants a token for the image's repository (only the
// pause image is public); the node has no docker config.json. kubelet's
// pull goes through lazysnapd's CRI image proxy with the pull secret's
// credentials; containerd pulls manifest, config and bootstrap with them;
// the container's reads fetch the blobs lazily with the same credentials,
// kept per repository (0600, never logged).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { join } from 'node:path';
import { requireBinaries } from '../support/bins';
import { CriClient } from '../support/cri';
import { buildPauseImage, type GuestContainerd } from '../support/guest-containerd';
import { startCriNode, type CriNode } from '../support/cri-node';
import { busyboxDataTree, pushOciLayout, randomFiles } from '../support/images';
import type { Lazysnapd } from '../support/lazysnapd';
import { startRegistry, type Registry } from '../support/registry';
import { startTokenServer, type TokenServer } from '../support/token-server';
import { makeTempDir, removeTempDir } from '../support/tmp';
import { nydusFromDir } from '../support/nydus-from-dir';
import { guestDir, requireFscacheKernel } from '../support/guest';

const FANOTIFY = process.env.LAZYSNAP_TEST_BACKEND === 'fanotify';
const USER = 'kube-puller';
const PASS = 'pull-secret-1f3e9a';
let dir = '';
let ts: TokenServer | undefined;
let registry: Registry | undefined;
let node: CriNode | undefined;
let lazysnapd: Lazysnapd | undefined;
let ctrd: GuestContainerd | undefined;
let viaProxy: CriClient | undefined;
let ref = '';
let ref2 = '';
const digests: string[] = [];
const digests2: string[] = [];

before(async () => {
  requireBinaries(['containerd', 'ctr', 'shim', 'runc', 'registry', 'busybox']);
  const fscacheDir = FANOTIFY ? '' : requireFscacheKernel();
  dir = FANOTIFY ? await makeTempDir('cri-private') : guestDir('cri-private');
  fs.mkdirSync(join(dir, 'token'));
  ts = await startTokenServer(join(dir, 'token'), { users: { [USER]: PASS }, publicRepos: ['test/pause'] });
  registry = await startRegistry({ dir: join(dir, 'registry'), authConfig: ts.registryAuth() });
  const src = join(dir, 'src');
  const names = ['f0', 'f1', 'f2', 'f3'];
  digests.push(...busyboxDataTree(src, ['sh', 'sha256sum'], names, 3 << 20));
  const img = await nydusFromDir(src, join(dir, 'img'));
  await pushOciLayout(img.split(':')[1], 'nydus', registry.url, 'test/private:1', { token: ts.sign(['repository:test/private:pull,push'], USER) });
  ref = `${registry.host}/test/private:1`;
  // the same files with other data: blobs of its own, which nothing has fetched yet
  digests2.push(...randomFiles(join(src, 'data'), names, 3 << 20));
  const img2 = await nydusFromDir(src, join(dir, 'img2'));
  await pushOciLayout(img2.split(':')[1], 'nydus', registry.url, 'test/private2:1', { token: ts.sign(['repository:test/private2:pull,push'], USER) });
  ref2 = `${registry.host}/test/private2:1`;
  // kubelet's credential-provider plugin protocol, with a plugin that knows the pull secret
  const plugins = join(dir, 'plugins');
  fs.mkdirSync(plugins);
  fs.writeFileSync(join(plugins, 'test-provider'), `#!/bin/sh
cat >> ${join(dir, 'provider-calls')}; echo >> ${join(dir, 'provider-calls')}
echo '{"kind":"CredentialProviderResponse","apiVersion":"credentialprovider.kubelet.k8s.io/v1","cacheKeyType":"Image","cacheDuration":"5m","auth":{"${registry.host}/test/private2":{"username":"${USER}","password":"${PASS}"}}}'
`, { mode: 0o755 });
  fs.writeFileSync(join(dir, 'providers.yaml'), `apiVersion: kubelet.config.k8s.io/v1
kind: CredentialProviderConfig
providers:
  - name: test-provider
    matchImages: ["${registry.host}/test/private2"]
    defaultCacheDuration: "1m"
    apiVersion: credentialprovider.kubelet.k8s.io/v1
`);
  const pause = await buildPauseImage(join(dir, 'pause'));
  await pushOciLayout(pause.layoutDir, pause.ref, registry.url, 'test/pause:1', { token: ts.sign(['repository:test/pause:pull,push'], USER) });
  node = await startCriNode({
    dir,
    registryHost: registry.host,
    sandboxImage: `${registry.host}/test/pause:1`,
    config: (p) =>
      `root = "${p.root}"\n` +
      (FANOTIFY
        ? `[fscache]\nenabled = true\nbackend = "fanotify"\nprefetch = "off"\n`
        : `[fscache]\nenabled = true\ncache_dir = "${join(fscacheDir, 'cache-private')}"\ntag = "lazysnap-private"\nprefetch = "off"\n`) +
      `[registry]\nplain_http = true\nconfig_path = "${p.certsDir}"\ndocker_config = "${join(dir, 'no-such-config.json')}"\n` +
      `credential_provider_config = "${join(dir, 'providers.yaml')}"\ncredential_provider_bin_dir = "${join(dir, 'plugins')}"\n` +
      `[cri]\nimage_proxy_address = "${join(dir, 'cri-image.sock')}"\ncontainerd_address = "${p.containerdSocket}"\n`,
  });
  lazysnapd = node.lazysnapd;
  ctrd = node.ctrd;
  viaProxy = new CriClient(join(dir, 'cri-image.sock'));
}, { timeout: 20 * 60_000 });

after(async () => {
  viaProxy?.close();
  await node?.stop();
  for (const f of [registry?.stop, ts?.stop]) await f?.().catch(() => {});
  if (dir && FANOTIFY) await removeTempDir(dir);
  else if (dir) fs.rmSync(dir, { recursive: true, force: true });
}, { timeout: 120_000 });

const logs = async () => (node ? node.logs() : '');

test('a private image pulled through the CRI image proxy with its pull secret runs, its blobs read lazily with the same credentials', { timeout: 600_000 }, async () => {
  // without credentials the registry refuses: the image is private
  await assert.rejects(ctrd!.cri.pullImage(ref), /401|unauthorized|authoriz/i);
  // kubelet's pull, with the pull secret, through the proxy
  const pulled = await viaProxy!.pullImage(ref, { username: USER, password: PASS });
  assert.match(pulled, /^sha256:[0-9a-f]{64}$/);
  // the proxy passes every ImageService call on: the image is in containerd
  assert.ok((await viaProxy!.imageStatus(ref))?.id, 'ImageStatus through the proxy');
  const r = await ctrd!.cri.runToCompletion(ref, ['/bin/sh', '-c', 'sha256sum /data/*'], { logRoot: join(dir, 'pod-logs'), name: 'private' });
  assert.equal(r.exitCode, 0, `${r.logs}${await logs()}`);
  for (let i = 0; i < digests.length; i++) assert.match(r.stdout, new RegExp(`^${digests[i]}  /data/f${i}$`, 'm'));
  // the worker fetched the blobs itself (its user agent), with a token the pull secret got
  const lines = fs.readFileSync(registry!.logPath, 'utf8').split('\n');
  assert.ok(lines.some((l) => l.includes('lazysnap/') && /"GET \/v2\/test\/private\/blobs\/sha256:[0-9a-f]+ HTTP\/1.1" 20[06]/.test(l)), 'lazysnap read blobs of the private repository');
  assert.ok(ts!.requests.some((q) => q.user === USER && q.granted && q.scopes.some((s) => s.startsWith('repository:test/private:'))), 'a token for the private repository, for its user');
  // kept owner-only, and never logged
  const credDir = join(lazysnapd!.root, 'credentials');
  assert.equal(fs.statSync(credDir).mode & 0o777, 0o700);
  const files = fs.readdirSync(credDir);
  assert.equal(files.length, 1);
  assert.equal(fs.statSync(join(credDir, files[0])).mode & 0o777, 0o600);
  assert.ok(!fs.readFileSync(lazysnapd!.logPath, 'utf8').includes(PASS), 'the password is in no log line');
  assert.match(fs.readFileSync(lazysnapd!.logPath, 'utf8'), /kept the credentials of a CRI pull/);
});

test("kubelet's credential-provider plugins, the second source: an image pulled without the proxy reads lazily with the plugin's credentials", { timeout: 600_000 }, async () => {
  // pulled straight from containerd (kubelet without the proxy): lazysnap never sees these credentials
  await ctrd!.cri.pullImage(ref2, { username: USER, password: PASS });
  const r = await ctrd!.cri.runToCompletion(ref2, ['/bin/sh', '-c', 'sha256sum /data/*'], { logRoot: join(dir, 'pod-logs'), name: 'private2' });
  assert.equal(r.exitCode, 0, `${r.logs}${await logs()}`);
  for (let i = 0; i < digests2.length; i++) assert.match(r.stdout, new RegExp(`^${digests2[i]}  /data/f${i}$`, 'm'));
  const calls = fs.readFileSync(join(dir, 'provider-calls'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
  assert.deepEqual(calls[0], { kind: 'CredentialProviderRequest', apiVersion: 'credentialprovider.kubelet.k8s.io/v1', image: `${registry!.host}/test/private2` });
  assert.ok(calls.length <= 2, `answers are cached (${calls.length} calls: one per worker at most)`);
  assert.ok(ts!.requests.some((q) => q.user === USER && q.granted && q.scopes.some((sc) => sc.startsWith('repository:test/private2:'))));
  assert.equal(fs.readdirSync(join(lazysnapd!.root, 'credentials')).length, 1, 'nothing kept for it: the proxy never saw this pull');
});
