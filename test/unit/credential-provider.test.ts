// kubelet's credential-provider plugins as lazysnap reads them: the config,
// the matchImages rules (kubelet's documented examples), Go durations, and a
// plugin run for real (a shell script) with its answer cached.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { CredentialProviders, matchImage, parseGoDuration, parseProviderConfig } from '../../registry/credential-provider';

test("matchImages as kubelet's documentation states them", () => {
  const yes: [string, string][] = [
    ['123456789.dkr.ecr.us-east-1.amazonaws.com', '123456789.dkr.ecr.us-east-1.amazonaws.com/app:1'],
    ['*.azurecr.io', 'example.azurecr.io/app'],
    ['gcr.io', 'gcr.io/p/app@sha256:' + 'a'.repeat(64)],
    ['*.*.registry.io', 'abc.app.registry.io/x'],
    ['foo.registry.io:8080/path', 'foo.registry.io:8080/path/app:1'],
    ['k8s.*.io', 'k8s.gcr.io/pause'],
    ['app*.k8s.io', 'app1.k8s.io/x'],
    ['127.0.0.1:5000', '127.0.0.1:5000/test/private'],
  ];
  const no: [string, string][] = [
    ['*.io', 'k8s.gcr.io/x'], // one glob, one domain part
    ['foo.registry.io:8080/path', 'foo.registry.io:8081/path/app'],
    ['foo.registry.io/path', 'foo.registry.io/pathology/app'],
    ['gcr.io', 'eu.gcr.io/x'],
  ];
  for (const [p, i] of yes) assert.ok(matchImage(p, i), `${p} should match ${i}`);
  for (const [p, i] of no) assert.ok(!matchImage(p, i), `${p} should not match ${i}`);
});

test('Go durations', () => {
  assert.equal(parseGoDuration('5m'), 300_000);
  assert.equal(parseGoDuration('1h30m'), 5_400_000);
  assert.equal(parseGoDuration('1.5s'), 1500);
  assert.equal(parseGoDuration('0'), 0);
  assert.throws(() => parseGoDuration('5 minutes'), /bad duration/);
});

test('the config: YAML as kubelet reads it; a wrong kind or apiVersion is one line', () => {
  const ps = parseProviderConfig(`apiVersion: kubelet.config.k8s.io/v1
kind: CredentialProviderConfig
providers:
  - name: ecr-credential-provider
    matchImages: ["*.dkr.ecr.*.amazonaws.com"]
    defaultCacheDuration: "12h"
    apiVersion: credentialprovider.kubelet.k8s.io/v1
    args: [get-credentials]
    env:
      - name: AWS_PROFILE
        value: node
`);
  assert.deepEqual(ps, [{ name: 'ecr-credential-provider', matchImages: ['*.dkr.ecr.*.amazonaws.com'], defaultCacheDurationMs: 43_200_000,
    apiVersion: 'credentialprovider.kubelet.k8s.io/v1', args: ['get-credentials'], env: { AWS_PROFILE: 'node' } }]);
  assert.throws(() => parseProviderConfig('kind: Pod\n'), /not CredentialProviderConfig/);
  assert.throws(() => parseProviderConfig('kind: CredentialProviderConfig\nproviders:\n  - name: x\n    matchImages: [a]\n    apiVersion: v9\n'), /"apiVersion" must be one of/);
});

test('a plugin runs with the request on stdin; its answer is cached for its cacheDuration by its cacheKeyType', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lazysnap-cp-'));
  const log = path.join(dir, 'calls');
  fs.writeFileSync(path.join(dir, 'fake'), `#!/bin/sh
cat >> ${log}; echo >> ${log}
echo '{"kind":"CredentialProviderResponse","apiVersion":"credentialprovider.kubelet.k8s.io/v1","cacheKeyType":"Registry","cacheDuration":"1m","auth":{"reg.example:5000":{"username":"u","password":"'"$SECRET"'"}}}'
`, { mode: 0o755 });
  const ps = new CredentialProviders([{ name: 'fake', matchImages: ['reg.example:5000'], defaultCacheDurationMs: 0, apiVersion: 'credentialprovider.kubelet.k8s.io/v1', args: [], env: { SECRET: 's3' } }], dir);
  assert.deepEqual(await ps.credentialsFor('reg.example:5000/team/app'), { username: 'u', password: 's3' });
  assert.deepEqual(await ps.credentialsFor('reg.example:5000/team/other'), { username: 'u', password: 's3' }, 'cached per registry');
  assert.equal(await ps.credentialsFor('other.example/app'), undefined, 'no provider matches');
  const calls = fs.readFileSync(log, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
  assert.deepEqual(calls, [{ kind: 'CredentialProviderRequest', apiVersion: 'credentialprovider.kubelet.k8s.io/v1', image: 'reg.example:5000/team/app' }]);
  fs.writeFileSync(path.join(dir, 'fake'), '#!/bin/sh\necho broken >&2; exit 3\n', { mode: 0o755 });
  const broken = new CredentialProviders([{ name: 'fake', matchImages: ['reg.example:5000'], defaultCacheDurationMs: 0, apiVersion: 'credentialprovider.kubelet.k8s.io/v1', args: [], env: {} }], dir);
  await assert.rejects(broken.credentialsFor('reg.example:5000/team/app'), /credential provider fake exited 3: broken/);
  fs.rmSync(dir, { recursive: true });
});
