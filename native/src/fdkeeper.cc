// An fd table that outlives its process: a child made with clone(CLONE_FILES
// | CLONE_VM) shares the caller's table and address space and does nothing
// else. When the caller is SIGKILLed, the table (every fd it had open) stays
// with the child, so another process can still see, through
// /proc/<child>/fd, which file each fd named. The fanotify worker needs that
// for an event it read but died before writing down (see
// worker/fanotify/keeper.ts). The child lives until it is killed.
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "native.h"

namespace lazysnap {

static constexpr size_t kKeeperStack = 64 * 1024;
static constexpr const char* kKeeperComm = "lazysnap-fdkeep";

// Runs on its own small stack in the shared address space: it must touch
// nothing of the caller's (no malloc, no errno on success paths), so it makes
// only syscalls. It starts with every signal blocked (the caller's mask at
// clone). Its handlers are a copy of the caller's (no CLONE_SIGHAND): the
// terminating ones get their default action back before they are unblocked,
// so a kill ends it instead of running the caller's handler on this stack.
static int KeeperMain(void*) {
  syscall(SYS_prctl, PR_SET_NAME, kKeeperComm, 0, 0, 0);
  struct sigaction dfl = {};
  dfl.sa_handler = SIG_DFL;
  sigset_t term;
  sigemptyset(&term);
  for (int sig : {SIGTERM, SIGINT, SIGHUP}) {
    sigaction(sig, &dfl, nullptr);
    sigaddset(&term, sig);
  }
  sigprocmask(SIG_UNBLOCK, &term, nullptr);
  // ppoll of no fds and no timeout: sleeps until a signal (SYS_pause does not exist on arm64)
  for (;;) syscall(SYS_ppoll, nullptr, 0, nullptr, nullptr, 0);
  return 0;
}

// keepFdTable(): the keeper's pid.
static Napi::Value KeepFdTable(const Napi::CallbackInfo& info) {
  // Never unmapped: the keeper runs on it for as long as it lives, which may be longer than the caller.
  void* stack = mmap(nullptr, kKeeperStack, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
  if (stack == MAP_FAILED) throw ErrnoError(info.Env(), errno, "mmap");
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  // No exit signal: the caller's loop never hears of it (libuv reaps only what it spawned).
  int pid = clone(KeeperMain, static_cast<char*>(stack) + kKeeperStack, CLONE_VM | CLONE_FILES, nullptr);
  int err = errno;
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  if (pid < 0) {
    munmap(stack, kKeeperStack);
    throw ErrnoError(info.Env(), err, "clone");
  }
  return Napi::Number::New(info.Env(), pid);
}

// pidfdGetfd(pid, fd): a copy of fd `fd` of process `pid` (pidfd_open +
// pidfd_getfd, Linux >= 5.6; close-on-exec). How a restarted lazysnapd takes
// the fanotify group back from a dead worker's keeper.
static Napi::Value PidfdGetfd(const Napi::CallbackInfo& info) {
  auto pid = static_cast<pid_t>(ArgInt(info, 0, "pid", 1, 0x7fffffff));
  int target = ArgFd(info, 1, "fd");
  int pidfd = static_cast<int>(syscall(SYS_pidfd_open, pid, 0));
  if (pidfd < 0) throw ErrnoError(info.Env(), errno, "pidfd_open");
  int fd = static_cast<int>(syscall(SYS_pidfd_getfd, pidfd, target, 0));
  int err = errno;
  close(pidfd);
  if (fd < 0) throw ErrnoError(info.Env(), err, "pidfd_getfd");
  return Napi::Number::New(info.Env(), fd);
}

// pidfdOpen(pid): a pidfd (close-on-exec), readable once the process has
// exited. lazysnapd opens one for each worker it starts, before its loop can
// reap the child, so the fd names that process and no later one with its pid.
static Napi::Value PidfdOpen(const Napi::CallbackInfo& info) {
  auto pid = static_cast<pid_t>(ArgInt(info, 0, "pid", 1, 0x7fffffff));
  int fd = static_cast<int>(syscall(SYS_pidfd_open, pid, 0));
  if (fd < 0) throw ErrnoError(info.Env(), errno, "pidfd_open");
  return Napi::Number::New(info.Env(), fd);
}

void InitFdKeeper(Napi::Env env, Napi::Object exports) {
  exports.Set("pidfdGetfd", Napi::Function::New(env, PidfdGetfd, "pidfdGetfd"));
  exports.Set("pidfdOpen", Napi::Function::New(env, PidfdOpen, "pidfdOpen"));
  exports.Set("keepFdTable", Napi::Function::New(env, KeepFdTable, "keepFdTable"));
  exports.Set("FD_KEEPER_COMM", Napi::String::New(env, kKeeperComm));
}

}  // namespace lazysnap
