// The cachefiles on-demand protocol (include/uapi/linux/cachefiles.h): the
// messages the kernel sends on /dev/cachefiles and the commands written back.
// Pure: bytes in, typed messages out; every length is checked against the
// message size, so a malformed message is a ProtocolError, never a bad read.

export const MSG_HEADER_SIZE = 16;
/** CACHEFILES_MSG_MAX_SIZE: the read buffer must hold one whole message */
export const MSG_MAX_SIZE = 1024;
const OPEN_BODY_SIZE = 16;
const READ_BODY_SIZE = 16;

export enum Opcode {
  Open = 0,
  Close = 1,
  Read = 2,
}

export interface MsgHeader {
  msgId: number;
  opcode: Opcode;
  /** whole message length, header included */
  len: number;
  objectId: number;
}

export interface OpenMsg extends MsgHeader {
  opcode: Opcode.Open;
  /** "erofs,<domain or fsid>" */
  volumeKey: string;
  /** fsid for the primary device, the device tag (blob id) for a data blob */
  cookieKey: string;
  /** the anonymous fd the kernel installed in the reader's fd table */
  fd: number;
  flags: number;
}

export interface ReadMsg extends MsgHeader {
  opcode: Opcode.Read;
  off: number;
  len: number;
  /** bytes requested (the header's len is the message length) */
  readLen: number;
}

export interface CloseMsg extends MsgHeader {
  opcode: Opcode.Close;
}

export type Message = OpenMsg | ReadMsg | CloseMsg;

export class ProtocolError extends Error {
  constructor(message: string) {
    super(`cachefiles message: ${message}`);
    this.name = 'ProtocolError';
  }
}

function u64(buf: Buffer, off: number, what: string): number {
  const v = buf.readBigUInt64LE(off);
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new ProtocolError(`${what} ${v} is too large`);
  return Number(v);
}

/** A key: the bytes up to the first NUL (cookie keys are not NUL-terminated, volume keys are). */
function key(b: Buffer): string {
  const nul = b.indexOf(0);
  return b.subarray(0, nul < 0 ? b.length : nul).toString('latin1');
}

/** Parses one message as read() returned it (n bytes). */
export function parseMessage(buf: Buffer): Message {
  if (buf.length < MSG_HEADER_SIZE) throw new ProtocolError(`${buf.length} bytes is shorter than the ${MSG_HEADER_SIZE}-byte header`);
  const h: MsgHeader = {
    msgId: buf.readUInt32LE(0),
    opcode: buf.readUInt32LE(4),
    len: buf.readUInt32LE(8),
    objectId: buf.readUInt32LE(12),
  };
  if (h.len !== buf.length) throw new ProtocolError(`header says ${h.len} bytes, read returned ${buf.length} (msg ${h.msgId})`);
  const body = buf.subarray(MSG_HEADER_SIZE);
  switch (h.opcode) {
    case Opcode.Open: {
      if (body.length < OPEN_BODY_SIZE) throw new ProtocolError(`OPEN msg ${h.msgId}: body of ${body.length} bytes`);
      const volumeKeySize = body.readUInt32LE(0);
      const cookieKeySize = body.readUInt32LE(4);
      const fd = body.readUInt32LE(8);
      const flags = body.readUInt32LE(12);
      const keys = body.subarray(OPEN_BODY_SIZE);
      if (volumeKeySize + cookieKeySize > keys.length || volumeKeySize === 0 || cookieKeySize === 0) {
        throw new ProtocolError(`OPEN msg ${h.msgId}: keys of ${volumeKeySize}+${cookieKeySize} bytes in ${keys.length}`);
      }
      return {
        ...h,
        opcode: Opcode.Open,
        volumeKey: key(keys.subarray(0, volumeKeySize)),
        cookieKey: key(keys.subarray(volumeKeySize, volumeKeySize + cookieKeySize)),
        fd,
        flags,
      };
    }
    case Opcode.Read: {
      if (body.length !== READ_BODY_SIZE) throw new ProtocolError(`READ msg ${h.msgId}: body of ${body.length} bytes, want ${READ_BODY_SIZE}`);
      const off = u64(body, 0, `READ msg ${h.msgId} off`);
      const readLen = u64(body, 8, `READ msg ${h.msgId} len`);
      return { ...h, opcode: Opcode.Read, off, len: h.len, readLen };
    }
    case Opcode.Close:
      if (body.length !== 0) throw new ProtocolError(`CLOSE msg ${h.msgId}: unexpected ${body.length}-byte body`);
      return { ...h, opcode: Opcode.Close };
    default:
      throw new ProtocolError(`msg ${h.msgId}: unknown opcode ${h.opcode}`);
  }
}

/** Builds a message, for tests and fuzzing. */
export function encodeMessage(m: { msgId: number; objectId: number } & (
  | { opcode: Opcode.Open; volumeKey: string; cookieKey: string; fd: number; flags?: number }
  | { opcode: Opcode.Read; off: number; readLen: number }
  | { opcode: Opcode.Close }
)): Buffer {
  let body: Buffer;
  if (m.opcode === Opcode.Open) {
    const vk = Buffer.from(m.volumeKey + '\0', 'latin1');
    const ck = Buffer.from(m.cookieKey, 'latin1');
    body = Buffer.alloc(OPEN_BODY_SIZE + vk.length + ck.length);
    body.writeUInt32LE(vk.length, 0);
    body.writeUInt32LE(ck.length, 4);
    body.writeUInt32LE(m.fd, 8);
    body.writeUInt32LE(m.flags ?? 0, 12);
    vk.copy(body, OPEN_BODY_SIZE);
    ck.copy(body, OPEN_BODY_SIZE + vk.length);
  } else if (m.opcode === Opcode.Read) {
    body = Buffer.alloc(READ_BODY_SIZE);
    body.writeBigUInt64LE(BigInt(m.off), 0);
    body.writeBigUInt64LE(BigInt(m.readLen), 8);
  } else body = Buffer.alloc(0);
  const h = Buffer.alloc(MSG_HEADER_SIZE);
  h.writeUInt32LE(m.msgId, 0);
  h.writeUInt32LE(m.opcode, 4);
  h.writeUInt32LE(MSG_HEADER_SIZE + body.length, 8);
  h.writeUInt32LE(m.objectId, 12);
  return Buffer.concat([h, body]);
}

/** The volume key names the domain (shared) or the fsid (private): "erofs,<name>". */
export function volumeName(volumeKey: string): string {
  return volumeKey.startsWith('erofs,') ? volumeKey.slice('erofs,'.length) : volumeKey;
}

// Commands written to /dev/cachefiles (each one write()).
export const cmd = {
  dir: (path: string) => `dir ${path}`,
  tag: (tag: string) => `tag ${tag}`,
  bindOndemand: () => 'bind ondemand',
  restore: () => 'restore',
  /** size >= 0 opens the object; a negative errno refuses it */
  copen: (msgId: number, sizeOrErrno: number) => `copen ${msgId},${sizeOrErrno}`,
  inuse: (name: string) => `inuse ${name}`,
  cull: (name: string) => `cull ${name}`,
};
