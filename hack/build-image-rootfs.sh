#!/bin/sh
# Runs inside the Dockerfile's rootfs stage: copies into ROOT only what the controller needs
# at run time, at the paths the base image has them, so that the image can start from
# scratch (no shell, no package manager, no pip):
#   - the virtualenv and the interpreter its bin/python points at (every symlink on the way);
#   - the standard library without test suites, idle, tkinter, turtle, ensurepip, lib2to3,
#     pydoc data and the static libpython (precompiled here: the root is read-only later);
#   - every shared library that the interpreter and any extension module (stdlib or
#     virtualenv) loads, found with ldd, and the dynamic loader;
#   - the CA bundle of the base, a passwd/group entry for uid 65532, and /tmp.
# Works on the official python:*-slim images (/usr/local) and on Debian's python3 (/usr).
# Usage: build-image-rootfs.sh ROOT VENV
set -eu
root=$1
venv=$2

# copy PATH: the file at the same path under $root; symlinks are kept and their targets
# copied as well, so that the chain (venv/bin/python -> python3 -> python3.11) resolves.
copy() {
  p=$1
  while :; do
    [ -e "$root$p" ] || [ -L "$root$p" ] && return 0
    mkdir -p "$root$(dirname "$p")"
    cp -a "$p" "$root$p"
    [ -L "$p" ] || return 0
    target=$(readlink "$p")
    case $target in /*) p=$target ;; *) p=$(dirname "$p")/$target ;; esac
  done
}

# Merged /usr: keep /lib, /lib64, /bin and /sbin as the same symlinks as in the base.
mkdir -p "$root"
for d in /bin /sbin /lib /lib64; do
  if [ -L "$d" ]; then
    cp -a "$d" "$root$d"
    t=$(readlink "$d")
    case $t in /*) mkdir -p "$root$t" ;; *) mkdir -p "$root/$t" ;; esac
  fi
done

mkdir -p "$root$(dirname "$venv")"
cp -a "$venv" "$root$(dirname "$venv")/"
link=$(readlink "$venv/bin/python")
case $link in
  /*) copy "$link" ;;
  *) echo "build-image-rootfs: $venv/bin/python must be an absolute symlink (python -m venv)" >&2; exit 1 ;;
esac
python=$(readlink -f "$venv/bin/python")
stdlib=$("$python" -c 'import sysconfig; print(sysconfig.get_path("stdlib"))')

"$python" -m compileall -q -j 0 "$stdlib" >/dev/null || true
mkdir -p "$root$stdlib"
(cd "$stdlib" && tar -cf - \
   --exclude=./test --exclude='./*/test' --exclude='./*/tests' --exclude=./idlelib \
   --exclude=./tkinter --exclude=./turtledemo --exclude=./turtle.py --exclude=./ensurepip \
   --exclude=./lib2to3 --exclude=./pydoc_data --exclude='./config-*' \
   --exclude=./site-packages --exclude=./dist-packages .) | (cd "$root$stdlib" && tar -xf -)

# Shared libraries: ldd prints "name => /path (addr)" and, for the loader, "/path (addr)".
{
  echo "$python"
  find "$stdlib/lib-dynload" "$venv" -name '*.so*' -type f
} | while read -r obj; do
  ldd "$obj" 2>/dev/null | sed -n 's#.*=> \(/[^ ]*\) .*#\1#p; s#^[[:space:]]*\(/[^ ]*\) (.*#\1#p'
done | sort -u | while read -r lib; do
  copy "$lib"
done

mkdir -p "$root/etc/ssl/certs" "$root/tmp"
chmod 1777 "$root/tmp"
cp -L /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/"
echo 'nonroot:x:65532:65532:ack-secret-manager:/tmp:/nonexistent' >"$root/etc/passwd"
echo 'nonroot:x:65532:' >"$root/etc/group"
