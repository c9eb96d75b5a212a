// Chunk decoding: decompress a nydus chunk into the caller's (aligned)
// buffer and check its digest, on the libuv threadpool, so a READ's chunks
// decode on every core and the loop keeps serving the kernel; small chunks
// on the calling thread, where the hand-off would cost more than the work.
// blake3 is the BLAKE3 team's C implementation (SIMD chosen by cpuid),
// sha256 is OpenSSL's (the copy Node links), zstd and lz4 are the system's
// libzstd and liblz4. Gzip chunks stay in JS (zlib). The converter's zstd
// compression runs here too, for the same reason: every core.
//
// A chunk's compressed bytes may come as a list of pieces: the response
// body's buffers as the socket delivered them, so a Range GET is never
// copied into one buffer first. zstd decodes across them straight into dst.
#define ZSTD_STATIC_LINKING_ONLY  // ZSTD_d_stableOutBuffer: decode into dst, not through a window buffer
#include <lz4.h>
#include <openssl/evp.h>
#include <zstd.h>
#include <zstd_errors.h>

#include <cstring>
#include <string>
#include <vector>

#include "../deps/blake3/blake3.h"
#include "native.h"

namespace lazysnap {

// The values of image/rafs/bootstrap.ts's Compressor and DigestAlgo.
enum Compressor { kNone = 0, kLz4Block = 1, kZstd = 3 };
enum DigestAlgo { kBlake3 = 0, kSha256 = 1 };
constexpr size_t kDigestSize = 32;

static void Blake3(const uint8_t* data, size_t len, uint8_t out[kDigestSize]) {
  blake3_hasher h;
  blake3_hasher_init(&h);
  blake3_hasher_update(&h, data, len);
  blake3_hasher_finalize(&h, out, kDigestSize);
}

static bool Sha256(const uint8_t* data, size_t len, uint8_t out[kDigestSize]) {
  unsigned int n = 0;
  return EVP_Digest(data, len, out, &n, EVP_sha256(), nullptr) == 1 && n == kDigestSize;
}

static std::string Hex(const uint8_t* p, size_t n) {
  static const char* d = "0123456789abcdef";
  std::string s;
  for (size_t i = 0; i < n; i++) {
    s += d[p[i] >> 4];
    s += d[p[i] & 15];
  }
  return s;
}

// A piece of a chunk's compressed bytes.
struct Span {
  const uint8_t* p;
  size_t n;
};

// The pieces one after another into out (which holds them all).
static void CopySpans(const std::vector<Span>& src, uint8_t* out) {
  for (const Span& s : src) {
    memcpy(out, s.p, s.n);
    out += s.n;
  }
}

// zstd across pieces: the decoder reads each in place (a block that straddles
// two is gathered in its own small buffer) and writes straight into dst.
static std::string ZstdSpans(ZSTD_DCtx* dctx, const std::vector<Span>& src, uint8_t* dst, size_t dst_len, size_t* n) {
  ZSTD_DCtx_reset(dctx, ZSTD_reset_session_only);  // a failed chunk may have left a frame half read
  size_t r = ZSTD_DCtx_setParameter(dctx, ZSTD_d_stableOutBuffer, 1);
  if (ZSTD_isError(r)) return std::string("zstd: ") + ZSTD_getErrorName(r);
  ZSTD_outBuffer out = {dst, dst_len, 0};
  size_t left = 1;  // 0 once a frame has ended and no other has begun
  for (const Span& s : src) {
    ZSTD_inBuffer in = {s.p, s.n, 0};
    while (in.pos < in.size) {
      size_t in_pos = in.pos, out_pos = out.pos;
      left = ZSTD_decompressStream(dctx, &out, &in);
      if (ZSTD_isError(left)) return std::string("Zstd data does not decompress: ") + ZSTD_getErrorName(left);
      // no progress: dst is full and input remains
      if (in.pos == in_pos && out.pos == out_pos) return "data decompresses to more than " + std::to_string(dst_len) + " bytes";
    }
  }
  // input ends inside a frame: flush what the decoder holds, then it must be complete
  while (left != 0) {
    ZSTD_inBuffer none = {nullptr, 0, 0};
    size_t out_pos = out.pos;
    left = ZSTD_decompressStream(dctx, &out, &none);
    if (ZSTD_isError(left)) return std::string("Zstd data does not decompress: ") + ZSTD_getErrorName(left);
    if (left != 0 && out.pos == out_pos) return "Zstd data does not decompress: the frame is truncated";
  }
  *n = out.pos;
  return "";
}

// Decodes src (its pieces in order, src_len bytes in all) into dst (exactly
// dst_len bytes) and checks the digest. Returns "" when the chunk is good,
// else why not: the caller turns it into a FormatError naming the chunk. Runs
// on a pool thread, or on the JS thread for decodeChunkSync: no N-API here
// either way (each thread has its own decoder contexts).
static std::string Decode(int compressor, const std::vector<Span>& src, size_t src_len, uint8_t* dst, size_t dst_len,
                          int algo, const uint8_t* want) {
  size_t n = 0;
  switch (compressor) {
    case kNone:
      if (src_len != dst_len) return "stored chunk is " + std::to_string(src_len) + " bytes, want " + std::to_string(dst_len);
      CopySpans(src, dst);
      n = src_len;
      break;
    case kZstd: {
      // one context per thread, reused: a context costs about 100 KiB to set up
      thread_local ZSTD_DCtx* dctx = ZSTD_createDCtx();
      if (dctx == nullptr) return "zstd: out of memory";
      if (src.size() > 1) {
        std::string why = ZstdSpans(dctx, src, dst, dst_len, &n);
        if (!why.empty()) return why;
        break;
      }
      n = ZSTD_decompressDCtx(dctx, dst, dst_len, src.empty() ? nullptr : src[0].p, src_len);
      if (ZSTD_isError(n)) return std::string("Zstd data does not decompress: ") + ZSTD_getErrorName(n);
      break;
    }
    case kLz4Block: {
      if (src_len > INT32_MAX || dst_len > INT32_MAX) return "lz4 block too large";
      // an lz4 block decodes from one buffer: pieces are gathered first (nydus's own blobs are zstd by default)
      const uint8_t* in = src.empty() ? nullptr : src[0].p;
      thread_local std::vector<uint8_t> gathered;
      if (src.size() > 1) {
        gathered.resize(src_len);
        CopySpans(src, gathered.data());
        in = gathered.data();
      }
      int r = LZ4_decompress_safe(reinterpret_cast<const char*>(in), reinterpret_cast<char*>(dst),
                                  static_cast<int>(src_len), static_cast<int>(dst_len));
      if (r < 0) return "Lz4Block data does not decompress";
      n = static_cast<size_t>(r);
      break;
    }
    default:
      return "unknown compressor " + std::to_string(compressor);
  }
  if (n != dst_len) return "data decompresses to the wrong size (want " + std::to_string(dst_len) + ")";
  uint8_t got[kDigestSize];
  if (algo == kBlake3) {
    Blake3(dst, dst_len, got);
  } else if (!Sha256(dst, dst_len, got)) {
    return "sha256 failed";
  }
  if (memcmp(got, want, kDigestSize) != 0) {
    return "digest mismatch: got " + Hex(got, kDigestSize) + ", want " + Hex(want, kDigestSize);
  }
  return "";
}

struct DecodeArgs {
  int compressor;
  // src as given (a Uint8Array) or a private copy of the list, so the caller cannot change what is referenced
  Napi::Object src_holder;
  std::vector<Span> src;
  size_t src_len = 0;
  Napi::Uint8Array dst, want;
  int algo;
};

// src: a Uint8Array, or an array of them (the pieces in order). `hold`: keep
// a private copy of the list for a decode that outlives the call.
static void ArgSpans(const Napi::CallbackInfo& info, size_t i, DecodeArgs* a, bool hold) {
  Napi::Value v = info[i];
  auto add = [a](Napi::Uint8Array b) {
    a->src.push_back({b.Data(), b.ByteLength()});
    a->src_len += b.ByteLength();
  };
  if (!v.IsArray()) {
    Napi::Uint8Array b = ArgBytes(info, i, "src");
    add(b);
    if (hold) a->src_holder = b;
    return;
  }
  Napi::Array list = v.As<Napi::Array>();
  Napi::Array own = hold ? Napi::Array::New(info.Env(), list.Length()) : Napi::Array();
  for (uint32_t k = 0; k < list.Length(); k++) {
    Napi::Value e = list.Get(k);
    if (!IsBytes(e)) {
      throw Napi::TypeError::New(info.Env(), "The \"src\" argument must be a Buffer or an array of Buffers");
    }
    add(e.As<Napi::Uint8Array>());
    if (hold) own.Set(k, e);
  }
  if (hold) a->src_holder = own;
}

static DecodeArgs ArgsDecode(const Napi::CallbackInfo& info, bool hold) {
  DecodeArgs a;
  a.compressor = static_cast<int>(ArgInt(info, 0, "compressor", 0, 255));
  ArgSpans(info, 1, &a, hold);
  a.dst = ArgBytes(info, 2, "dst");
  a.algo = static_cast<int>(ArgInt(info, 3, "digestAlgo", kBlake3, kSha256));
  a.want = ArgBytes(info, 4, "want");
  if (a.want.ByteLength() != kDigestSize) throw Napi::RangeError::New(info.Env(), "want must be a 32-byte digest");
  if (a.compressor != kNone && a.compressor != kZstd && a.compressor != kLz4Block) {
    throw Napi::RangeError::New(info.Env(), "compressor must be none, lz4_block or zstd (gzip decodes in JS)");
  }
  return a;
}

// decodeChunk(compressor, src, dst, digestAlgo, want) -> Promise<"" or why not>, on the libuv threadpool. The
// buffers are kept alive (referenced) until it settles; the caller
// must not touch dst meanwhile.
class DecodeWorker : public Napi::AsyncWorker {
 public:
  DecodeWorker(Napi::Env env, DecodeArgs a)
      : Napi::AsyncWorker(env, "lazysnap.decodeChunk"),
        deferred_(Napi::Promise::Deferred::New(env)),
        src_ref_(Napi::Persistent(a.src_holder)),
        dst_ref_(Napi::Persistent(static_cast<Napi::Object>(a.dst))),
        want_ref_(Napi::Persistent(static_cast<Napi::Object>(a.want))),
        compressor_(a.compressor),
        algo_(a.algo),
        src_(std::move(a.src)),
        src_len_(a.src_len),
        dst_(a.dst.Data()),
        dst_len_(a.dst.ByteLength()),
        want_(a.want.Data()) {}

