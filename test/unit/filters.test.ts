import { test } from 'node:test';
import assert from 'node:assert/strict';
import { status } from '@grpc/grpc-js';
import { matches, parseFilters } from '../../snapshotter/filters';
import { Info, Kind } from '../../snapshotter/storage/info';
import { SnapshotError } from '../../snapshotter/storage/errors';

const info = (o: Partial<Info>): Info => ({ name: 'n', parent: '', kind: Kind.Active, createdUs: 0, updatedUs: 0, labels: {}, ...o });
const m = (filters: string[], i: Info) => matches(parseFilters(filters), i);

test('equality, inequality and presence on every field', () => {
  const i = info({ name: 'a', parent: 'p', kind: Kind.Committed, labels: { x: '1', 'containerd.io/snapshot.ref': 'sha256:abc' } });
  assert.ok(m(['name==a'], i));
  assert.ok(!m(['name==b'], i));
  assert.ok(m(['name!=b'], i));
  assert.ok(m(['parent==p'], i));
  assert.ok(m(['kind==committed'], i));
  assert.ok(!m(['kind==active'], i));
  assert.ok(m(['labels.x'], i));
  assert.ok(!m(['labels.y'], i));
  assert.ok(m(['labels."containerd.io/snapshot.ref"==sha256:abc'], i));
  // an unquoted dotted path joins the rest into one label key
  assert.ok(m(['labels.a.b==1'], info({ labels: { 'a.b': '1' } })));
  assert.ok(!m(['labels.a.b==1'], info({ labels: { a: '1' } })));
  assert.ok(!m(['unknownfield'], i));
  assert.ok(m(['unknownfield!=x'], i), '!= matches an absent field, as in containerd');
});

test('commas AND, several filters OR, empty matches all', () => {
  const i = info({ name: 'a', labels: { x: '1' } });
  assert.ok(m(['name==a,labels.x==1'], i));
  assert.ok(!m(['name==a,labels.x==2'], i));
  assert.ok(m(['name==b', 'labels.x==1'], i));
  assert.ok(m([], i));
  assert.ok(m([''], i));
});

test('what containerd sends to find a remote snapshot', () => {
  const i = info({ kind: Kind.Committed, parent: 'default/1/sha256:p', labels: { 'containerd.io/snapshot.ref': 'sha256:c' } });
  assert.ok(m(['labels."containerd.io/snapshot.ref"=="sha256:c",parent=="default/1/sha256:p"'], i));
  assert.ok(!m(['labels."containerd.io/snapshot.ref"=="sha256:d",parent=="default/1/sha256:p"'], i));
});

test('regular expressions with alternative quotes', () => {
  const i = info({ name: 'extract-123 sha256:ab' });
  assert.ok(m(['name~=^extract-'], i));
  assert.ok(m(['name~=/sha256:[a-f]+$/'], i));
  assert.ok(m(['name~=|extract|'], i));
  assert.ok(!m(['name~=^view'], i));
});

test('quoted escapes', () => {
  assert.ok(m(['labels."a\\"b"=="x\\ty"'], info({ labels: { 'a"b': 'x\ty' } })));
  assert.ok(m(['name=="\\x41\\u00e9"'], info({ name: 'Aé' })));
});

test('malformed filters are InvalidArgument, naming the input', () => {
  for (const bad of ['labels.containerd.io/snapshot.ref', 'name==', 'name=a', 'name<>a', '"unterminated', 'name==a,', ',', 'name==a b', 'name==/x/', 'name~=/(/', '"\\q"']) {
    assert.throws(
      () => parseFilters([bad]),
      (e: unknown) => e instanceof SnapshotError && e.code === status.INVALID_ARGUMENT && e.message.includes(bad),
      bad,
    );
  }
});
