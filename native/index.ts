// Typed wrapper of lazysnap's native addon (native/src/*.cc): only the
// syscalls Node cannot make itself. See native/README.md for why each exists.
//
// Every failing syscall throws an Error shaped like Node's own system errors:
// message "EINVAL: invalid argument, pwrite", plus `code` ('EINVAL'),
// `errno` (the positive errno value, 22) and `syscall` ('pwrite'). Note that
// Node's fs errors carry a *negative* errno (libuv's convention); compare
// `code` rather than `errno` when both kinds can occur.
import * as fs from 'node:fs';
import * as path from 'node:path';

/** A system error thrown by the addon. */
export interface NativeError extends Error {
  code: string;
  errno: number;
  syscall: string;
}

/** Readiness callback: `err` is set (and polling has stopped) when libuv reports an error on the fd. */
export type OnReadable = (err: NativeError | null) => void;

/** A libuv `uv_poll_t` on Node's event loop, watching one fd for readability. */
export interface FdPoller {
  /** Start polling (UV_READABLE). Level-triggered: the callback runs on every loop iteration while the fd stays readable. No-op if active. */
  start(): void;
  /** Stop polling; start() may be called again. */
  stop(): void;
  /** Stop and release the handle. The fd itself is NOT closed. Idempotent; safe inside the callback. */
  close(): void;
  /** Like a socket's ref()/unref(): whether an active poller keeps the process alive (default: it does). */
  ref(): this;
  unref(): this;
  hasRef(): boolean;
  readonly fd: number;
  /** Between start() and stop()/close() (or an error). */
  readonly active: boolean;
  readonly closed: boolean;
}

export type SocketType = 'stream' | 'seqpacket' | 'dgram';

export interface RecvResult {
  /** The bytes received; empty at EOF on a stream socket. */
  data: Buffer;
  /** Received fds, close-on-exec (MSG_CMSG_CLOEXEC). The caller owns them. */
  fds: number[];
  /** MSG_CTRUNC: more fds were sent than maxFds; the kernel closed the excess. */
  truncated: boolean;
}

interface Binding {
  CACHEFILES_IOC_READ_COMPLETE: number;
  allocAligned(size: number, align: number): Uint8Array;
  isAligned(buf: Uint8Array, align: number): boolean;
  pwriteAllSync(fd: number, buf: Uint8Array, offset: number): number;
  pwriteAll(fd: number, buf: Uint8Array, offset: number): Promise<number>;
  ioctlReadComplete(fd: number, msgId: number): void;
  dataExtents(fd: number, end: number): number[];
  seekHole(fd: number, off: number): number;
  tryLockExclusive(fd: number): boolean;
  FdPoller: new (fd: number, onReadable: OnReadable) => FdPoller;
  socketpair(type?: SocketType): [number, number];
  sendFds(sock: number, data: Uint8Array, fds: number[]): number;
  recvFds(sock: number, maxData: number, maxFds: number, dontWait: boolean): RecvResult;
  sendDatagram(path: string, data: Uint8Array, fds: number[]): number;
  setCloexec(fd: number, on: boolean): void;
  unixConnect(path: string): number;
  getCloexec(fd: number): boolean;
  fanotifyInit(flags: number, eventFFlags: number): number;
  fanotifyMark(fd: number, flags: number, mask: number, path: string): void;
  mapShared(fd: number, length: number): Uint8Array;
  keepFdTable(): number;
  pidfdGetfd(pid: number, fd: number): number;
  pidfdOpen(pid: number): number;
  FD_KEEPER_COMM: string;
  mount(source: string, target: string, fstype: string, flags: number, data: string): Promise<void>;
  decodeChunk(compressor: number, src: Uint8Array | readonly Uint8Array[], dst: Uint8Array, digestAlgo: number, want: Uint8Array): Promise<string>;
  decodeChunkSync(compressor: number, src: Uint8Array | readonly Uint8Array[], dst: Uint8Array, digestAlgo: number, want: Uint8Array): string;
  compressChunks(src: Uint8Array, lengths: Uint32Array, dst: Uint8Array, sizes: Uint32Array, level: number): Promise<void>;
  blake3(data: Uint8Array): Buffer;
  MS_RDONLY: number;
  MS_NOSUID: number;
  MS_NODEV: number;
}

const ADDON = 'lazysnap_native.node';

