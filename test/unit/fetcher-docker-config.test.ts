// docker config.json credentials: auths (base64 user:pass, identitytoken), credHelpers/credsStore via a real helper process.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {
  chainCredentials, decodeAuthEntry, dockerConfigCredentials, helperFor, lookupAuths, normalizeHost, parseDockerConfig,
  runCredentialHelper, staticCredentials, defaultDockerConfigPath, credentialFileExposure,
} from '../../registry/docker-config';
import { makeTempDir, removeTempDir } from '../support/tmp';

/** every test and hook is bounded: a hang fails instead of blocking the run */
const T = { timeout: 30_000 };

const dirs: string[] = [];
const oldPath = process.env.PATH;
after(async () => {
  process.env.PATH = oldPath;
  for (const d of dirs) await removeTempDir(d);
}, T);

const b64 = (s: string) => Buffer.from(s).toString('base64');

test('host normalisation: schemes, paths, docker hub aliases', T, () => {
  assert.equal(normalizeHost('https://index.docker.io/v1/'), 'docker.io');
  assert.equal(normalizeHost('registry-1.docker.io'), 'docker.io');
  assert.equal(normalizeHost('http://127.0.0.1:5001'), '127.0.0.1:5001');
  assert.equal(normalizeHost('Quay.IO'), 'quay.io');
});

test('auths entries: base64 user:pass (colons in passwords), identitytoken, username/password, malformed', T, () => {
  const cfg = parseDockerConfig(JSON.stringify({
    auths: {
      'https://index.docker.io/v1/': { auth: b64('hubuser:pa:ss') },
      '127.0.0.1:5001': { auth: b64('testuser:testpass') },
      'id.example': { auth: '', identitytoken: 'refresh-me' },
      'plain.example': { username: 'u', password: 'p' },
      'bad.example': { auth: b64('nocolon') },
    },
  }));
  assert.deepEqual(lookupAuths(cfg, 'docker.io'), { username: 'hubuser', password: 'pa:ss' });
  assert.deepEqual(lookupAuths(cfg, 'http://127.0.0.1:5001'), { username: 'testuser', password: 'testpass' });
  assert.deepEqual(lookupAuths(cfg, 'id.example'), { identityToken: 'refresh-me', username: undefined });
  assert.deepEqual(lookupAuths(cfg, 'plain.example'), { username: 'u', password: 'p' });
  assert.equal(lookupAuths(cfg, 'nothing.example'), undefined);
  assert.throws(() => lookupAuths(cfg, 'bad.example'), (e: Error) => /bad.example.*not base64 "user:password"/.test(e.message) && !e.message.includes('nocolon'));
  assert.deepEqual(decodeAuthEntry('x', { registrytoken: 'rt' }), { registryToken: 'rt' });
  assert.throws(() => parseDockerConfig('{', 'c.json'), /c.json: not JSON/);
  // V8's JSON errors quote the text near the fault: that text must not reach the message (or the logs)
  const secret = Buffer.from('user:s3cretpassw0rd').toString('base64');
  assert.throws(() => parseDockerConfig(`{"auths":{"r.example":{"auth":${secret}"}}}`, 'c.json'),
    (e: Error) => /^c.json: not JSON/.test(e.message) && !e.message.includes(secret.slice(0, 6)) && !e.message.includes(secret.slice(-6)));
});

test('helper choice: credHelpers beats credsStore', T, () => {
  const cfg = { credHelpers: { 'ecr.example': 'ecr-login' }, credsStore: 'pass' };
  assert.equal(helperFor(cfg, 'ecr.example'), 'ecr-login');
  assert.equal(helperFor(cfg, 'other'), 'pass');
  assert.equal(helperFor({}, 'other'), undefined);
  assert.equal(defaultDockerConfigPath({ DOCKER_CONFIG: '/x' }), '/x/config.json');
  assert.equal(defaultDockerConfigPath({ HOME: '/home/u' }), '/home/u/.docker/config.json');
});