  Napi::Promise Promise() { return deferred_.Promise(); }

 protected:
  void Execute() override {
    why_ = Decode(compressor_, src_, src_len_, dst_, dst_len_, algo_, want_);
  }
  void OnOK() override { deferred_.Resolve(Napi::String::New(Env(), why_)); }
  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }

 private:
  Napi::Promise::Deferred deferred_;
  Napi::ObjectReference src_ref_, dst_ref_, want_ref_;
  // raw views taken on the JS thread: napi values are not valid on the pool
  int compressor_, algo_;
  std::vector<Span> src_;
  size_t src_len_;
  uint8_t* dst_;
  size_t dst_len_;
  const uint8_t* want_;
  std::string why_;
};

static Napi::Value DecodeChunk(const Napi::CallbackInfo& info) {
  auto* w = new DecodeWorker(info.Env(), ArgsDecode(info, true));  // deletes itself when done
  Napi::Promise p = w->Promise();
  w->Queue();
  return p;
}

// decodeChunkSync(compressor, src, dst, digestAlgo, want) -> "" or why not, on
// the calling thread. For small chunks: handing one to the pool (a futex wake,
// the waker preempted by the thread it woke, a promise) cost more than
// decoding it.
static Napi::Value DecodeChunkSync(const Napi::CallbackInfo& info) {
  DecodeArgs a = ArgsDecode(info, false);
  return Napi::String::New(info.Env(), Decode(a.compressor, a.src, a.src_len, a.dst.Data(), a.dst.ByteLength(), a.algo, a.want.Data()));
}

