// Unix-socket fd passing (SCM_RIGHTS), the datagram that sd_notify() sends
// (with fds for systemd's fd store) and FD_CLOEXEC.
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <string>
#include <vector>

#include "native.h"

namespace lazysnap {

// The kernel's limit on fds in one SCM_RIGHTS message (SCM_MAX_FD).
static constexpr size_t kMaxFds = 253;

static std::vector<int> ArgFdList(const Napi::CallbackInfo& info, size_t i) {
  std::vector<int> fds;
  if (info[i].IsUndefined() || info[i].IsNull()) return fds;
  if (!info[i].IsArray()) throw Napi::TypeError::New(info.Env(), "The \"fds\" argument must be an array of fds");
  Napi::Array a = info[i].As<Napi::Array>();
  if (a.Length() > kMaxFds) throw Napi::RangeError::New(info.Env(), "At most 253 fds can be sent at once");
  for (uint32_t k = 0; k < a.Length(); k++) {
    Napi::Value v = a.Get(k);
    double d = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : -1;
    if (!(d >= 0 && d <= INT32_MAX && static_cast<double>(static_cast<int>(d)) == d)) {
      throw Napi::TypeError::New(info.Env(), "The \"fds\" argument must be an array of fds");
    }
    fds.push_back(static_cast<int>(d));
  }
  return fds;
}

// sendmsg(2) of `data` with `fds` attached as SCM_RIGHTS.
static ssize_t SendWithFds(int sock, const struct sockaddr* addr, socklen_t addrlen, const uint8_t* data, size_t len,
                           const std::vector<int>& fds, int* err) {
  struct iovec iov;
  iov.iov_base = const_cast<uint8_t*>(data);
  iov.iov_len = len;
  struct msghdr msg;
  std::memset(&msg, 0, sizeof msg);
  msg.msg_name = const_cast<struct sockaddr*>(addr);
  msg.msg_namelen = addrlen;
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  std::vector<char> control;
  if (!fds.empty()) {
    size_t bytes = fds.size() * sizeof(int);
    control.assign(CMSG_SPACE(bytes), 0);
    msg.msg_control = control.data();
    msg.msg_controllen = control.size();
    struct cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(bytes);
    std::memcpy(CMSG_DATA(c), fds.data(), bytes);
  }
  ssize_t n;
  do {
    n = sendmsg(sock, &msg, MSG_NOSIGNAL);
  } while (n < 0 && errno == EINTR);
  if (n < 0) *err = errno;
  return n;
}

static int SocketType(Napi::Env env, const Napi::Value& v) {
  if (v.IsUndefined()) return SOCK_STREAM;
  std::string t = v.IsString() ? v.As<Napi::String>().Utf8Value() : "";
  if (t == "stream") return SOCK_STREAM;
  if (t == "seqpacket") return SOCK_SEQPACKET;
  if (t == "dgram") return SOCK_DGRAM;
  throw Napi::TypeError::New(env, "The \"type\" argument must be 'stream', 'seqpacket' or 'dgram'");
}

// socketpair(type = 'stream') -> [fd, fd]: AF_UNIX, both ends close-on-exec.
static Napi::Value SocketPair(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int type = SocketType(env, info[0]);
  int sv[2];
  if (socketpair(AF_UNIX, type | SOCK_CLOEXEC, 0, sv) < 0) throw ErrnoError(env, errno, "socketpair");
  Napi::Array a = Napi::Array::New(env, 2);
  a.Set(0u, Napi::Number::New(env, sv[0]));
  a.Set(1u, Napi::Number::New(env, sv[1]));
  return a;
}

// sendFds(sock, data, fds) -> bytes of data sent.
static Napi::Value SendFds(const Napi::CallbackInfo& info) {
  int sock = ArgFd(info, 0, "sock");
  Napi::Uint8Array data = ArgBytes(info, 1, "data");
  std::vector<int> fds = ArgFdList(info, 2);
  int err = 0;
  ssize_t n = SendWithFds(sock, nullptr, 0, data.Data(), data.ByteLength(), fds, &err);
  if (n < 0) throw ErrnoError(info.Env(), err, "sendmsg");
  return Napi::Number::New(info.Env(), static_cast<double>(n));
}

// recvFds(sock, maxData, maxFds, dontWait) -> { data, fds, truncated }.
// recvmsg(2) with MSG_CMSG_CLOEXEC; `truncated` is MSG_CTRUNC (the kernel
// closed the fds that did not fit in maxFds). data.length 0 means EOF on a
// stream socket.
static Napi::Value RecvFds(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int sock = ArgFd(info, 0, "sock");
  size_t maxData = static_cast<size_t>(ArgInt(info, 1, "maxData", 1, 64 << 20));
  size_t maxFds = static_cast<size_t>(ArgInt(info, 2, "maxFds", 0, kMaxFds));
  bool dontWait = info[3].ToBoolean();

  std::vector<uint8_t> buf(maxData);
  struct iovec iov;
  iov.iov_base = buf.data();
  iov.iov_len = maxData;
  std::vector<char> control(maxFds > 0 ? CMSG_SPACE(maxFds * sizeof(int)) : 0);
  struct msghdr msg;
  std::memset(&msg, 0, sizeof msg);
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control.empty() ? nullptr : control.data();
  // CMSG_LEN, not CMSG_SPACE: the kernel fills as many fds as fit, and the
  // padding of CMSG_SPACE would make room for one more than maxFds.
  msg.msg_controllen = maxFds > 0 ? CMSG_LEN(maxFds * sizeof(int)) : 0;
  ssize_t n;
  do {
    n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC | (dontWait ? MSG_DONTWAIT : 0));
  } while (n < 0 && errno == EINTR);
  if (n < 0) throw ErrnoError(env, errno, "recvmsg");