/** Where the addon may be: beside this file (native/index.ts run from source) or, from dist/native/index.js, in the source tree. */
export const addonCandidates: readonly string[] = [
  path.join(__dirname, 'build', 'Release', ADDON),
  path.join(__dirname, '..', '..', 'native', 'build', 'Release', ADDON),
];

function load(): Binding {
  for (const p of addonCandidates) {
    if (fs.existsSync(p)) return require(p) as Binding;
  }
  throw new Error(
    `lazysnap native addon not built (looked for ${addonCandidates.join(' and ')}); ` +
      'run "npm ci" (or "npm run install") at the repository root',
  );
}

const native = load();

/** `_IOW(0x98, 1, int)` = 0x40049801 (include/uapi/linux/cachefiles.h). */
export const CACHEFILES_IOC_READ_COMPLETE: number = native.CACHEFILES_IOC_READ_COMPLETE;

/**
 * A zero-filled Buffer of `size` bytes whose memory starts at a multiple of
 * `align` (a power of two; default 4096, the page size). cachefiles writes
 * READ payloads to the cache file with direct I/O, which needs >= 512-byte
 * aligned memory; Node's own Buffers are not aligned. It is a view into a
 * V8 ArrayBuffer of size + align - 1 bytes (buf.buffer), freed by the GC like
 * any other; `buf.subarray(k * 512)` stays 512-aligned.
 */
export function allocAligned(size: number, align = 4096): Buffer {
  const view = native.allocAligned(size, align);
  return Buffer.from(view.buffer, view.byteOffset, view.byteLength); // same memory, no copy
}

/** Whether the first byte of `buf` sits at a multiple of `align`. */
export function isAligned(buf: Uint8Array, align: number): boolean {
  return native.isAligned(buf, align);
}

/**
 * pwrite(2) all of `buf` at `offset`, looping on short writes; returns
 * buf.length. Blocks the event loop: for small writes or tests.
 */
export function pwriteAllSync(fd: number, buf: Uint8Array, offset: number): number {
  return native.pwriteAllSync(fd, buf, offset);
}

/**
 * pwriteAllSync on the libuv threadpool; resolves to buf.length. The buffer
 * is kept alive until the promise settles; do not modify it meanwhile.
 */
export function pwriteAll(fd: number, buf: Uint8Array, offset: number): Promise<number> {
  return native.pwriteAll(fd, buf, offset);
}

/** `ioctl(anonFd, CACHEFILES_IOC_READ_COMPLETE, msgId)`: tells cachefiles that READ `msgId` has been served. */
export function ioctlReadComplete(fd: number, msgId: number): void {
  native.ioctlReadComplete(fd, msgId);
}

/**
 * The data ranges of [0, end) of the file behind `fd`, from lseek SEEK_DATA
 * and SEEK_HOLE, as [offset, length] pairs in order. On a cachefiles anon fd
 * these are what the cache file already holds (cachefiles asks the daemon
 * only for the rest), so a restarted daemon can tell what is present.
 * Moves the fd's file position.
 */
export function dataExtents(fd: number, end: number): [number, number][] {
  const flat = native.dataExtents(fd, end);
  const out: [number, number][] = [];
  for (let i = 0; i < flat.length; i += 2) out.push([flat[i], flat[i + 1]]);
  return out;
}

/**
 * lseek(fd, off, SEEK_HOLE): where the data starting at `off` ends (`off`
 * itself if it is in a hole). Uses pread-independent lseek; moves the fd's
 * file position, which pread/pwrite ignore.
 */
export function seekHole(fd: number, off: number): number {
  return native.seekHole(fd, off);
}

/**
 * flock(fd, LOCK_EX | LOCK_NB): true when this open file takes the lock,
 * false when another holds it. Held until every fd of that open file is
 * closed, or its process dies (SIGKILL included).
 */
export function tryLockExclusive(fd: number): boolean {
  return native.tryLockExclusive(fd);
}

/**
 * `new FdPoller(fd, onReadable)` watches `fd` (e.g. /dev/cachefiles) for
 * POLLIN on Node's event loop once start()ed. start() throws (uv_poll_init)
 * EBADF, EPERM for a regular file, or EEXIST while another FdPoller of this
 * thread polls the same fd (libuv supports one poll handle per fd). An active
 * poller keeps itself and the process alive until stop()/close()/unref();
 * an inactive one holds no libuv handle.
 */
export const FdPoller: new (fd: number, onReadable: OnReadable) => FdPoller = native.FdPoller;