// compressChunks(src, lengths, dst, sizes, level) -> Promise<void>: zstd, one
// frame per chunk. The chunks lie back to back in src (lengths[i] bytes each);
// chunk i's frame goes to dst at the same offset as its bytes in src, and must
// fit in as many bytes, else sizes[i] = 0 ("store it raw"). One job for a batch
// of chunks: a layer of small files has tens of thousands of them, and a job
// each cost more than compressing them (a call, a pool hand-off, a promise).
class CompressWorker : public Napi::AsyncWorker {
 public:
  CompressWorker(Napi::Env env, Napi::Uint8Array src, Napi::Uint32Array lengths, Napi::Uint8Array dst,
                 Napi::Uint32Array sizes, int level)
      : Napi::AsyncWorker(env, "lazysnap.compressChunks"),
        deferred_(Napi::Promise::Deferred::New(env)),
        src_ref_(Napi::Persistent(static_cast<Napi::Object>(src))),
        dst_ref_(Napi::Persistent(static_cast<Napi::Object>(dst))),
        sizes_ref_(Napi::Persistent(static_cast<Napi::Object>(sizes))),
        src_(src.Data()),
        dst_(dst.Data()),
        sizes_(sizes.Data()),
        lengths_(lengths.Data(), lengths.Data() + lengths.ElementLength()),
        level_(level) {}

