#!/usr/bin/env python3
"""A stand-in for the two parts of systemd that lazysnapd uses: sd_notify
(READY=1, and FDSTORE=1 with an fd attached) and, on restart, handing the
stored fds back with LISTEN_FDS/LISTEN_PID/LISTEN_FDNAMES as fds 3, 4, ...

usage: fake-systemd.py NOTIFY_SOCKET_PATH -- CMD [ARG...]
Reads commands on stdin, one per line, and answers with JSON lines on stdout:
  start    -> {"event": "started", "pid": N, "listen_fds": K}
  kill9    -> {"event": "killed", "pid": N}
  term     -> {"event": "exited", "pid": N, "status": S}
and reports {"event": "notify", "state": "...", "fds": K} for each notification.
"""
import json, os, select, signal, socket, sys

path = sys.argv[1]
cmd = sys.argv[sys.argv.index('--') + 1:]
if os.path.exists(path):
    os.unlink(path)
sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
sock.bind(path)
store = {}          # name -> fd
child = None

def say(**kw):
    sys.stdout.write(json.dumps(kw) + '\n')
    sys.stdout.flush()

def start():
    global child
    names = list(store.keys())
    fds = [store[n] for n in names]
    pid = os.fork()
    if pid == 0:
        os.dup2(2, 1)  # the service's stdout (its logs) must not mix with our event stream
        for i, fd in enumerate(fds):
            os.dup2(fd, 3 + i)
            os.set_inheritable(3 + i, True)
        env = dict(os.environ, NOTIFY_SOCKET=path)
        if fds:
            env.update(LISTEN_FDS=str(len(fds)), LISTEN_PID=str(os.getpid()), LISTEN_FDNAMES=':'.join(names))
        os.execvpe(cmd[0], cmd, env)
    child = pid
    say(event='started', pid=pid, listen_fds=len(fds))

while True:
    r, _, _ = select.select([sock, sys.stdin], [], [])
    if sock in r:
        msg, fds, _flags, _addr = socket.recv_fds(sock, 4096, 16)
        state = msg.decode()
        fields = dict(l.split('=', 1) for l in state.split('\n') if '=' in l)
        if fields.get('FDSTORE') == '1':
            name = fields.get('FDNAME', 'stored')
            if name in store:
                os.close(store[name])
            store[name] = fds[0] if fds else None
            for extra in fds[1:]:
                os.close(extra)
        else:
            for fd in fds:
                os.close(fd)
        say(event='notify', state=state, fds=len(fds))
    if sys.stdin in r:
        line = sys.stdin.readline()
        if not line:
            break
        c = line.strip()
        if c == 'start':
            start()
        elif c == 'kill9' and child:
            os.kill(child, signal.SIGKILL)
            os.waitpid(child, 0)
            say(event='killed', pid=child)
            child = None
        elif c == 'term' and child:
            os.kill(child, signal.SIGTERM)
            _, st = os.waitpid(child, 0)
            say(event='exited', pid=child, status=st)
            child = None
if child:
    os.kill(child, signal.SIGKILL)