/** `socketpair(AF_UNIX, type | SOCK_CLOEXEC)`: two connected fds. */
export function socketpair(type: SocketType = 'stream'): [number, number] {
  return native.socketpair(type);
}

/**
 * sendmsg(2) of `data` with `fds` attached (SCM_RIGHTS; at most 253). Returns
 * the bytes sent (short only on a non-blocking socket). On a stream socket
 * the fds travel with the first byte of `data`, so `data` must not be empty.
 */
export function sendFds(sock: number, data: Uint8Array, fds: number[]): number {
  if (fds.length > 0 && data.length === 0) {
    throw new RangeError('sendFds: data must not be empty when sending fds');
  }
  return native.sendFds(sock, data, fds);
}

/**
 * recvmsg(2) of up to `maxData` bytes and `maxFds` fds, with MSG_CMSG_CLOEXEC.
 * Blocks on a blocking socket unless `dontWait` (MSG_DONTWAIT: throws EAGAIN
 * instead); pair it with an FdPoller to wait without blocking the loop.
 */
export function recvFds(sock: number, maxData: number, maxFds: number, opts: { dontWait?: boolean } = {}): RecvResult {
  return native.recvFds(sock, maxData, maxFds, opts.dontWait === true);
}

/**
 * A blocking AF_UNIX stream socket connected to `path` (close-on-exec), for
 * recvFds without Node reading first: libuv drops SCM_RIGHTS fds it reads.
 */
export function unixConnect(path: string): number {
  return native.unixConnect(path);
}

/** Set (or clear) FD_CLOEXEC on `fd`. */
export function setCloexec(fd: number, on = true): void {
  native.setCloexec(fd, on);
}

/** Whether FD_CLOEXEC is set on `fd`. */
export function getCloexec(fd: number): boolean {
  return native.getCloexec(fd);
}

/**
 * sd_notify(3): send `state` (e.g. "READY=1", or "FDSTORE=1\nFDNAME=cachefiles")
 * with optional `fds` to the socket named by `$NOTIFY_SOCKET` (a path, or
 * '@' + an abstract name). Returns false when NOTIFY_SOCKET is unset (not run
 * by systemd); throws on a send error. systemd accepts FDSTORE only from the
 * main pid unless NotifyAccess= says otherwise, and needs FileDescriptorStoreMax=.
 */
export function sdNotify(state: string, fds: number[] = [], env: NodeJS.ProcessEnv = process.env): boolean {
  const sock = env.NOTIFY_SOCKET;
  if (sock === undefined || sock === '') return false;
  native.sendDatagram(sock, Buffer.from(state, 'utf8'), fds);
  return true;
}

/** An fd passed by systemd (socket activation or the fd store). */
export interface ListenFd {
  fd: number;
  /** From LISTEN_FDNAMES ("unknown" when absent), e.g. the FDNAME= it was stored under. */
  name: string;
}

/**
 * sd_listen_fds_with_names(3) in TS: the fds systemd passed at start (3, 4, …)
 * when LISTEN_PID is this process. Each is set close-on-exec, as
 * sd_listen_fds does (Node's startup already does it for fds 0..15 via
 * uv_disable_stdio_inheritance; this covers any beyond). The LISTEN_*
 * variables are removed from `env` unless `unsetEnvironment` is false.
 */
export function sdListenFds(opts: { unsetEnvironment?: boolean; env?: NodeJS.ProcessEnv } = {}): ListenFd[] {
  const env = opts.env ?? process.env;
  const pid = env.LISTEN_PID;
  const count = env.LISTEN_FDS;
  const names = env.LISTEN_FDNAMES;
  if (opts.unsetEnvironment !== false) {
    delete env.LISTEN_PID;
    delete env.LISTEN_FDS;
    delete env.LISTEN_FDNAMES;
  }
  if (pid === undefined || count === undefined) return [];
  if (!/^[1-9][0-9]*$/.test(pid) || Number(pid) !== process.pid) return [];
  if (!/^[0-9]+$/.test(count)) return [];
  const n = Number(count);
  const nameList = names === undefined ? [] : names.split(':');
  const out: ListenFd[] = [];
  for (let i = 0; i < n; i++) {
    const fd = 3 + i; // SD_LISTEN_FDS_START
    setCloexec(fd, true);
    out.push({ fd, name: nameList[i] !== undefined && nameList[i] !== '' ? nameList[i] : 'unknown' });
  }
  return out;
}

