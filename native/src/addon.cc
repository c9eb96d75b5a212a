#include "native.h"

static Napi::Object InitAll(Napi::Env env, Napi::Object exports) {
  lazysnap::InitIo(env, exports);
  lazysnap::InitPoller(env, exports);
  lazysnap::InitFdPass(env, exports);
  lazysnap::InitFanotify(env, exports);
  lazysnap::InitFdKeeper(env, exports);
  lazysnap::InitMount(env, exports);
  lazysnap::InitChunk(env, exports);
  return exports;
}

NODE_API_MODULE(lazysnap_native, InitAll)
