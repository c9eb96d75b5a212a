// Aligned buffers, whole-buffer pwrite (sync and on the libuv threadpool),
// the cachefiles READ-completion ioctl, and the data extents of a file.
#include <errno.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <cstring>

#include "native.h"

#include <sys/file.h>

namespace lazysnap {

// include/uapi/linux/cachefiles.h (Linux >= 5.19).
static constexpr unsigned long kIocReadComplete = _IOW(0x98, 1, int);
static_assert(kIocReadComplete == 0x40049801UL, "CACHEFILES_IOC_READ_COMPLETE");

// allocAligned(size, align): a zero-filled Uint8Array of `size` bytes whose
// first byte is at a multiple of `align` (the TS wrapper turns it into a
// Buffer without copying). It is a view into a V8 ArrayBuffer of
// size + align - 1 bytes: V8 never moves ArrayBuffer memory, accounts it for
// GC pressure and frees it during GC. (An external buffer from posix_memalign
// would be freed only in a later setImmediate: a synchronous loop allocating
// 4000 x 1 MiB reached 4 GiB RSS that way, against ~140 MiB with this.)
static Napi::Value AllocAligned(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  size_t size = static_cast<size_t>(ArgInt(info, 0, "size", 0, int64_t{1} << 32));
  size_t align = static_cast<size_t>(ArgInt(info, 1, "align", 1, int64_t{1} << 20));
  if ((align & (align - 1)) != 0) {
    throw Napi::RangeError::New(env, "The \"align\" argument must be a power of two");
  }
  Napi::ArrayBuffer ab = Napi::ArrayBuffer::New(env, size + align - 1);
  auto addr = reinterpret_cast<uintptr_t>(ab.Data());
  size_t skip = static_cast<size_t>((align - addr % align) % align);
  return Napi::Uint8Array::New(env, size, ab, skip);
}

// isAligned(buf, align): whether buf's first byte is at a multiple of align.
static Napi::Value IsAligned(const Napi::CallbackInfo& info) {
  Napi::Uint8Array buf = ArgBytes(info, 0, "buf");
  uint64_t align = static_cast<uint64_t>(ArgInt(info, 1, "align", 1, int64_t{1} << 30));
  auto addr = reinterpret_cast<uintptr_t>(buf.Data());
  return Napi::Boolean::New(info.Env(), addr % align == 0);
}

// pwrite() until all `len` bytes are written. Returns 0 or a positive errno.
// A pwrite that writes nothing (it cannot happen for len > 0 on files or the
// cachefiles anon fd) is reported as EIO rather than looping forever.
static int PwriteAll(int fd, const uint8_t* p, size_t len, int64_t off, size_t* written) {
  size_t done = 0;
  while (done < len) {
    ssize_t n = pwrite(fd, p + done, len - done, static_cast<off_t>(off + static_cast<int64_t>(done)));
    if (n < 0) {
      if (errno == EINTR) continue;
      *written = done;
      return errno;
    }
    if (n == 0) {
      *written = done;
      return EIO;
    }
    done += static_cast<size_t>(n);
  }
  *written = done;
  return 0;
}

struct PwriteArgs {
  int fd;
  Napi::Uint8Array buf;
  int64_t off;
};

static PwriteArgs ArgsPwrite(const Napi::CallbackInfo& info) {
  int fd = ArgFd(info, 0, "fd");
  Napi::Uint8Array buf = ArgBytes(info, 1, "buf");
  int64_t off = ArgInt(info, 2, "offset", 0, (int64_t{1} << 53) - 1);
  return {fd, buf, off};
}

// pwriteAllSync(fd, buf, offset) -> bytes written (= buf.length).
static Napi::Value PwriteAllSync(const Napi::CallbackInfo& info) {
  PwriteArgs a = ArgsPwrite(info);
  size_t written = 0;
  int err = PwriteAll(a.fd, a.buf.Data(), a.buf.ByteLength(), a.off, &written);
  if (err != 0) throw ErrnoError(info.Env(), err, "pwrite");
  return Napi::Number::New(info.Env(), static_cast<double>(written));
}

// pwriteAll(fd, buf, offset) -> Promise<bytes written>, on the libuv threadpool.
// The Buffer is kept alive (referenced) until the write has finished.
class PwriteWorker : public Napi::AsyncWorker {
 public:
  PwriteWorker(Napi::Env env, const PwriteArgs& a)
      : Napi::AsyncWorker(env, "lazysnap.pwriteAll"),
        deferred_(Napi::Promise::Deferred::New(env)),
        buf_(Napi::Persistent(static_cast<Napi::Object>(a.buf))),
        fd_(a.fd),
        data_(a.buf.Data()),
        len_(a.buf.ByteLength()),
        off_(a.off) {}

  Napi::Promise Promise() { return deferred_.Promise(); }

 protected:
  void Execute() override { err_ = PwriteAll(fd_, data_, len_, off_, &written_); }

  void OnOK() override {
    Napi::Env env = Env();
    if (err_ != 0) {
      deferred_.Reject(ErrnoError(env, err_, "pwrite").Value());
    } else {
      deferred_.Resolve(Napi::Number::New(env, static_cast<double>(written_)));
    }
  }

  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }

