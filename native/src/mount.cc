// mount(2), for file-backed EROFS: mount(8) of util-linux 2.38 (and busybox)
// puts a loop device under a regular-file source, and an EROFS on a block
// device refuses file paths in device=. Runs on the libuv threadpool: a
// mount can wait on I/O.
#include <errno.h>
#include <sys/mount.h>

#include <string>

#include "native.h"

namespace lazysnap {

class MountWorker : public Napi::AsyncWorker {
 public:
  MountWorker(Napi::Env env, std::string source, std::string target, std::string fstype, unsigned long flags, std::string data)
      : Napi::AsyncWorker(env, "lazysnap.mount"),
        deferred_(Napi::Promise::Deferred::New(env)),
        source_(std::move(source)),
        target_(std::move(target)),
        fstype_(std::move(fstype)),
        flags_(flags),
        data_(std::move(data)) {}

  Napi::Promise Promise() { return deferred_.Promise(); }

 protected:
  void Execute() override {
    if (mount(source_.c_str(), target_.c_str(), fstype_.c_str(), flags_, data_.c_str()) != 0) err_ = errno;
  }

  void OnOK() override {
    if (err_ != 0) {
      deferred_.Reject(ErrnoError(Env(), err_, "mount").Value());
    } else {
      deferred_.Resolve(Env().Undefined());
    }
  }

  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }

 private:
  Napi::Promise::Deferred deferred_;
  std::string source_, target_, fstype_;
  unsigned long flags_;
  std::string data_;
  int err_ = 0;
};

static std::string ArgString(const Napi::CallbackInfo& info, size_t i, const char* name) {
  if (info.Length() <= i || !info[i].IsString()) {
    throw Napi::TypeError::New(info.Env(), std::string("The \"") + name + "\" argument must be a string");
  }
  return info[i].As<Napi::String>().Utf8Value();
}

// mount(source, target, fstype, flags, data) -> Promise<void>
static Napi::Value Mount(const Napi::CallbackInfo& info) {
  std::string source = ArgString(info, 0, "source");
  std::string target = ArgString(info, 1, "target");
  std::string fstype = ArgString(info, 2, "fstype");
  auto flags = static_cast<unsigned long>(ArgInt(info, 3, "flags", 0, 0xffffffffLL));
  std::string data = ArgString(info, 4, "data");
  auto* w = new MountWorker(info.Env(), source, target, fstype, flags, data);  // deletes itself when done
  Napi::Promise p = w->Promise();
  w->Queue();
  return p;
}

void InitMount(Napi::Env env, Napi::Object exports) {
  exports.Set("mount", Napi::Function::New(env, Mount, "mount"));
  exports.Set("MS_RDONLY", Napi::Number::New(env, MS_RDONLY));
  exports.Set("MS_NOSUID", Napi::Number::New(env, MS_NOSUID));
  exports.Set("MS_NODEV", Napi::Number::New(env, MS_NODEV));
}

}  // namespace lazysnap
