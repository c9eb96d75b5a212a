// fanotify(7) for the pre-content backend: the group and its marks, and a
// MAP_SHARED view of a file, into which events are read so that an event the
// kernel hands over is on record the moment read() returns.
#include <errno.h>
#include <fcntl.h>
#include <sys/fanotify.h>
#include <sys/mman.h>
#include <unistd.h>

#include <string>

#include "native.h"

namespace lazysnap {

// fanotifyInit(flags, eventFFlags): fanotify_init(2); returns the group fd.
static Napi::Value FanotifyInit(const Napi::CallbackInfo& info) {
  auto flags = static_cast<unsigned int>(ArgInt(info, 0, "flags", 0, 0xffffffffLL));
  auto eventFFlags = static_cast<unsigned int>(ArgInt(info, 1, "eventFFlags", 0, 0xffffffffLL));
  int fd = fanotify_init(flags, eventFFlags);
  if (fd < 0) throw ErrnoError(info.Env(), errno, "fanotify_init");
  return Napi::Number::New(info.Env(), fd);
}

// fanotifyMark(fd, flags, mask, path): fanotify_mark(2) relative to the cwd.
static Napi::Value FanotifyMark(const Napi::CallbackInfo& info) {
  int fd = ArgFd(info, 0, "fd");
  auto flags = static_cast<unsigned int>(ArgInt(info, 1, "flags", 0, 0xffffffffLL));
  auto mask = static_cast<uint64_t>(ArgInt(info, 2, "mask", 0, (int64_t{1} << 53) - 1));
  if (info.Length() < 4 || !info[3].IsString()) {
    throw Napi::TypeError::New(info.Env(), "The \"path\" argument must be a string");
  }
  std::string path = info[3].As<Napi::String>().Utf8Value();
  if (fanotify_mark(fd, flags, mask, AT_FDCWD, path.c_str()) < 0) {
    throw ErrnoError(info.Env(), errno, "fanotify_mark");
  }
  return info.Env().Undefined();
}

// mapShared(fd, length): a Buffer over mmap(MAP_SHARED) of the file's first
// `length` bytes; unmapped when the GC collects it.
static Napi::Value MapShared(const Napi::CallbackInfo& info) {
  int fd = ArgFd(info, 0, "fd");
  auto length = static_cast<size_t>(ArgInt(info, 1, "length", 1, int64_t{1} << 30));
  void* p = mmap(nullptr, length, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) throw ErrnoError(info.Env(), errno, "mmap");
  return Napi::Buffer<uint8_t>::New(info.Env(), static_cast<uint8_t*>(p), length,
                                    [length](Napi::Env, uint8_t* data) { munmap(data, length); });
}

void InitFanotify(Napi::Env env, Napi::Object exports) {
  exports.Set("fanotifyInit", Napi::Function::New(env, FanotifyInit, "fanotifyInit"));
  exports.Set("fanotifyMark", Napi::Function::New(env, FanotifyMark, "fanotifyMark"));
  exports.Set("mapShared", Napi::Function::New(env, MapShared, "mapShared"));
}

}  // namespace lazysnap