 private:
  Napi::Promise::Deferred deferred_;
  Napi::ObjectReference buf_;
  int fd_;
  const uint8_t* data_;
  size_t len_;
  int64_t off_;
  int err_ = 0;
  size_t written_ = 0;
};

static Napi::Value PwriteAllAsync(const Napi::CallbackInfo& info) {
  PwriteArgs a = ArgsPwrite(info);
  auto* w = new PwriteWorker(info.Env(), a);  // deletes itself when done
  Napi::Promise p = w->Promise();
  w->Queue();
  return p;
}

// ioctlReadComplete(fd, msgId): ioctl(anon_fd, CACHEFILES_IOC_READ_COMPLETE,
// msg_id), the msg id passed by value as the ioctl argument.
static Napi::Value IoctlReadComplete(const Napi::CallbackInfo& info) {
  int fd = ArgFd(info, 0, "fd");
  auto id = static_cast<unsigned long>(ArgInt(info, 1, "msgId", 0, UINT32_MAX));
  int r;
  do {
    r = ioctl(fd, kIocReadComplete, id);
  } while (r < 0 && errno == EINTR);
  if (r < 0) throw ErrnoError(info.Env(), errno, "ioctl");
  return info.Env().Undefined();
}

// dataExtents(fd, end) -> [off0, len0, off1, len1, ...]: the data (non-hole)
// ranges of [0, end) found with lseek SEEK_DATA / SEEK_HOLE. Works on a
// cachefiles anon fd too (its llseek goes to the cache file). Moves the fd's
// file position, which pread/pwrite users never look at.
static Napi::Value DataExtents(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info, 0, "fd");
  int64_t end = ArgInt(info, 1, "end", 0, (int64_t{1} << 53) - 1);
  Napi::Array out = Napi::Array::New(env);
  uint32_t n = 0;
  off_t pos = 0;
  while (pos < end) {
    off_t data = lseek(fd, pos, SEEK_DATA);
    if (data < 0) {
      if (errno == ENXIO) break;  // no data at or after pos
      throw ErrnoError(env, errno, "lseek");
    }
    if (data >= end) break;
    off_t hole = lseek(fd, data, SEEK_HOLE);
    if (hole < 0) throw ErrnoError(env, errno, "lseek");
    if (hole > end) hole = static_cast<off_t>(end);
    out.Set(n++, Napi::Number::New(env, static_cast<double>(data)));
    out.Set(n++, Napi::Number::New(env, static_cast<double>(hole - data)));
    pos = hole;
  }
  return out;
}

// seekHole(fd, off): lseek(fd, off, SEEK_HOLE), the end of the data that
// starts at off (off itself when off is in a hole; the size at or past EOF).
static Napi::Value SeekHole(const Napi::CallbackInfo& info) {
  int fd = ArgFd(info, 0, "fd");
  int64_t off = ArgInt(info, 1, "off", 0, (int64_t{1} << 53) - 1);
  off_t hole = lseek(fd, static_cast<off_t>(off), SEEK_HOLE);
  if (hole < 0) {
    if (errno == ENXIO) return Napi::Number::New(info.Env(), static_cast<double>(off));  // at or past EOF
    throw ErrnoError(info.Env(), errno, "lseek");
  }
  return Napi::Number::New(info.Env(), static_cast<double>(hole));
}

// flock(fd, LOCK_EX | LOCK_NB): true when taken, false when another open file
// description holds it. The lock lives as long as that description: a process
// that dies, even by SIGKILL, lets it go.
static Napi::Value TryLockExclusive(const Napi::CallbackInfo& info) {
  int fd = ArgFd(info, 0, "fd");
  if (flock(fd, LOCK_EX | LOCK_NB) == 0) return Napi::Boolean::New(info.Env(), true);
  if (errno == EWOULDBLOCK) return Napi::Boolean::New(info.Env(), false);
  throw ErrnoError(info.Env(), errno, "flock");
}

void InitIo(Napi::Env env, Napi::Object exports) {
  exports.Set("tryLockExclusive", Napi::Function::New(env, TryLockExclusive, "tryLockExclusive"));
  exports.Set("seekHole", Napi::Function::New(env, SeekHole, "seekHole"));
  exports.Set("dataExtents", Napi::Function::New(env, DataExtents, "dataExtents"));
  exports.Set("allocAligned", Napi::Function::New(env, AllocAligned, "allocAligned"));
  exports.Set("isAligned", Napi::Function::New(env, IsAligned, "isAligned"));
  exports.Set("pwriteAllSync", Napi::Function::New(env, PwriteAllSync, "pwriteAllSync"));
  exports.Set("pwriteAll", Napi::Function::New(env, PwriteAllAsync, "pwriteAll"));
  exports.Set("ioctlReadComplete", Napi::Function::New(env, IoctlReadComplete, "ioctlReadComplete"));
  exports.Set("CACHEFILES_IOC_READ_COMPLETE", Napi::Number::New(env, static_cast<double>(kIocReadComplete)));
}

}  // namespace lazysnap