test('credential helpers run with the host on stdin; not-found, <token>, failures', T, async () => {
  const dir = await makeTempDir('credhelper');
  dirs.push(dir);
  const log = path.join(dir, 'stdin.log');
  // A real helper process speaking the docker-credential protocol.
  fs.writeFileSync(path.join(dir, 'docker-credential-lztest'), `#!/bin/sh
[ "$1" = get ] || exit 3
read host
echo "$host" >> ${log}
case "$host" in
  reg.example) echo '{"ServerURL":"reg.example","Username":"helperuser","Secret":"helpersecret"}' ;;
  tok.example) echo '{"ServerURL":"tok.example","Username":"<token>","Secret":"idtok"}' ;;
  https://index.docker.io/v1/) echo '{"Username":"hub","Secret":"hubsecret"}' ;;
  broken.example) echo 'kaboom' >&2; exit 1 ;;
  *) echo 'credentials not found in native keychain'; exit 1 ;;
esac
`, { mode: 0o755 });
  process.env.PATH = `${dir}:${oldPath}`;
  assert.deepEqual(await runCredentialHelper('lztest', 'reg.example'), { username: 'helperuser', password: 'helpersecret' });
  assert.deepEqual(await runCredentialHelper('lztest', 'tok.example'), { identityToken: 'idtok' });
  assert.deepEqual(await runCredentialHelper('lztest', 'docker.io'), { username: 'hub', password: 'hubsecret' });
  assert.equal(await runCredentialHelper('lztest', 'unknown.example'), undefined);
  await assert.rejects(runCredentialHelper('lztest', 'broken.example'), /docker-credential-lztest get for broken.example exited with 1: kaboom/);
  await assert.rejects(runCredentialHelper('absent-helper', 'x'), /cannot run docker-credential-absent-helper/);
  await assert.rejects(runCredentialHelper('../evil', 'x'), /not valid/);
  assert.deepEqual(fs.readFileSync(log, 'utf8').trim().split('\n'), ['reg.example', 'tok.example', 'https://index.docker.io/v1/', 'unknown.example', 'broken.example']);

  // config.json wiring: credHelpers for one host, auths for others, cache, re-read on change.
  const cfgPath = path.join(dir, 'config.json');
  fs.writeFileSync(cfgPath, JSON.stringify({ credHelpers: { 'reg.example': 'lztest' }, auths: { 'file.example': { auth: b64('f:g') } } }));
  const src = dockerConfigCredentials({ path: cfgPath });
  assert.deepEqual(await src('reg.example'), { username: 'helperuser', password: 'helpersecret' });
  assert.deepEqual(await src('reg.example'), { username: 'helperuser', password: 'helpersecret' });
  assert.equal(fs.readFileSync(log, 'utf8').trim().split('\n').length, 6, 'second lookup served from the cache');
  assert.deepEqual(await src('file.example'), { username: 'f', password: 'g' });
  assert.equal(await src('none.example'), undefined);
  fs.writeFileSync(cfgPath, JSON.stringify({ auths: { 'file.example': { auth: b64('f2:g2') } } }));
  fs.utimesSync(cfgPath, new Date(), new Date(Date.now() + 5000));
  assert.deepEqual(await src('file.example'), { username: 'f2', password: 'g2' });
  assert.equal(await dockerConfigCredentials({ path: path.join(dir, 'absent.json') })('x'), undefined);
});

test('static and chained sources', T, async () => {
  const s = chainCredentials(undefined, staticCredentials({ 'https://a.example/v1/': { username: 'a', password: 'b' } }),
    staticCredentials({ 'b.example': { registryToken: 't' } }));
  assert.deepEqual(await s('a.example'), { username: 'a', password: 'b' });
  assert.deepEqual(await s('b.example'), { registryToken: 't' });
  assert.equal(await s('c.example'), undefined);
});

test('a credentials file readable by others is reported; a private or missing one is not', T, () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lazysnap-dcfg-'));
  try {
    const f = path.join(dir, 'config.json');
    assert.equal(credentialFileExposure(f), null, 'missing');
    fs.writeFileSync(f, '{}', { mode: 0o600 });
    fs.chmodSync(f, 0o600);
    assert.equal(credentialFileExposure(f), null, 'private');
    fs.chmodSync(f, 0o644);
    assert.match(credentialFileExposure(f) ?? '', /mode 644: others can read the registry credentials/);
    assert.match(credentialFileExposure(dir) ?? '', /not a regular file/);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