  Napi::Promise Promise() { return deferred_.Promise(); }

 protected:
  void Execute() override {
    // one context per thread, reused, as for decoding
    thread_local ZSTD_CCtx* cctx = ZSTD_createCCtx();
    if (cctx == nullptr) return SetError("zstd: out of memory");
    ZSTD_CCtx_reset(cctx, ZSTD_reset_session_and_parameters);
    size_t r = ZSTD_CCtx_setParameter(cctx, ZSTD_c_compressionLevel, level_);
    if (ZSTD_isError(r)) return SetError(std::string("zstd: ") + ZSTD_getErrorName(r));
    size_t off = 0;
    for (size_t i = 0; i < lengths_.size(); i++) {
      size_t n = lengths_[i];
      ZSTD_CCtx_reset(cctx, ZSTD_reset_session_only);
      r = ZSTD_compress2(cctx, dst_ + off, n, src_ + off, n);
      if (ZSTD_isError(r)) {
        if (ZSTD_getErrorCode(r) != ZSTD_error_dstSize_tooSmall) return SetError(std::string("zstd: ") + ZSTD_getErrorName(r));
        r = 0;
      }
      sizes_[i] = static_cast<uint32_t>(r);
      off += n;
    }
  }
  void OnOK() override { deferred_.Resolve(Env().Undefined()); }
  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }

 private:
  Napi::Promise::Deferred deferred_;
  Napi::ObjectReference src_ref_, dst_ref_, sizes_ref_;
  const uint8_t* src_;
  uint8_t* dst_;
  uint32_t* sizes_;
  std::vector<uint32_t> lengths_;  // copied: the caller may reuse its array at once
  int level_;
};

static Napi::Value CompressChunks(const Napi::CallbackInfo& info) {
  Napi::Uint8Array src = ArgBytes(info, 0, "src");
  Napi::Uint32Array lengths = ArgU32s(info, 1, "lengths");
  Napi::Uint8Array dst = ArgBytes(info, 2, "dst");
  Napi::Uint32Array sizes = ArgU32s(info, 3, "sizes");
  int level = static_cast<int>(ArgInt(info, 4, "level", ZSTD_minCLevel(), ZSTD_maxCLevel()));
  size_t total = 0;
  for (size_t i = 0; i < lengths.ElementLength(); i++) total += lengths[i];
  if (total > src.ByteLength() || total > dst.ByteLength()) {
    throw Napi::RangeError::New(info.Env(), "the lengths add up to more than src or dst holds");
  }
  if (sizes.ElementLength() < lengths.ElementLength()) throw Napi::RangeError::New(info.Env(), "sizes is shorter than lengths");
  auto* w = new CompressWorker(info.Env(), src, lengths, dst, sizes, level);  // deletes itself when done
  Napi::Promise p = w->Promise();
  w->Queue();
  return p;
}

// blake3(data) -> 32-byte Buffer
static Napi::Value Blake3Digest(const Napi::CallbackInfo& info) {
  Napi::Uint8Array data = ArgBytes(info, 0, "data");
  Napi::Buffer<uint8_t> out = Napi::Buffer<uint8_t>::New(info.Env(), kDigestSize);
  Blake3(data.Data(), data.ByteLength(), out.Data());
  return out;
}

void InitChunk(Napi::Env env, Napi::Object exports) {
  exports.Set("decodeChunk", Napi::Function::New(env, DecodeChunk, "decodeChunk"));
  exports.Set("decodeChunkSync", Napi::Function::New(env, DecodeChunkSync, "decodeChunkSync"));
  exports.Set("compressChunks", Napi::Function::New(env, CompressChunks, "compressChunks"));
  exports.Set("blake3", Napi::Function::New(env, Blake3Digest, "blake3"));
}

}  // namespace lazysnap
