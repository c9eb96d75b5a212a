// Bounds-checked little-endian reads from a buffer. Every on-disk offset and
// length goes through here, so a bad one is a FormatError naming the
// structure, never a RangeError or an out-of-range read.
import { FormatError } from './errors';

/** The page size, and EROFS's block size: cache files are filled in whole pages. */
export const PAGE = 4096;
export const alignDown = (n: number, a = PAGE) => Math.floor(n / a) * a;
export const alignUp = (n: number, a = PAGE) => Math.ceil(n / a) * a;

export class Bytes {
  constructor(
    readonly buf: Buffer,
    /** what these bytes are, for errors: "bootstrap", "blob be7d…" */
    readonly name: string,
  ) {}

  get length(): number {
    return this.buf.length;
  }

  check(off: number, len: number, what: string): void {
    if (!Number.isSafeInteger(off) || !Number.isSafeInteger(len) || off < 0 || len < 0 || off + len > this.buf.length) {
      throw new FormatError(this.name, `${what}: bytes [${off}, ${off + len}) outside the ${this.buf.length} bytes available`);
    }
  }

  u8(off: number, what: string): number {
    this.check(off, 1, what);
    return this.buf.readUInt8(off);
  }
  u16(off: number, what: string): number {
    this.check(off, 2, what);
    return this.buf.readUInt16LE(off);
  }
  u32(off: number, what: string): number {
    this.check(off, 4, what);
    return this.buf.readUInt32LE(off);
  }
  /** A u64 that must fit a JS number (all sizes and offsets here do). */
  u64(off: number, what: string): number {
    this.check(off, 8, what);
    const v = this.buf.readBigUInt64LE(off);
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new FormatError(this.name, `${what}: value ${v} is too large`);
    return Number(v);
  }
  /** A u64 kept whole, for bit-packed words. */
  big(off: number, what: string): bigint {
    this.check(off, 8, what);
    return this.buf.readBigUInt64LE(off);
  }
  slice(off: number, len: number, what: string): Buffer {
    this.check(off, len, what);
    return this.buf.subarray(off, off + len);
  }
  /** A fixed-size field holding a NUL-padded string. */
  cstr(off: number, len: number, what: string): string {
    const b = this.slice(off, len, what);
    const nul = b.indexOf(0);
    return b.subarray(0, nul < 0 ? len : nul).toString('latin1');
  }
}
