#!/bin/sh
# PID 1 of the UML guest that kernel/uml-run.sh boots. The guest's / is the
# host's / (hostfs); /run, /dev, /proc and /sys are its own. Runs the command
# in $LS_RUN/cmd.sh with the caller's environment, its output into files the
# host streams, records the exit status, and powers off.
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PATH
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mountpoint -q /dev || mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
[ -e /dev/fd ] || ln -s /proc/self/fd /dev/fd
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
mount -t tmpfs -o mode=755,size=90% tmpfs /run    # unix sockets do not work on hostfs; the cache fs lives here too
mount -t cgroup2 cgroup2 /sys/fs/cgroup 2>/dev/null
ip link set lo up 2>/dev/null || busybox ifconfig lo 127.0.0.1 up 2>/dev/null

# The misc minor of /dev/cachefiles is dynamic.
if [ ! -c /dev/cachefiles ]; then
  minor=$(awk '$2 == "cachefiles" {print $1}' /proc/misc)
  [ -n "$minor" ] && mknod /dev/cachefiles c 10 "$minor"
fi
# cachefiles needs a cache dir with xattrs: ext4 on a loop file in guest RAM;
# discard hands deleted cache files back to RAM (the loop file is on tmpfs).
if [ "${LS_FSCACHE_MB:-256}" != 0 ]; then
  mkdir -p /run/fscache
  truncate -s "${LS_FSCACHE_MB:-256}M" /run/fscache.img
  mkfs.ext4 -q -F -O ^has_journal /run/fscache.img >/dev/null 2>&1 &&
    mount -o loop,discard /run/fscache.img /run/fscache && export FSCACHE_DIR=/run/fscache
fi

( . "$LS_RUN/env.sh"; cd "$LS_CWD" && . "$LS_RUN/cmd.sh" ) </dev/null >"$LS_RUN/out" 2>"$LS_RUN/err"
echo $? > "$LS_RUN/status"
sync
busybox poweroff -f 2>/dev/null
echo o > /proc/sysrq-trigger
sleep 10