  Napi::Array fds = Napi::Array::New(env);
  uint32_t k = 0;
  if (msg.msg_controllen > 0) {
    for (struct cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
      if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
      size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      for (size_t j = 0; j < count; j++) {
        int fd;
        std::memcpy(&fd, CMSG_DATA(c) + j * sizeof(int), sizeof fd);
        fds.Set(k++, Napi::Number::New(env, fd));
      }
    }
  }
  Napi::Object r = Napi::Object::New(env);
  r.Set("data", Napi::Buffer<uint8_t>::Copy(env, buf.data(), static_cast<size_t>(n)));
  r.Set("fds", fds);
  r.Set("truncated", Napi::Boolean::New(env, (msg.msg_flags & MSG_CTRUNC) != 0));
  return r;
}

// sendDatagram(path, data, fds) -> bytes sent: one datagram, with fds, to the
// AF_UNIX SOCK_DGRAM socket at `path` ('@' first = abstract namespace), from a
// fresh unbound socket. This is what sd_notify() does with $NOTIFY_SOCKET.
static Napi::Value SendDatagram(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsString()) throw Napi::TypeError::New(env, "The \"path\" argument must be a string");
  std::string path = info[0].As<Napi::String>().Utf8Value();
  Napi::Uint8Array data = ArgBytes(info, 1, "data");
  std::vector<int> fds = ArgFdList(info, 2);

  struct sockaddr_un sa;
  std::memset(&sa, 0, sizeof sa);
  sa.sun_family = AF_UNIX;
  if (path.empty() || (path[0] != '/' && path[0] != '@')) throw ErrnoError(env, EAFNOSUPPORT, "connect");
  if (path.size() > sizeof sa.sun_path - (path[0] == '/' ? 1 : 0)) throw ErrnoError(env, ENAMETOOLONG, "connect");
  std::memcpy(sa.sun_path, path.data(), path.size());
  if (path[0] == '@') sa.sun_path[0] = '\0';
  auto len = static_cast<socklen_t>(offsetof(struct sockaddr_un, sun_path) + path.size() + (path[0] == '/' ? 1 : 0));

  int sock = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (sock < 0) throw ErrnoError(env, errno, "socket");
  int err = 0;
  ssize_t n = SendWithFds(sock, reinterpret_cast<struct sockaddr*>(&sa), len, data.Data(), data.ByteLength(), fds, &err);
  close(sock);
  if (n < 0) throw ErrnoError(env, err, "sendmsg");
  return Napi::Number::New(env, static_cast<double>(n));
}

// unixConnect(path) -> fd: a blocking, close-on-exec AF_UNIX stream socket
// connected to `path`. For receiving fds where Node must not read first: a
// net.Socket starts reading on connect, and libuv drops any SCM_RIGHTS fds.
static Napi::Value UnixConnect(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsString()) throw Napi::TypeError::New(env, "The \"path\" argument must be a string");
  std::string path = info[0].As<Napi::String>().Utf8Value();
  struct sockaddr_un sa;
  std::memset(&sa, 0, sizeof sa);
  sa.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof sa.sun_path) throw ErrnoError(env, ENAMETOOLONG, "connect");
  std::memcpy(sa.sun_path, path.data(), path.size());
  int sock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (sock < 0) throw ErrnoError(env, errno, "socket");
  if (connect(sock, reinterpret_cast<struct sockaddr*>(&sa), sizeof sa) < 0) {
    int err = errno;
    close(sock);
    throw ErrnoError(env, err, "connect");
  }
  return Napi::Number::New(env, sock);
}

// setCloexec(fd, on = true): FD_CLOEXEC, which Node has no call for (its
// startup sets it only on fds 0..15, and its own opens use O_CLOEXEC).
static Napi::Value SetCloexec(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info, 0, "fd");
  bool on = info[1].IsUndefined() ? true : info[1].ToBoolean().Value();
  int flags = fcntl(fd, F_GETFD);
  if (flags < 0) throw ErrnoError(env, errno, "fcntl");
  int want = on ? (flags | FD_CLOEXEC) : (flags & ~FD_CLOEXEC);
  if (want != flags && fcntl(fd, F_SETFD, want) < 0) throw ErrnoError(env, errno, "fcntl");
  return env.Undefined();
}

// getCloexec(fd) -> boolean (for tests and assertions).
static Napi::Value GetCloexec(const Napi::CallbackInfo& info) {
  int fd = ArgFd(info, 0, "fd");
  int flags = fcntl(fd, F_GETFD);
  if (flags < 0) throw ErrnoError(info.Env(), errno, "fcntl");
  return Napi::Boolean::New(info.Env(), (flags & FD_CLOEXEC) != 0);
}

void InitFdPass(Napi::Env env, Napi::Object exports) {
  exports.Set("socketpair", Napi::Function::New(env, SocketPair, "socketpair"));
  exports.Set("sendFds", Napi::Function::New(env, SendFds, "sendFds"));
  exports.Set("recvFds", Napi::Function::New(env, RecvFds, "recvFds"));
  exports.Set("sendDatagram", Napi::Function::New(env, SendDatagram, "sendDatagram"));
  exports.Set("setCloexec", Napi::Function::New(env, SetCloexec, "setCloexec"));
  exports.Set("unixConnect", Napi::Function::New(env, UnixConnect, "unixConnect"));
  exports.Set("getCloexec", Napi::Function::New(env, GetCloexec, "getCloexec"));
}

}  // namespace lazysnap
