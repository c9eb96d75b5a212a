// WWW-Authenticate parsing: quoted commas, escapes, several challenges, token68.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { challengeScopes, parseChallenges } from '../../registry/challenge';

test('Bearer challenge with a quoted comma in scope', () => {
  const [c, ...rest] = parseChallenges(
    'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:samalba/my-app:pull,push"');
  assert.equal(rest.length, 0);
  assert.equal(c.scheme, 'bearer');
  assert.deepEqual(c.params, {
    realm: 'https://auth.docker.io/token',
    service: 'registry.docker.io',
    scope: 'repository:samalba/my-app:pull,push',
  });
  assert.deepEqual(challengeScopes(c), ['repository:samalba/my-app:pull,push']);
});

test('several challenges in one header, spaces after commas, case-insensitive names', () => {
  const cs = parseChallenges('Basic realm="basic-realm", Bearer Realm="http://127.0.0.1:5600/token", Service=test-registry, error="invalid_token"');
  assert.equal(cs.length, 2);
  assert.deepEqual(cs[0], { scheme: 'basic', params: { realm: 'basic-realm' } });
  assert.deepEqual(cs[1].params, { realm: 'http://127.0.0.1:5600/token', service: 'test-registry', error: 'invalid_token' });
});

test('escaped quotes and backslashes inside quoted strings', () => {
  const [c] = parseChallenges('Bearer realm="a\\"b,c\\\\d",service="x"');
  assert.equal(c.params.realm, 'a"b,c\\d');
  assert.equal(c.params.service, 'x');
});

test('token68 and bare schemes; header arrays', () => {
  const cs = parseChallenges(['Negotiate abc123==', 'Basic', 'Bearer realm="r"']);
  assert.deepEqual(cs.map((c) => c.scheme), ['negotiate', 'basic', 'bearer']);
  assert.equal(cs[0].token68, 'abc123==');
  assert.deepEqual(cs[1].params, {});
  assert.equal(cs[2].params.realm, 'r');
});

test('multiple scopes separated by spaces; empty or garbage headers do not throw', () => {
  const [c] = parseChallenges('Bearer realm="r",scope="repository:a:pull repository:b:pull"');
  assert.deepEqual(challengeScopes(c), ['repository:a:pull', 'repository:b:pull']);
  assert.deepEqual(parseChallenges(undefined), []);
  assert.deepEqual(parseChallenges(''), []);
  assert.doesNotThrow(() => parseChallenges('"",,,=== Bearer realm="unterminated'));
  assert.equal(parseChallenges('Bearer realm="unterminated')[0].params.realm, 'unterminated');
});