/** fanotify_init(2): a new group's fd. Flags and the event fds' open flags as in worker/fanotify/events.ts. */
export function fanotifyInit(flags: number, eventFFlags: number): number {
  return native.fanotifyInit(flags, eventFFlags);
}

/** fanotify_mark(2) of `path` (relative to the cwd): adds or removes `mask` on its inode, mount or filesystem. */
export function fanotifyMark(fd: number, flags: number, mask: number, path: string): void {
  native.fanotifyMark(fd, flags, mask, path);
}

/**
 * A Buffer over mmap(MAP_SHARED) of the first `length` bytes of the file
 * behind `fd` (which must be that long): what is written to it is in the
 * file's page cache at once, visible to other processes and surviving a
 * kill. Unmapped when the GC collects it.
 */
export function mapShared(fd: number, length: number): Buffer {
  const view = native.mapShared(fd, length);
  return Buffer.from(view.buffer, view.byteOffset, view.byteLength);
}

/**
 * Starts a child that shares this process's fd table (clone with CLONE_FILES
 * and CLONE_VM) and only sleeps; SIGKILL, SIGTERM, SIGINT or SIGHUP end it.
 * If this process is killed, its fds stay open in the child, and
 * /proc/<child>/fd still says which file each one was. Returns its pid; its
 * /proc/<pid>/comm is `FD_KEEPER_COMM`. Nobody reaps it while this process
 * lives (it has no exit signal); after, its new parent does.
 */
export function keepFdTable(): number {
  return native.keepFdTable();
}

/** A close-on-exec copy of fd `fd` of process `pid` (pidfd_open + pidfd_getfd; root, Linux >= 5.6). */
export function pidfdGetfd(pid: number, fd: number): number {
  return native.pidfdGetfd(pid, fd);
}

/** A pidfd of process `pid` (close-on-exec; Linux >= 5.3): poll says readable once it has exited. */
export function pidfdOpen(pid: number): number {
  return native.pidfdOpen(pid);
}

/** The comm of every fd keeper. */
export const FD_KEEPER_COMM: string = native.FD_KEEPER_COMM;

/** mount(2) flags. */
export const MS = { RDONLY: native.MS_RDONLY, NOSUID: native.MS_NOSUID, NODEV: native.MS_NODEV } as const;

/**
 * mount(2) on the libuv threadpool. For file-backed EROFS, where mount(8)
 * would put a loop device under the regular-file source.
 */
export function mountFs(source: string, target: string, fstype: string, flags: number, data: string): Promise<void> {
  return native.mount(source, target, fstype, flags, data);
}

/**
 * zstd-compresses a batch of chunks on the libuv threadpool, one frame each.
 * The chunks lie back to back in `src` (`lengths[i]` bytes each); chunk i's
 * frame is written to `dst` at the offset of its bytes in `src`, and
 * `sizes[i]` is its size, or 0 if it did not fit in as many bytes (store the
 * chunk raw). `src`, `dst` and `sizes` may not be touched until it settles.
 */
export function compressChunks(src: Uint8Array, lengths: Uint32Array, dst: Uint8Array, sizes: Uint32Array, level: number): Promise<void> {
  return native.compressChunks(src, lengths, dst, sizes, level);
}

/** blake3 of `data` (32 bytes), BLAKE3's C implementation with the CPU's SIMD. */
export function blake3(data: Uint8Array): Buffer {
  return native.blake3(data);
}

/**
 * Decompresses one chunk (compressor: 0 none, 1 lz4_block, 3 zstd; gzip is
 * not handled here) into `dst`, which it must fill exactly, and checks its
 * digest (0 blake3, 1 sha256) against `want`. `src` is the compressed bytes,
 * or their pieces in order (a response body as received: not joined first).
 * Resolves with "" for a good chunk, else with why not. Runs on the libuv
 * threadpool; dst must not be touched until it settles.
 */
export function decodeChunk(compressor: number, src: Uint8Array | readonly Uint8Array[], dst: Uint8Array, digestAlgo: number, want: Uint8Array): Promise<string> {
  return native.decodeChunk(compressor, src, dst, digestAlgo, want);
}

/** decodeChunk on the calling thread: for chunks so small that the threadpool's hand-off costs more than decoding them. */
export function decodeChunkSync(compressor: number, src: Uint8Array | readonly Uint8Array[], dst: Uint8Array, digestAlgo: number, want: Uint8Array): string {
  return native.decodeChunkSync(compressor, src, dst, digestAlgo, want);
}
