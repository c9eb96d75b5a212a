// fanotify's wire format (include/uapi/linux/fanotify.h): the events read
// from a pre-content group, and the responses written back. Pure parsing;
// every length is checked before it is used.

export const FAN = {
  // fanotify_init flags
  CLOEXEC: 0x1,
  NONBLOCK: 0x2,
  CLASS_PRE_CONTENT: 0x8,
  UNLIMITED_QUEUE: 0x10,
  UNLIMITED_MARKS: 0x20,
  // fanotify_mark flags
  MARK_ADD: 0x1,
  MARK_REMOVE: 0x2,
  MARK_FILESYSTEM: 0x100,
  // event mask bits
  OPEN: 0x20,
  PRE_ACCESS: 0x0010_0000,
  Q_OVERFLOW: 0x4000,
  // responses
  ALLOW: 0x1,
  DENY: 0x2,
  NOFD: -1,
} as const;

/** open(2) flags for the event fds: written through, so O_RDWR (O_LARGEFILE is 0x8000 on x86-64 and arm64). */
export const EVENT_FD_FLAGS = 0o2 | 0o100000;

export const METADATA_VERSION = 3;
export const METADATA_LEN = 24;
const INFO_HEADER_LEN = 4;
export const INFO_TYPE_RANGE = 6;
const RANGE_INFO_LEN = 24;
/** one pre-content event with its range record: a read buffer this size returns exactly one */
export const PRE_CONTENT_EVENT_LEN = METADATA_LEN + RANGE_INFO_LEN;
export const RESPONSE_LEN = 8;

/** errnos a pre-content deny may carry to the reader; the kernel refuses any other with EINVAL (and the reader then waits on) */
export const DENY_ERRNOS = new Set([1 /* EPERM */, 5 /* EIO */, 28 /* ENOSPC */]);

export interface FanEvent {
  mask: number;
  /** the event's fd in the reading process, or FAN_NOFD */
  fd: number;
  pid: number;
  /** the range record of a pre-content event: the bytes the reader wants */
  range?: { offset: number; count: number };
  /** the bytes it took in the buffer */
  length: number;
}

export class FanotifyProtocolError extends Error {}

/** Parses the events in buf[0, len). */
export function parseEvents(buf: Buffer, len = buf.length): FanEvent[] {
  if (len > buf.length) throw new FanotifyProtocolError(`${len} bytes claimed in a buffer of ${buf.length}`);
  const out: FanEvent[] = [];
  for (let off = 0; off < len; ) {
    const ev = parseEvent(buf.subarray(off, len));
    out.push(ev);
    off += ev.length;
  }
  return out;
}

/** Parses the one event at the start of buf. */
export function parseEvent(buf: Buffer): FanEvent {
  if (buf.length < METADATA_LEN) throw new FanotifyProtocolError(`event truncated: ${buf.length} bytes`);
  const eventLen = buf.readUInt32LE(0);
  const vers = buf.readUInt8(4);
  const metadataLen = buf.readUInt16LE(6);
  if (vers !== METADATA_VERSION) throw new FanotifyProtocolError(`fanotify metadata version ${vers}, expected ${METADATA_VERSION}`);
  if (metadataLen < METADATA_LEN || eventLen < metadataLen || eventLen > buf.length) {
    throw new FanotifyProtocolError(`bad event lengths: event ${eventLen}, metadata ${metadataLen}, buffer ${buf.length}`);
  }
  const mask = Number(buf.readBigUInt64LE(8));
  const ev: FanEvent = { mask, fd: buf.readInt32LE(16), pid: buf.readInt32LE(20), length: eventLen };
  for (let off = metadataLen; off < eventLen; ) {
    if (eventLen - off < INFO_HEADER_LEN) throw new FanotifyProtocolError(`info record truncated at ${off}`);
    const type = buf.readUInt8(off);
    const recLen = buf.readUInt16LE(off + 2);
    if (recLen < INFO_HEADER_LEN || off + recLen > eventLen) throw new FanotifyProtocolError(`bad info record length ${recLen} at ${off}`);
    if (type === INFO_TYPE_RANGE) {
      if (recLen < RANGE_INFO_LEN) throw new FanotifyProtocolError(`range record of ${recLen} bytes`);
      const offset = buf.readBigUInt64LE(off + 8);
      const count = buf.readBigUInt64LE(off + 16);
      if (offset > BigInt(Number.MAX_SAFE_INTEGER) || count > BigInt(Number.MAX_SAFE_INTEGER)) {
        throw new FanotifyProtocolError(`range ${offset}+${count} out of range`);
      }
      ev.range = { offset: Number(offset), count: Number(count) };
    }
    off += recLen;
  }
  return ev;
}

/** struct fanotify_response for the event whose fd is `fd`. */
export function response(fd: number, verdict: 'allow' | { deny: number }): Buffer {
  const b = Buffer.alloc(RESPONSE_LEN);
  b.writeInt32LE(fd, 0);
  if (verdict === 'allow') {
    b.writeUInt32LE(FAN.ALLOW, 4);
  } else {
    if (!DENY_ERRNOS.has(verdict.deny)) throw new RangeError(`errno ${verdict.deny} cannot be given in a pre-content deny`);
    b.writeUInt32LE((FAN.DENY | ((verdict.deny & 0xff) << 24)) >>> 0, 4);
  }
  return b;
}
