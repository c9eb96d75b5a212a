#!/bin/sh
# Installs (or upgrades) lazysnap from an unpacked release artifact, as
# `install` at its top. No compiler, npm or network is needed.
#
#   ./install [--prefix DIR] [--systemd] [--unit-dir DIR] [--restart]
#
# The version goes to PREFIX/lib/lazysnap/VERSION (default PREFIX /usr/local),
# then PREFIX/lib/lazysnap/current is switched to it in one rename, and
# PREFIX/bin/lazysnap and lazysnapd start whatever `current` names. The
# previous version stays (workers a running lazysnapd started from it may
# still serve); older ones are removed. --systemd installs the unit
# (ExecStart=PREFIX/bin/lazysnapd) and enables it; --restart restarts a
# running lazysnapd: the upgrade, which containers do not notice.
# --unit-dir DIR writes the unit there instead and leaves systemctl alone
# (packaging, tests).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
prefix=/usr/local
systemd=false
unitdir=
restart=false
while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) prefix=${2:?--prefix needs a directory}; shift 2 ;;
    --prefix=*) prefix=${1#--prefix=}; shift ;;
    --systemd) systemd=true; shift ;;
    --unit-dir) unitdir=${2:?--unit-dir needs a directory}; shift 2 ;;
    --restart) restart=true; shift ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) echo "install: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
case "$prefix" in /*) ;; *) echo "install: --prefix must be absolute" >&2; exit 2 ;; esac
version=$("$here/node/bin/node" -p 'require(process.argv[1]).version' "$here/package.json")
lib=$prefix/lib/lazysnap
mkdir -p "$lib" "$prefix/bin"

if [ -e "$lib/$version" ]; then
  echo "install: $version is already in $lib; switching to it" >&2
else
  rm -rf "$lib/.$version.tmp"
  cp -a "$here" "$lib/.$version.tmp"
  mv "$lib/.$version.tmp" "$lib/$version"
fi
previous=$(readlink "$lib/current" 2>/dev/null || true)
ln -sfn "$version" "$lib/.current.tmp"
mv -T "$lib/.current.tmp" "$lib/current"

for cmd in lazysnap lazysnapd; do
  cat > "$prefix/bin/.$cmd.tmp" <<EOF
#!/bin/sh
# lazysnap's $cmd, as installed by $lib/$version/install: runs the version $lib/current names.
exec "$lib/current/node/bin/node" "$lib/current/dist/cmd/$cmd.js" "\$@"
EOF
  chmod 0755 "$prefix/bin/.$cmd.tmp"
  mv "$prefix/bin/.$cmd.tmp" "$prefix/bin/$cmd"
done

# keep `current` and the one before it
for d in "$lib"/*; do
  v=$(basename "$d")
  [ "$v" = current ] || [ "$v" = "$version" ] || [ "$v" = "$previous" ] || rm -rf "$d"
done

unit() { sed "s|^ExecStart=.*|ExecStart=$prefix/bin/lazysnapd|; s|/usr/local/lib/lazysnap/|$lib/|" "$here/systemd/lazysnapd.service" > "$1"; }
if [ -n "$unitdir" ]; then
  mkdir -p "$unitdir"
  unit "$unitdir/lazysnapd.service"
elif $systemd; then
  unit /etc/systemd/system/lazysnapd.service
  systemctl daemon-reload
  systemctl enable lazysnapd.service
fi
if $restart && systemctl is-active --quiet lazysnapd.service 2>/dev/null; then
  systemctl restart lazysnapd.service
fi
echo "install: lazysnap $version in $lib (was: ${previous:-none}); $prefix/bin/lazysnapd --version says $("$prefix/bin/lazysnapd" --version)"
