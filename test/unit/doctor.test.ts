// The pure parts of `lazysnap doctor`: containerd configs as 1.6/1.7 and 2.x
// read them, and kernel build configs.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { checkContainerdConfig } from '../../doctor/containerd';
import { parseKernelConfig, optionState } from '../../doctor/kernel-config';
import { formatFindings } from '../../doctor/finding';

const SOCK = '/run/lazysnap/snapshotter.sock';
const verdicts = (text: string | null) => checkContainerdConfig(text, '/etc/containerd/config.toml', SOCK).map((f) => `${f.verdict} ${f.check}`);

test("containerd 1.6/1.7 (version 2): the README's config passes", () => {
  const v2 = `version = 2
[proxy_plugins.lazysnap]
  type = "snapshot"
  address = "${SOCK}"
[plugins."io.containerd.grpc.v1.cri".containerd]
  snapshotter = "lazysnap"
  disable_snapshot_annotations = false
`;
  assert.deepEqual(verdicts(v2), ['ok containerd: proxy plugin', 'ok containerd: CRI']);
  assert.deepEqual(verdicts(v2.replace('disable_snapshot_annotations = false', '')), ['ok containerd: proxy plugin', 'fail containerd: CRI snapshot annotations']);
  assert.deepEqual(verdicts(v2.replace('snapshotter = "lazysnap"', '')), ['ok containerd: proxy plugin', 'warn containerd: CRI snapshotter']);
  const other = checkContainerdConfig(v2.replace(SOCK, '/run/other.sock'), 'f', SOCK)[0];
  assert.equal(other.verdict, 'fail');
  assert.match(other.detail, /dials "\/run\/other.sock", lazysnapd serves \/run\/lazysnap\/snapshotter.sock/);
});

test('containerd 2.x (version 3): CRI images plugin, exports and the transfer unpack_config', () => {
  const v3 = `version = 3
[proxy_plugins.lazysnap]
  type = "snapshot"
  address = "${SOCK}"
  exports = { enable_remote_snapshot_annotations = "true" }
[plugins."io.containerd.cri.v1.images"]
  snapshotter = "lazysnap"
  disable_snapshot_annotations = false
[[plugins."io.containerd.transfer.v1.local".unpack_config]]
  platform = "linux/amd64"
  snapshotter = "lazysnap"
`;
  assert.deepEqual(verdicts(v3), ['ok containerd: proxy plugin', 'ok containerd: CRI']);
  assert.deepEqual(verdicts(v3.replace(/  exports = .*\n/, '')), ['ok containerd: proxy plugin', 'ok containerd: CRI', 'warn containerd: ctr pull']);
  assert.deepEqual(verdicts(v3.replace(/\[\[plugins."io.containerd.transfer[\s\S]*$/, '')), ['ok containerd: proxy plugin', 'ok containerd: CRI', 'warn containerd: ctr pull']);
  // a version 2 section in a version 3 file is not where 2.x looks
  assert.deepEqual(verdicts(v3.replace('io.containerd.cri.v1.images', 'io.containerd.grpc.v1.cri')), ['ok containerd: proxy plugin', 'warn containerd: CRI snapshotter', ]);
});

test('no file, bad TOML, version 1, no proxy plugin: each one failing line with its fix', () => {
  for (const [text, re] of [
    [null, /does not exist/],
    ['version = ', /not valid TOML/],
    ['[plugins.cri]\nx = 1', /config version 1/],
    ['version = 2', /no \[proxy_plugins\] entry/],
  ] as const) {
    const f = checkContainerdConfig(text, '/etc/containerd/config.toml', SOCK);
    assert.equal(f.length, 1, String(text));
    assert.equal(f[0].verdict, 'fail');
    assert.match(f[0].detail, re);
    assert.ok(f[0].fix, 'a fix');
    assert.ok(!formatFindings(f).split('\n')[0].includes('\n'));
  }
});

test('kernel build configs: built in, module, not set', () => {
  const c = parseKernelConfig('CONFIG_EROFS_FS=y\nCONFIG_CACHEFILES=m\n# CONFIG_CACHEFILES_ONDEMAND is not set\nCONFIG_X="a b"\n');
  assert.equal(optionState(c, 'CONFIG_EROFS_FS'), 'built in');
  assert.equal(optionState(c, 'CONFIG_CACHEFILES'), 'module');
  assert.equal(optionState(c, 'CONFIG_CACHEFILES_ONDEMAND'), 'not set');
  assert.equal(c.get('CONFIG_X'), '"a b"');
});
