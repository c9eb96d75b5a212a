#include <uv.h>

#include <cmath>
#include <cstring>
#include <string>

#include "native.h"

namespace lazysnap {

Napi::Error ErrnoError(Napi::Env env, int err, const char* syscall) {
  // libuv's names and descriptions are the ones Node uses for its own errors
  // (uv error codes are negated errno values on Unix).
  char name[64];
  char desc[128];
  uv_err_name_r(-err, name, sizeof name);
  uv_strerror_r(-err, desc, sizeof desc);
  if (std::strncmp(name, "Unknown", 7) == 0) {
    const char* n = strerrorname_np(err);  // glibc >= 2.32
    if (n != nullptr) {
      std::snprintf(name, sizeof name, "%s", n);
      std::snprintf(desc, sizeof desc, "%s", std::strerror(err));
    }
  }
  std::string msg = std::string(name) + ": " + desc + ", " + syscall;
  Napi::Error e = Napi::Error::New(env, msg);
  e.Set("errno", Napi::Number::New(env, err));
  e.Set("code", Napi::String::New(env, name));
  e.Set("syscall", Napi::String::New(env, syscall));
  return e;
}

static double ArgNumber(const Napi::CallbackInfo& info, size_t i, const char* name) {
  Napi::Value v = info[i];
  if (!v.IsNumber()) {
    throw Napi::TypeError::New(info.Env(), std::string("The \"") + name + "\" argument must be a number");
  }
  return v.As<Napi::Number>().DoubleValue();
}

int64_t ArgInt(const Napi::CallbackInfo& info, size_t i, const char* name, int64_t min, int64_t max) {
  double d = ArgNumber(info, i, name);
  if (!std::isfinite(d) || std::trunc(d) != d || d < static_cast<double>(min) ||
      d > static_cast<double>(max)) {
    throw Napi::RangeError::New(info.Env(), std::string("The \"") + name + "\" argument must be an integer >= " +
                                                std::to_string(min) + " and <= " + std::to_string(max));
  }
  return static_cast<int64_t>(d);
}

int ArgFd(const Napi::CallbackInfo& info, size_t i, const char* name) {
  return static_cast<int>(ArgInt(info, i, name, 0, INT32_MAX));
}

bool IsBytes(const Napi::Value& v) {
  return v.IsTypedArray() && v.As<Napi::TypedArray>().TypedArrayType() == napi_uint8_array;
}

Napi::Uint8Array ArgBytes(const Napi::CallbackInfo& info, size_t i, const char* name) {
  Napi::Value v = info[i];
  if (!IsBytes(v)) {
    throw Napi::TypeError::New(info.Env(),
                               std::string("The \"") + name + "\" argument must be a Buffer or Uint8Array");
  }
  return v.As<Napi::Uint8Array>();
}

Napi::Uint32Array ArgU32s(const Napi::CallbackInfo& info, size_t i, const char* name) {
  Napi::Value v = info[i];
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_uint32_array) {
    throw Napi::TypeError::New(info.Env(), std::string("The \"") + name + "\" argument must be a Uint32Array");
  }
  return v.As<Napi::Uint32Array>();
}

}  // namespace lazysnap
