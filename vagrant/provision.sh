#!/bin/sh
# provision.sh: turn a Debian 12 host into a sluice gateway: install the
# build dependencies, build, `make install`, enable and start sluiced under
# systemd, then check that it answers. The Vagrantfile runs it inside the VM;
# on an EC2 instance run it by hand from a checkout (README.md, "Deploying and operating sluice").
#
#   provision.sh [--dry-run] [--root DIR] [--prefix PREFIX] [--admin ADDR]
#                [--src DIR]
#
#   --dry-run      change nothing outside --root: no apt, no systemctl, no
#                  user; print what would run instead. Still builds (in the
#                  source tree) and installs into --root, then verifies the
#                  installed tree and the unit with systemd-analyze.
#   --root DIR     install under DIR (DESTDIR); required with --dry-run.
#                  SLUICE_ROOT=DIR in the environment means --dry-run --root DIR.
#   --prefix P     install prefix, default /usr/local.
#   --admin ADDR   rewrite `admin:` of a freshly installed rules file (the VM
#                  needs 0.0.0.0:9901: VirtualBox forwards to the guest's NAT
#                  address, not to its loopback). An existing file is kept.
#   --src DIR      the sluice checkout, default the one holding this script.
set -eu

dry_run=0
root=
prefix=/usr/local
admin=
src=$(cd "$(dirname "$0")/.." && pwd)

if [ -n "${SLUICE_ROOT:-}" ]; then
	dry_run=1
	root=$SLUICE_ROOT
fi

usage() {
	sed -n '7,20p' "$0" | sed 's/^# \{0,1\}//' >&2
	exit 2
}

while [ $# -gt 0 ]; do
	case $1 in
	--dry-run) dry_run=1 ;;
	--root) root=${2:?--root needs a directory}; shift ;;
	--prefix) prefix=${2:?--prefix needs a path}; shift ;;
	--admin) admin=${2:?--admin needs host:port}; shift ;;
	--src) src=${2:?--src needs a directory}; shift ;;
	-h | --help) usage ;;
	*) echo "provision: unknown argument '$1'" >&2; usage ;;
	esac
	shift
done

if [ "$dry_run" = 1 ] && [ -z "$root" ]; then
	echo "provision: --dry-run needs --root DIR (or SLUICE_ROOT)" >&2
	exit 2
fi
if [ -n "$root" ]; then
	mkdir -p "$root"
	root=$(cd "$root" && pwd)
fi

step() {
	echo "==> $*"
}

# Commands that change the host: run them, or only print them in a dry run.
host() {
	if [ "$dry_run" = 1 ]; then
		echo "dry-run: would run: $*"
	else
		"$@"
	fi
}

fail() {
	echo "provision: $*" >&2
	exit 1
}

# ---- 1. build dependencies -------------------------------------------------

# Only the build packages: the test and benchmark ones (chromium, wrk,
# nginx) have no place on a gateway host.
step "build dependencies (make deps)"
host make -C "$src" deps DEB_TEST= DEB_BENCH=

# ---- 2. build ----------------------------------------------------------------

step "build"
make -C "$src" -j"$(nproc)" all

# ---- 3. install ----------------------------------------------------------------

rules=$root/etc/sluice/rules.yaml
fresh_rules=0
if [ ! -e "$rules" ]; then
	fresh_rules=1
fi

step "install (DESTDIR=${root:-/} PREFIX=$prefix)"
make -C "$src" install DESTDIR="$root" PREFIX="$prefix"

if [ -n "$admin" ] && [ "$fresh_rules" = 1 ]; then
	sed -i "s|^admin: .*|admin: \"$admin\"|" "$rules"
	echo "  admin: $admin in /etc/sluice/rules.yaml"
fi

# ---- 4. verify the installed tree ------------------------------------------

step "verify the installed tree"
for f in "$prefix/sbin/sluiced" "$prefix/bin/sluicectl" \
	"$prefix/libexec/sluice/sluice-worker"; do
	[ -x "$root$f" ] || fail "$f is missing or not executable"
	echo "  ok $f"
done
[ -f "$root$prefix/share/sluice/hooks/sluice/__init__.py" ] ||
	fail "$prefix/share/sluice/hooks/sluice is missing"
echo "  ok $prefix/share/sluice/hooks/"
unit=$root/lib/systemd/system/sluiced.service
[ -f "$unit" ] || fail "/lib/systemd/system/sluiced.service is missing"
grep -q "^ExecStart=$prefix/sbin/sluiced " "$unit" ||
	fail "the unit does not start $prefix/sbin/sluiced"
echo "  ok /lib/systemd/system/sluiced.service"

"$root$prefix/sbin/sluiced" -t -c "$rules" ||
	fail "the installed rules file does not check: $rules"
echo "  ok /etc/sluice/rules.yaml checks"

# systemd-analyze checks the executables the unit names; under a root they
# live below it, so a copy with the paths moved there is what it reads.
if command -v systemd-analyze >/dev/null 2>&1; then
	check=$unit
	if [ -n "$root" ]; then
		check=$root/sluiced.service
		sed "s|=$prefix/|=$root$prefix/|g" "$unit" > "$check"
	fi
	out=$(systemd-analyze verify "$check" 2>&1) ||
		fail "systemd-analyze verify: $out"
	if echo "$out" | grep -q sluiced.service; then
		fail "systemd-analyze verify: $out"
	fi
	[ "$check" = "$unit" ] || rm -f "$check"
	echo "  ok systemd-analyze verify"
else
	echo "  skip systemd-analyze verify (systemd is not installed)"
fi

# ---- 5. enable and start -------------------------------------------------------

step "enable and start sluiced"
host systemctl daemon-reload
host systemctl enable sluiced
# restart, not start: a second provisioning run picks up the new binary.
host systemctl restart sluiced

if [ "$dry_run" = 1 ]; then
	step "dry run done: nothing changed outside $root"
	exit 0
fi

# ---- 6. check that it answers ------------------------------------------------

step "wait for the admin endpoint"
addr=$(sed -n 's/^admin: *"\{0,1\}\([^"# ]*\).*/\1/p' "$rules")
addr=$(echo "${addr:-127.0.0.1:9901}" | sed 's/^0\.0\.0\.0:/127.0.0.1:/')
i=0
until "$prefix/bin/sluicectl" -a "$addr" status; do
	i=$((i + 1))
	if [ "$i" -ge 20 ]; then
		systemctl --no-pager status sluiced || true
		fail "sluiced does not answer on $addr"
	fi
	sleep 0.5
done
step "sluiced is running; gateway on the rules' listen addresses"
