// Where ../shared is (the steering repo's shared folder, beside the checkout).
// CI always has it; a test that needs it fails loudly when it is missing.
import fs from 'node:fs';
import path from 'node:path';

export function sharedDir(): string {
  const candidates = [process.env.LAZYSNAP_SHARED, path.resolve(__dirname, '../../../../shared'), path.resolve(process.cwd(), '../shared')];
  for (const c of candidates) if (c && fs.existsSync(path.join(c, 'conformance', 'run.sh'))) return c;
  throw new Error(`cannot find ../shared (tried ${candidates.filter(Boolean).join(', ')}); set LAZYSNAP_SHARED`);
}
