// lazysnap native addon: the few syscalls Node cannot make (see ../README.md).
#pragma once

#include <napi.h>

#include <cstddef>
#include <cstdint>

namespace lazysnap {

// An Error shaped like Node's own system errors: message "CODE: description,
// syscall", plus .code ('EINVAL'), .errno (positive, e.g. 22) and .syscall.
// `err` is a positive errno value.
Napi::Error ErrnoError(Napi::Env env, int err, const char* syscall);

// Argument helpers; they throw TypeError/RangeError on bad input.
int ArgFd(const Napi::CallbackInfo& info, size_t i, const char* name);
int64_t ArgInt(const Napi::CallbackInfo& info, size_t i, const char* name, int64_t min, int64_t max);
// Whether v is a Uint8Array (a Buffer is one).
bool IsBytes(const Napi::Value& v);
// A Uint8Array (Buffer) argument: pointer and length.
Napi::Uint8Array ArgBytes(const Napi::CallbackInfo& info, size_t i, const char* name);
// A Uint32Array argument.
Napi::Uint32Array ArgU32s(const Napi::CallbackInfo& info, size_t i, const char* name);

void InitIo(Napi::Env env, Napi::Object exports);
void InitPoller(Napi::Env env, Napi::Object exports);
void InitFdPass(Napi::Env env, Napi::Object exports);
void InitFanotify(Napi::Env env, Napi::Object exports);
void InitFdKeeper(Napi::Env env, Napi::Object exports);
void InitMount(Napi::Env env, Napi::Object exports);
void InitChunk(Napi::Env env, Napi::Object exports);

}  // namespace lazysnap
