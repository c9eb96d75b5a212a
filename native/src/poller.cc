// FdPoller: readiness of any pollable fd (here: /dev/cachefiles, which Node's
// net.Socket refuses) through a libuv uv_poll_t on Node's own event loop.
//
// libuv allows one poll handle per fd and loop: uv_poll_init on an fd that
// is already polled, and uv_poll_stop/uv_close of any handle on that fd,
// remove the fd from epoll for every handle (uv__io_check_fd,
// uv__platform_invalidate_fd), silently killing the other one. So the uv
// handle exists only between start() and stop()/close(), and start() refuses
// an fd that another FdPoller of this thread is polling.
#include <errno.h>
#include <uv.h>

#include <string>
#include <unordered_set>

#include "native.h"

namespace lazysnap {

// fds with an active FdPoller, per thread = per Node environment and loop.
static thread_local std::unordered_set<int> polledFds;

class FdPoller : public Napi::ObjectWrap<FdPoller> {
 public:
  static void Init(Napi::Env env, Napi::Object exports);
  explicit FdPoller(const Napi::CallbackInfo& info);
  ~FdPoller() override;

 private:
  // One uv_poll_t from start() to libuv's close callback, which may come
  // after the JS object is gone or after the environment's cleanup hook.
  struct State {
    uv_poll_t handle;
    FdPoller* owner = nullptr;
    int fd = -1;
    napi_async_cleanup_hook_handle hook = nullptr;
    bool hookRan = false;
  };

  Napi::Value Start(const Napi::CallbackInfo& info);
  Napi::Value Stop(const Napi::CallbackInfo& info);
  Napi::Value Close(const Napi::CallbackInfo& info);
  Napi::Value Ref(const Napi::CallbackInfo& info);
  Napi::Value Unref(const Napi::CallbackInfo& info);
  Napi::Value HasRef(const Napi::CallbackInfo& info);
  Napi::Value GetFd(const Napi::CallbackInfo& info);
  Napi::Value GetActive(const Napi::CallbackInfo& info);
  Napi::Value GetClosed(const Napi::CallbackInfo& info);

  void Deactivate();  // close the handle (if any) and let the JS object go

  static void OnPoll(uv_poll_t* handle, int status, int events);
  static void OnClosed(uv_handle_t* handle);
  static void OnEnvCleanup(napi_async_cleanup_hook_handle hook, void* arg);

