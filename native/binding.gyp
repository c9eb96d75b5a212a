# Built by the root package's "install" script: node-gyp rebuild -C native
{
  "targets": [
    {
      "target_name": "lazysnap_native",
      "sources": [
        "src/addon.cc",
        "src/errors.cc",
        "src/io.cc",
        "src/poller.cc",
        "src/fdpass.cc",
        "src/fanotify.cc",
        "src/fdkeeper.cc",
        "src/mount.cc",
        "src/chunk.cc",
        # BLAKE3's C implementation from Debian (see scripts/blake3-src.sh)
        "<!@(bash ../scripts/blake3-src.sh)"
      ],
      "libraries": ["-lzstd", "-llz4"],
      # node-addon-api with C++ exceptions: a Napi::Error thrown in C++ becomes
      # a JS exception at the N-API boundary.
      "dependencies": [
        "<!(node -p \"require('node-addon-api').targets\"):node_addon_api_except"
      ],
      "defines": ["NAPI_VERSION=8"],
      # node's common.gypi builds Release with -O3 and -std=gnu++17; use -O2.
      "cflags!": ["-O3"],
      "cflags_cc!": ["-O3"],
      "cflags": ["-O2", "-fvisibility=hidden"],
      "cflags_cc": ["-O2", "-fvisibility=hidden"]
    }
  ]
}
