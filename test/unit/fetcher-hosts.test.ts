// containerd hosts.toml: mirrors in order, server last, capabilities, CA files, headers, override_path.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { apiRoot, defaultServer, hostDirs, isLoopbackHost, parseHostsToml, resolveHosts } from '../../registry/hosts';
import { makeTempDir, removeTempDir } from '../support/tmp';

/** every test and hook is bounded: a hang fails instead of blocking the run */
const T = { timeout: 30_000 };

const dirs: string[] = [];
after(async () => {
  for (const d of dirs) await removeTempDir(d);
}, T);

test('mirrors in file order, then the server; defaults and per-host settings', T, () => {
  const specs = parseHostsToml(`
server = "https://registry.example.com"
capabilities = ["pull", "resolve"]

[host."https://mirror-b.local:5000"]
  capabilities = ["pull"]
  ca = "b-ca.pem"
  skip_verify = false
  [host."https://mirror-b.local:5000".header]
    x-custom = "1"
    X-Multi = ["a", "b"]

[host."http://mirror-a.local/prefix"]
  override_path = true
  ca = ["/abs/a.pem", "rel/b.pem"]
  client = ["c.pem", "k.pem"]
  skip_verify = true
`, 'registry.example.com', '/etc/containerd/certs.d/registry.example.com');
  assert.deepEqual(specs.map((s) => s.url), ['https://mirror-b.local:5000', 'http://mirror-a.local/prefix', 'https://registry.example.com']);
  assert.deepEqual(specs.map((s) => s.mirror), [true, true, false]);
  assert.deepEqual(specs[0].capabilities, ['pull']);
  assert.deepEqual(specs[0].caPaths, ['/etc/containerd/certs.d/registry.example.com/b-ca.pem']);
  assert.deepEqual(specs[0].headers, { 'x-custom': ['1'], 'x-multi': ['a', 'b'] });
  assert.deepEqual(specs[1].capabilities, ['pull', 'resolve', 'push']);
  assert.equal(specs[1].overridePath, true);
  assert.equal(specs[1].skipVerify, true);
  assert.deepEqual(specs[1].caPaths, ['/abs/a.pem', '/etc/containerd/certs.d/registry.example.com/rel/b.pem']);
  assert.deepEqual(specs[1].clientPaths, [['/etc/containerd/certs.d/registry.example.com/c.pem', '/etc/containerd/certs.d/registry.example.com/k.pem']]);
  assert.deepEqual(specs[2].capabilities, ['pull', 'resolve']);
});

test('no server: the registry default is last; errors name the file and key', T, () => {
  const specs = parseHostsToml('[host."http://127.0.0.1:6000"]\n', '127.0.0.1:5001', '/d');
  assert.deepEqual(specs.map((s) => s.url), ['http://127.0.0.1:6000', 'http://127.0.0.1:5001']);
  assert.throws(() => parseHostsToml('[host."https://m"]\ncapabilities = ["fly"]\n', 'r', '/d', 'x/hosts.toml'), /x\/hosts.toml: host."https:\/\/m".capabilities: unknown capability "fly"/);
  assert.throws(() => parseHostsToml('server = 5', 'r', '/d'), /server must be a string/);
  assert.throws(() => parseHostsToml('[host."ftp://m"]', 'r', '/d'), /must be http:\/\/ or https:\/\//);
  assert.throws(() => parseHostsToml('server = "https://x', 'r', '/d', 'f.toml'), /^Error: f.toml: /);
});

test('API roots: /v2 appended unless override_path', T, () => {
  assert.equal(apiRoot('https://m.local:5000', false), 'https://m.local:5000/v2');
  assert.equal(apiRoot('https://m.local/', false), 'https://m.local/v2');
  assert.equal(apiRoot('https://m.local/prefix', false), 'https://m.local/prefix/v2');
  assert.equal(apiRoot('https://m.local/v2', false), 'https://m.local/v2');
  assert.equal(apiRoot('https://m.local/custom/api', true), 'https://m.local/custom/api');
});

test('default servers: https, http only for loopback or when asked; docker.io', T, () => {
  assert.equal(defaultServer('registry.example.com'), 'https://registry.example.com');
  assert.equal(defaultServer('127.0.0.1:5001'), 'http://127.0.0.1:5001');
  assert.equal(defaultServer('localhost:5000'), 'http://localhost:5000');
  assert.equal(defaultServer('[::1]:5000'), 'http://[::1]:5000');
  assert.equal(defaultServer('10.0.0.1:5000'), 'https://10.0.0.1:5000');
  assert.equal(defaultServer('10.0.0.1:5000', true), 'http://10.0.0.1:5000');
  assert.equal(defaultServer('docker.io'), 'https://registry-1.docker.io');
  assert.ok(isLoopbackHost('127.1.2.3:80'));
  assert.ok(!isLoopbackHost('127.example.com'));
});

test('directory lookup order: host_port_, host:port, _default', T, () => {
  assert.deepEqual(hostDirs('/c', '127.0.0.1:5001'), ['/c/127.0.0.1_5001_', '/c/127.0.0.1:5001', '/c/_default']);
  assert.deepEqual(hostDirs('/c', 'docker.io'), ['/c/docker.io', '/c/_default']);
});

test('resolveHosts reads hosts.toml and CA files from config_path, falls back to _default, then to the default host', T, async () => {
  const root = await makeTempDir('hosts');
  dirs.push(root);
  const d = path.join(root, '127.0.0.1:5001');
  fs.mkdirSync(d, { recursive: true });
  fs.writeFileSync(path.join(d, 'ca.pem'), '-----BEGIN CERTIFICATE-----\nX\n-----END CERTIFICATE-----\n');
  fs.writeFileSync(path.join(d, 'hosts.toml'), `
server = "http://127.0.0.1:5001"
[host."https://127.0.0.1:6001"]
  capabilities = ["pull", "resolve"]
  ca = "ca.pem"
  [host."https://127.0.0.1:6001".header]
    x-mirror = "yes"
`);
  const hosts = resolveHosts('127.0.0.1:5001', { configPath: root });
  assert.equal(hosts.length, 2);
  assert.equal(hosts[0].api, 'https://127.0.0.1:6001/v2');
  assert.equal(hosts[0].host, '127.0.0.1:6001');
  assert.equal(hosts[0].origin, 'https://127.0.0.1:6001');
  assert.ok(hosts[0].mirror);
  assert.match(hosts[0].tls.ca![0], /BEGIN CERTIFICATE/);
  assert.deepEqual(hosts[0].headers, { 'x-mirror': ['yes'] });
  assert.equal(hosts[1].api, 'http://127.0.0.1:5001/v2');
  assert.ok(!hosts[1].mirror);

  fs.mkdirSync(path.join(root, '_default'));
  fs.writeFileSync(path.join(root, '_default', 'hosts.toml'), '[host."https://mirror.local"]\n');
  assert.deepEqual(resolveHosts('other.example', { configPath: root }).map((h) => h.api), ['https://mirror.local/v2', 'https://other.example/v2']);
  assert.deepEqual(resolveHosts('127.0.0.1:7000').map((h) => h.api), ['http://127.0.0.1:7000/v2']);

  fs.writeFileSync(path.join(d, 'hosts.toml'), '[host."https://127.0.0.1:6001"]\nca = "missing.pem"\n');
  assert.throws(() => resolveHosts('127.0.0.1:5001', { configPath: root }), /ca of https:\/\/127.0.0.1:6001: cannot read .*missing.pem/);
});
