#!/bin/sh
# install.sh DESTDIR PREFIX BUILDDIR — what `make install` runs.
#
#   PREFIX/sbin/sluiced                      the gateway
#   PREFIX/libexec/sluice/sluice-worker      found by sluiced beside itself
#                                            or in ../libexec/sluice/
#   PREFIX/bin/sluicectl                     the admin client
#   PREFIX/share/sluice/hooks/               the Python package the workers
#                                            import (sluice/, tyk/, examples/)
#   /etc/sluice/rules.yaml                   the example, never overwritten
#   /lib/systemd/system/sluiced.service      the unit, ExecStart under PREFIX
#
# Every path is under DESTDIR. The BPF objects are compiled into sluiced as
# skeletons, so there is nothing else to install. With an empty DESTDIR (a
# real install) it also creates the `sluice` system user and reloads systemd;
# with a DESTDIR (packaging, tests) it changes nothing outside DESTDIR.
#
# SYSTEMD_UNIT_DIR overrides the unit directory (default /lib/systemd/system).
set -eu

destdir=${1-}
prefix=${2:-/usr/local}
build=${3:-build}
unit_dir=${SYSTEMD_UNIT_DIR:-/lib/systemd/system}
src=$(cd "$(dirname "$0")/.." && pwd)

case $prefix in
/*) ;;
*) echo "install: PREFIX must be an absolute path, not '$prefix'" >&2; exit 1 ;;
esac
case $build in
/*) ;;
*) build=$src/$build ;;
esac

for bin in sluiced sluice-worker sluicectl; do
	if [ ! -x "$build/$bin" ]; then
		echo "install: $build/$bin is missing; run 'make' first" >&2
		exit 1
	fi
done

say() {
	echo "  INSTALL $1"
}

# Substitute @PREFIX@ in a template, written with mode 0644.
subst() {
	sed "s|@PREFIX@|$prefix|g" "$1" > "$2.tmp"
	chmod 0644 "$2.tmp"
	mv "$2.tmp" "$2"
}

install_binaries() {
	install -d -m 0755 "$destdir$prefix/sbin" "$destdir$prefix/bin" \
		"$destdir$prefix/libexec/sluice"
	install -m 0755 "$build/sluiced" "$destdir$prefix/sbin/sluiced"
	say "$prefix/sbin/sluiced"
	install -m 0755 "$build/sluice-worker" \
		"$destdir$prefix/libexec/sluice/sluice-worker"
	say "$prefix/libexec/sluice/sluice-worker"
	install -m 0755 "$build/sluicectl" "$destdir$prefix/bin/sluicectl"
	say "$prefix/bin/sluicectl"
}

# The hooks package is replaced whole, so a module removed from the source
# does not linger in the install; byte-code caches are not copied.
install_hooks() {
	dest=$destdir$prefix/share/sluice/hooks

	if [ ! -d "$src/hooks" ]; then
		echo "install: $src/hooks is missing" >&2
		exit 1
	fi
	rm -rf "$dest"
	install -d -m 0755 "$dest"
	(cd "$src/hooks" && tar --exclude=__pycache__ --exclude='*.pyc' \
		-cf - .) | (cd "$dest" && tar --no-same-owner -xf -)
	find "$dest" -type d -exec chmod 0755 {} +
	find "$dest" -type f -exec chmod 0644 {} +
	say "$prefix/share/sluice/hooks/"
}

install_config() {
	install -d -m 0755 "$destdir/etc/sluice"
	if [ -e "$destdir/etc/sluice/rules.yaml" ]; then
		echo "  KEEP    /etc/sluice/rules.yaml (exists; not overwritten)"
		return
	fi
	subst "$src/dist/rules.yaml" "$destdir/etc/sluice/rules.yaml"
	say "/etc/sluice/rules.yaml"
}

install_unit() {
	install -d -m 0755 "$destdir$unit_dir"
	subst "$src/dist/sluiced.service" "$destdir$unit_dir/sluiced.service"
	say "$unit_dir/sluiced.service"
}

# Only on a real install: a system user with no home and no login shell,
# created once.
create_user() {
	if id -u sluice >/dev/null 2>&1; then
		return
	fi
	useradd --system --user-group --no-create-home \
		--home-dir /nonexistent --shell /usr/sbin/nologin \
		--comment "sluice gateway" sluice
	echo "  USER    sluice (system user created)"
}

install_binaries
install_hooks
install_config
install_unit

if [ -z "$destdir" ]; then
	if [ "$(id -u)" = 0 ]; then
		create_user
		if [ -d /run/systemd/system ]; then
			systemctl daemon-reload
		fi
	else
		echo "install: not root: create the 'sluice' user yourself" >&2
	fi
fi
