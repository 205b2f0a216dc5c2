#!/bin/sh
# Checks the Debian 12 packages lua-futures needs. Run as root, installs the
# missing ones with apt-get; otherwise prints the exact command and fails.
missing=""
need() { # package, then a test that succeeds when it is present
  pkg=$1; shift
  "$@" >/dev/null 2>&1 || missing="$missing $pkg"
}
# Whether the Debian package $1 is installed (a look at dpkg's database).
installed() {
  [ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null)" = installed ]
}
need lua5.4          command -v lua5.4
need liblua5.4-dev   pkg-config --exists lua5.4
need lua-busted      command -v busted
need build-essential command -v cc
need build-essential command -v make
need pkg-config      command -v pkg-config
need luarocks        command -v luarocks
need lua-luv         installed lua-luv
need lua-cqueues     installed lua-cqueues
need openmpi-bin     installed openmpi-bin
need libopenmpi-dev  installed libopenmpi-dev
[ -z "$missing" ] && exit 0
# pkg-config itself may be the missing piece of the liblua5.4-dev check
command -v pkg-config >/dev/null 2>&1 || missing="$missing liblua5.4-dev"
missing=$(printf '%s\n' $missing | sort -u | tr '\n' ' ')
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "deps: installing $missing"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null || exit 1
else
  echo "deps: missing packages. Install them with:" >&2
  echo "  sudo apt-get install -y $missing" >&2
  exit 1
fi
