// The 512-byte tar headers nydus puts after each blob section (GNU or ustar).
// Only what naming a section needs: name, size, and a valid checksum.
import { Bytes } from '../bytes';
import { FormatError } from '../errors';

export const TAR_BLOCK = 512;

export interface TarHeader {
  name: string;
  size: number;
}

function octal(b: Buffer, what: string, name: string): number {
  if (b[0] & 0x80) {
    // GNU base-256 for big values
    let v = 0;
    for (let i = 1; i < b.length; i++) v = v * 256 + b[i];
    return v;
  }
  const s = b.toString('latin1').replace(/\0.*$/s, '').trim();
  if (s === '') return 0;
  if (!/^[0-7]+$/.test(s)) throw new FormatError(name, `${what} "${s}" is not octal`);
  return parseInt(s, 8);
}

export function parseTarHeader(b: Bytes, off: number, what: string): TarHeader {
  const h = b.slice(off, TAR_BLOCK, what);
  const stored = octal(h.subarray(148, 156), `${what} checksum`, b.name);
  let sum = 0;
  for (let i = 0; i < TAR_BLOCK; i++) sum += i >= 148 && i < 156 ? 0x20 : h[i];
  if (sum !== stored) throw new FormatError(b.name, `${what}: tar header checksum ${stored} does not match ${sum}`);
  const nul = h.indexOf(0);
  const name = h.subarray(0, nul < 0 || nul > 100 ? 100 : nul).toString('utf8');
  return { name, size: octal(h.subarray(124, 136), `${what} size`, b.name) };
}

/** A GNU-style header for a section, as nydus writes them. */
export function makeTarHeader(name: string, size: number): Buffer {
  const h = Buffer.alloc(TAR_BLOCK);
  h.write(name, 0, 100, 'utf8');
  h.write('0000644\0', 100, 'latin1');
  h.write('0000000\0', 108, 'latin1');
  h.write('0000000\0', 116, 'latin1');
  h.write(size.toString(8).padStart(11, '0') + '\0', 124, 'latin1');
  h.write('00000000000\0', 136, 'latin1');
  h.write('0', 156, 'latin1');
  h.write('ustar  \0', 257, 'latin1');
  h.fill(0x20, 148, 156);
  let sum = 0;
  for (let i = 0; i < TAR_BLOCK; i++) sum += h[i];
  h.write(sum.toString(8).padStart(6, '0') + '\0 ', 148, 'latin1');
  return h;
}