  State* state_ = nullptr;  // non-null while active
  Napi::AsyncContext context_;
  int fd_;
  bool refed_ = true;
  bool closed_ = false;
  bool pinned_ = false;  // ObjectWrap::Ref()'d while active
};

static const char kCallbackKey[] = "_onReadable";

FdPoller::FdPoller(const Napi::CallbackInfo& info)
    : Napi::ObjectWrap<FdPoller>(info), context_(info.Env(), "lazysnap.FdPoller", info.This().As<Napi::Object>()) {
  fd_ = ArgFd(info, 0, "fd");
  if (!info[1].IsFunction()) {
    throw Napi::TypeError::New(info.Env(), "The \"onReadable\" argument must be a function");
  }
  // The callback lives on the JS object (not in a persistent reference), so
  // an inactive poller and its callback can be collected together.
  info.This().As<Napi::Object>().DefineProperty(
      Napi::PropertyDescriptor::Value(kCallbackKey, info[1], napi_default));
}

FdPoller::~FdPoller() {
  // Only reachable with a live handle at environment teardown; the wrapper's
  // reference is being deleted anyway, so do not Unref it.
  pinned_ = false;
  Deactivate();
}

void FdPoller::Deactivate() {
  if (state_ != nullptr) {
    State* st = state_;
    state_ = nullptr;
    st->owner = nullptr;
    polledFds.erase(st->fd);
    if (!st->hookRan) {
      napi_remove_async_cleanup_hook(st->hook);
      st->hook = nullptr;
    }
    uv_poll_stop(&st->handle);
    uv_close(reinterpret_cast<uv_handle_t*>(&st->handle), OnClosed);
  }
  if (pinned_) {
    pinned_ = false;
    ObjectWrap::Unref();
  }
}

void FdPoller::OnClosed(uv_handle_t* handle) {
  State* st = static_cast<State*>(handle->data);
  if (st->hookRan) napi_remove_async_cleanup_hook(st->hook);
  delete st;
}

void FdPoller::OnEnvCleanup(napi_async_cleanup_hook_handle hook, void* arg) {
  // The environment (main thread or a worker) is going away with the poller
  // still active: close the handle so that the loop can be closed, and tell
  // Node when that is done (OnClosed).
  State* st = static_cast<State*>(arg);
  st->hook = hook;
  st->hookRan = true;
  if (st->owner != nullptr) {
    st->owner->state_ = nullptr;
    st->owner = nullptr;
    polledFds.erase(st->fd);
    uv_poll_stop(&st->handle);
    uv_close(reinterpret_cast<uv_handle_t*>(&st->handle), OnClosed);
  }
}

void FdPoller::OnPoll(uv_poll_t* handle, int status, int /*events*/) {
  State* st = static_cast<State*>(handle->data);
  FdPoller* self = st->owner;
  if (self == nullptr) return;
  Napi::Env env = self->Env();
  Napi::HandleScope scope(env);
  Napi::Object recv = self->Value();  // keeps the object alive during the call
  Napi::Value arg = env.Null();
  if (status < 0) {
    // libuv has stopped the handle (e.g. POLLERR on the fd).
    arg = ErrnoError(env, -status, "uv_poll").Value();
    self->Deactivate();
  }
  Napi::Value cb = recv.Get(kCallbackKey);
  if (!cb.IsFunction()) return;
  try {
    cb.As<Napi::Function>().MakeCallback(recv, {arg}, self->context_);
  } catch (const Napi::Error& e) {
    // An exception in the callback is an uncaught exception, as it would be
    // in any other event handler.
    napi_fatal_exception(env, e.Value());
  }
}

// start(): poll for UV_READABLE; the callback runs on every loop iteration
// while the fd stays readable (level-triggered), until stop() or close().
Napi::Value FdPoller::Start(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (closed_) {
    Napi::Error e = Napi::Error::New(env, "FdPoller is closed");
    e.Set("code", Napi::String::New(env, "ERR_POLLER_CLOSED"));
    throw e;
  }
  if (state_ != nullptr) return env.Undefined();
  if (polledFds.count(fd_) != 0) {
    Napi::Error e = Napi::Error::New(
        env, "EEXIST: fd " + std::to_string(fd_) + " is already polled by another FdPoller, uv_poll_init");
    e.Set("errno", Napi::Number::New(env, EEXIST));
    e.Set("code", Napi::String::New(env, "EEXIST"));
    e.Set("syscall", Napi::String::New(env, "uv_poll_init"));
    throw e;
  }
  uv_loop_t* loop = nullptr;
  if (napi_get_uv_event_loop(env, &loop) != napi_ok) throw Napi::Error::New(env);
  auto* st = new State();
  st->fd = fd_;
  st->handle.data = st;
  int r = uv_poll_init(loop, &st->handle, fd_);
  if (r != 0) {
    delete st;
    throw ErrnoError(env, -r, "uv_poll_init");
  }
  r = uv_poll_start(&st->handle, UV_READABLE, OnPoll);
  if (r != 0) {
    uv_close(reinterpret_cast<uv_handle_t*>(&st->handle), OnClosed);
    throw ErrnoError(env, -r, "uv_poll_start");
  }
  if (!refed_) uv_unref(reinterpret_cast<uv_handle_t*>(&st->handle));
  if (napi_add_async_cleanup_hook(env, OnEnvCleanup, st, &st->hook) != napi_ok) {
    uv_close(reinterpret_cast<uv_handle_t*>(&st->handle), OnClosed);
    throw Napi::Error::New(env);
  }
  st->owner = this;
  state_ = st;
  polledFds.insert(fd_);
  if (!pinned_) {
    pinned_ = true;
    ObjectWrap::Ref();
  }
  return env.Undefined();
}

Napi::Value FdPoller::Stop(const Napi::CallbackInfo& info) {
  Deactivate();
  return info.Env().Undefined();
}

// close(): stop for good (the fd itself is not closed). Safe to call more
// than once and from the callback.
Napi::Value FdPoller::Close(const Napi::CallbackInfo& info) {
  Deactivate();
  closed_ = true;
  return info.Env().Undefined();
}

Napi::Value FdPoller::Ref(const Napi::CallbackInfo& info) {
  refed_ = true;
  if (state_ != nullptr) uv_ref(reinterpret_cast<uv_handle_t*>(&state_->handle));
  return info.This();
}

Napi::Value FdPoller::Unref(const Napi::CallbackInfo& info) {
  refed_ = false;
  if (state_ != nullptr) uv_unref(reinterpret_cast<uv_handle_t*>(&state_->handle));
  return info.This();
}

// hasRef(): whether the poller keeps the process alive while it is active.
Napi::Value FdPoller::HasRef(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), refed_ && !closed_);
}

Napi::Value FdPoller::GetFd(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), fd_); }

Napi::Value FdPoller::GetActive(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), state_ != nullptr);
}

Napi::Value FdPoller::GetClosed(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), closed_); }

void FdPoller::Init(Napi::Env env, Napi::Object exports) {
  Napi::Function cls = DefineClass(env, "FdPoller",
                                   {
                                       InstanceMethod<&FdPoller::Start>("start"),
                                       InstanceMethod<&FdPoller::Stop>("stop"),
                                       InstanceMethod<&FdPoller::Close>("close"),
                                       InstanceMethod<&FdPoller::Ref>("ref"),
                                       InstanceMethod<&FdPoller::Unref>("unref"),
                                       InstanceMethod<&FdPoller::HasRef>("hasRef"),
                                       InstanceAccessor<&FdPoller::GetFd>("fd"),
                                       InstanceAccessor<&FdPoller::GetActive>("active"),
                                       InstanceAccessor<&FdPoller::GetClosed>("closed"),
                                   });
  exports.Set("FdPoller", cls);
}

void InitPoller(Napi::Env env, Napi::Object exports) { FdPoller::Init(env, exports); }

}  // namespace lazysnap
