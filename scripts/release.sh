#!/usr/bin/env bash
# Builds the release artifact a node installs without a compiler, npm or the
# test tools: release/lazysnap-<version>-linux-<arch>.tar.gz holding dist/
# (no tests, no benchmarks), the production node_modules with their native
# addons built, lazysnap's own addon, the .proto files, the Node binary it was
# built and tested with (Debian 12's nodejs is 18, too old), the systemd unit
# and `install`. Prints the artifact's path. LAZYSNAP_VERSION overrides the
# version (the upgrade test builds a second one so).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/install.sh
version=${LAZYSNAP_VERSION:-$(node -p "require('./package.json').version")}
[[ "$version" =~ ^[0-9A-Za-z.+-]{1,64}$ ]] || { echo "release: bad version \"$version\"" >&2; exit 2; }
name=lazysnap-$version
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
stage=$tmp/$name
mkdir -p "$stage/native/build/Release" "$stage/node/bin" "$stage/systemd"
node -e 'const p=require("./package.json"); p.version=process.argv[1]; delete p.devDependencies; delete p.scripts;
  require("fs").writeFileSync(process.argv[2], JSON.stringify(p, null, 2)+"\n")' "$version" "$stage/package.json"
cp package-lock.json README.md "$stage/"
cp -r dist "$stage/dist"
rm -rf "$stage/dist/test" "$stage/dist/bench" "$stage/dist/scripts" "$stage/dist/.built"
cp -r proto "$stage/proto"
find "$stage/proto" -name '*.ts' -delete
cp native/build/Release/lazysnap_native.node "$stage/native/build/Release/"
cp -r node_modules "$stage/node_modules"
# the lock's production tree only; prune runs no scripts and needs no network
(cd "$stage" && npm prune --omit=dev --ignore-scripts --no-audit --no-fund >/dev/null)
# what only a rebuild needs: object files, sources of bundled C libraries
find "$stage/node_modules" \( -path '*/build/Release/obj.target' -o -path '*/build/Release/.deps' -o -path '*/better-sqlite3/deps' -o -path '*/better-sqlite3/src' \) -prune -exec rm -rf {} +
rm -f "$stage/node_modules/.lazysnap-lock.sha256" "$stage/node_modules/.package-lock.json"
cp "$(readlink -f "$(command -v node)")" "$stage/node/bin/node"
cp systemd/lazysnapd.service "$stage/systemd/"
cp scripts/release-install.sh "$stage/install"
chmod 0755 "$stage/install"
mkdir -p release
out=release/$name-linux-$(node -p process.arch).tar.gz
tar -C "$tmp" -czf "$out.tmp" "$name"
mv "$out.tmp" "$out"
echo "$out"
