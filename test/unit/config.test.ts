import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ConfigError, DEFAULT_CONFIG_TOML, loadConfig, parseConfig, parseListenAddress } from '../../config/config';

test('no file gives the embedded defaults, which parse', () => {
  const c = loadConfig();
  assert.equal(c.root, '/var/lib/lazysnap');
  assert.equal(c.address, '/run/lazysnap/snapshotter.sock');
  assert.equal(c.log.level, 'info');
  assert.equal(c.fscache.backend, 'auto');
  assert.deepEqual(parseConfig(DEFAULT_CONFIG_TOML), c);
});

test('keys override the defaults, nested tables merge', () => {
  const c = parseConfig('root = "/x"\n[log]\nlevel = "debug"\n');
  assert.equal(c.root, '/x');
  assert.equal(c.address, '/run/lazysnap/snapshotter.sock');
  assert.equal(c.log.level, 'debug');
});

test('bad configs give one-line errors that name the problem', () => {
  const cases: [string, RegExp][] = [
    ['roots = "/x"', /unknown key "roots"/],
    ['[log]\nlevl = "x"', /unknown key "log.levl"/],
    ['root = 3', /"root" must be a string/],
    ['log = "x"', /"log" must be a table/],
    ['[log]\nlevel = "loud"', /"log.level" must be one of/],
    ['root = "relative"', /"root" must be an absolute path/],
    ['root = "/x', /line 1, column \d+/],
    ['[fscache]\nbackend = "fuse"', /"fscache.backend" must be "auto", "fscache", "fanotify" or "download", got "fuse"/],
    ['[metrics]\naddress = "9110"', /"metrics.address" must be "host:port" or an absolute unix socket path/],
    ['[metrics]\naddress = "localhost:99999"', /"metrics.address"/],
    ['[metrics]\nport = 1', /unknown key "metrics.port"/],
  ];
  for (const [text, re] of cases) {
    assert.throws(() => parseConfig(text), (e: unknown) => e instanceof ConfigError && re.test(e.message) && !e.message.includes('\n'), text);
  }
});

test('a missing file is named', () => {
  const f = path.join(os.tmpdir(), `lazysnap-nonexistent-${process.pid}.toml`);
  assert.throws(() => loadConfig(f), new RegExp(`config ${f}: no such file`));
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lazysnap-cfg-'));
  fs.writeFileSync(path.join(dir, 'c.toml'), 'bogus = 1\n');
  assert.throws(() => loadConfig(path.join(dir, 'c.toml')), /c\.toml: unknown key "bogus"/);
  fs.rmSync(dir, { recursive: true });
});

test('metrics addresses: host:port, [v6]:port, :port (all interfaces), or a unix socket; off by default', () => {
  assert.equal(loadConfig().metrics.address, '');
  assert.deepEqual(parseListenAddress('127.0.0.1:9110'), { host: '127.0.0.1', port: 9110 });
  assert.deepEqual(parseListenAddress('[::1]:9110'), { host: '::1', port: 9110 });
  assert.deepEqual(parseListenAddress(':9110'), { host: '0.0.0.0', port: 9110 });
  assert.deepEqual(parseListenAddress('node-1.example:80'), { host: 'node-1.example', port: 80 });
  for (const bad of ['9110', 'host:', 'a:b', 'h:70000', '/x:1']) assert.equal(parseListenAddress(bad), null, bad);
  assert.equal(parseConfig('[metrics]\naddress = "/run/lazysnap/metrics.sock"').metrics.address, '/run/lazysnap/metrics.sock');
});
