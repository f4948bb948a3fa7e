"""`make install` into a temporary DESTDIR: the layout, the rules file that
is never overwritten, the systemd unit (checked by systemd-analyze), and the
installed sluiced serving traffic with the worker and the hooks package it
finds relative to itself."""

import json
import os
import re
import shutil
import stat
import subprocess

import pytest

from opsutil import BUILD, ROOT, Gateway, free_port, ops_rules, run

PREFIX = "/usr/local"


def make_install(destdir, prefix=PREFIX):
    out = run(["make", "--no-print-directory", "-C", ROOT, "install",
               "DESTDIR=%s" % destdir, "PREFIX=%s" % prefix], timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    dest = tmp_path_factory.mktemp("destdir")
    output = make_install(dest)
    return str(dest), output


def test_install_puts_every_file_in_place(installed):
    dest, _ = installed
    for path, mode in [
        (PREFIX + "/sbin/sluiced", 0o755),
        (PREFIX + "/libexec/sluice/sluice-worker", 0o755),
        (PREFIX + "/bin/sluicectl", 0o755),
        ("/etc/sluice/rules.yaml", 0o644),
        ("/lib/systemd/system/sluiced.service", 0o644),
        (PREFIX + "/share/sluice/hooks/gateway.py", 0o644),
        (PREFIX + "/share/sluice/hooks/sluice/__init__.py", 0o644),
        (PREFIX + "/share/sluice/hooks/tyk/decorators.py", 0o644),
        (PREFIX + "/share/sluice/hooks/examples/noop.py", 0o644),
    ]:
        st = os.stat(dest + path)
        assert stat.S_IMODE(st.st_mode) == mode, path


def test_install_copies_no_bytecode_caches(installed):
    dest, _ = installed
    for dirpath, dirnames, filenames in os.walk(dest + PREFIX + "/share"):
        assert "__pycache__" not in dirnames, dirpath
        assert not [f for f in filenames if f.endswith(".pyc")], dirpath


def test_unit_and_rules_name_the_install_prefix(installed):
    dest, _ = installed
    with open(dest + "/lib/systemd/system/sluiced.service") as f:
        unit = f.read()
    with open(dest + "/etc/sluice/rules.yaml") as f:
        rules = f.read()
    assert "@PREFIX@" not in unit and "@PREFIX@" not in rules
    lines = set(unit.splitlines())
    assert ("ExecStart=%s/sbin/sluiced -f -c /etc/sluice/rules.yaml"
            % PREFIX) in lines
    assert ("ExecStartPre=%s/sbin/sluiced -t -c /etc/sluice/rules.yaml"
            % PREFIX) in lines
    assert "ExecReload=/bin/kill -HUP $MAINPID" in lines
    assert "Restart=on-failure" in lines
    assert "Type=simple" in lines
    assert "KillSignal=SIGTERM" in lines
    assert any(line.startswith("TimeoutStopSec=") for line in lines)
    assert any(line.startswith("LimitNOFILE=") for line in lines)
    # Starts as root (it loads BPF); the rules file names the user to drop to.
    assert not any(line.startswith("User=") for line in lines)
    assert re.search(r"^user: sluice\b", rules, re.M)


def test_installed_unit_passes_systemd_analyze_verify(installed, tmp_path):
    """systemd-analyze checks that the executables exist, so the copy it
    reads points into the DESTDIR."""
    dest, _ = installed
    with open(dest + "/lib/systemd/system/sluiced.service") as f:
        unit = f.read().replace("=%s/" % PREFIX, "=%s%s/" % (dest, PREFIX))
    path = tmp_path / "sluiced.service"
    path.write_text(unit)
    out = run(["systemd-analyze", "verify", str(path)])
    assert out.returncode == 0, out.stderr
    # Unknown or malformed settings are only warnings: refuse them too.
    complaints = [line for line in out.stderr.splitlines()
                  if "sluiced.service" in line]
    assert complaints == []


def test_systemd_analyze_catches_a_broken_unit(installed, tmp_path):
    """The check above can fail: a unit whose binary is missing does."""
    dest, _ = installed
    with open(dest + "/lib/systemd/system/sluiced.service") as f:
        unit = f.read()
    path = tmp_path / "sluiced.service"
    path.write_text(unit.replace("=%s/" % PREFIX, "=/nonexistent%s/"
                                 % PREFIX))
    out = run(["systemd-analyze", "verify", str(path)])
    assert out.returncode != 0
    assert "/nonexistent" in out.stderr


def test_install_never_overwrites_the_rules_file(tmp_path):
    rules = tmp_path / "etc" / "sluice" / "rules.yaml"
    rules.parent.mkdir(parents=True)
    rules.write_text("# mine\n")
    output = make_install(tmp_path)
    assert rules.read_text() == "# mine\n"
    assert "KEEP" in output and "not overwritten" in output


def test_install_honours_prefix(tmp_path):
    make_install(tmp_path, prefix="/opt/sluice")
    assert os.access(tmp_path / "opt/sluice/sbin/sluiced", os.X_OK)
    assert os.access(tmp_path / "opt/sluice/libexec/sluice/sluice-worker",
                     os.X_OK)
    unit = (tmp_path / "lib/systemd/system/sluiced.service").read_text()
    assert "ExecStart=/opt/sluice/sbin/sluiced -f" in unit


def test_install_into_destdir_creates_no_user(tmp_path):
    """The `sluice` user is made only by a real install (empty DESTDIR)."""
    had_user = run(["id", "-u", "sluice"]).returncode == 0
    make_install(tmp_path)
    if not had_user:
        assert run(["id", "-u", "sluice"]).returncode != 0


def test_installed_example_rules_pass_the_check(installed):
    dest, _ = installed
    out = run([dest + PREFIX + "/sbin/sluiced", "-t", "-c",
               dest + "/etc/sluice/rules.yaml"])
    assert out.returncode == 0, out.stdout + out.stderr
    assert "ok" in out.stdout


def worker_pids(sluiced_pid):
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(sluiced_pid)],
                         capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


def test_installed_sluiced_runs_from_the_destdir(installed, upstream,
                                                 tmp_path):
    """The installed sluiced finds sluice-worker in ../libexec/sluice and
    the hooks package in ../share/sluice/hooks: both from the DESTDIR, not
    from the source tree."""
    dest, _ = installed
    share = dest + PREFIX + "/share/sluice/hooks"
    gw = Gateway(dest + PREFIX + "/sbin/sluiced",
                 ops_rules(upstream, share + "/examples"), tmp_path)
    try:
        gw.wait_workers()
        assert gw.get("/plain/x")[0] == 200
        assert gw.get("/hooked/x")[0] == 200

        pids = worker_pids(gw.proc.pid)
        assert pids, gw.log()
        exe = os.readlink("/proc/%d/exe" % pids[0])
        assert exe == dest + PREFIX + "/libexec/sluice/sluice-worker"
        with open("/proc/%d/cmdline" % pids[0], "rb") as f:
            argv = f.read().decode().split("\0")
        assert os.path.realpath(share) in argv
    finally:
        gw.stop()


# A real install (empty DESTDIR) in a private mount namespace: /etc is a
# copy, /usr/local, the unit directory and /run are scratch mounts, so the
# host is untouched while install.sh takes the path a host would.
REAL_INSTALL = r"""
set -eu
mount --bind "$T/etc" /etc
mount --bind "$T/usrlocal" /usr/local
mount --bind "$T/units" /lib/systemd/system
mount -t tmpfs tmpfs /run
for dir in /etc /usr/local /lib/systemd/system /run; do
    mountpoint -q "$dir"
done
"$SRC/scripts/install.sh" "" /usr/local "$BUILD"
"$SRC/scripts/install.sh" "" /usr/local "$BUILD"
/usr/local/sbin/sluiced -t -c /etc/sluice/rules.yaml
"""


def test_real_install_creates_the_user_once(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root for a mount namespace")
    for name in ("usrlocal", "units"):
        (tmp_path / name).mkdir()
    subprocess.run(["cp", "-a", "/etc", str(tmp_path / "etc")], check=True)
    env = dict(os.environ, T=str(tmp_path), SRC=ROOT, BUILD=BUILD)
    out = run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
               REAL_INSTALL], env=env, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.count("USER    sluice (system user created)") <= 1
    passwd = (tmp_path / "etc/passwd").read_text().splitlines()
    entries = [line.split(":") for line in passwd
               if line.startswith("sluice:")]
    assert len(entries) == 1
    _, _, uid, _, _, home, shell = entries[0]
    assert int(uid) < 1000          # a system user
    assert shell == "/usr/sbin/nologin" and home == "/nonexistent"
    assert (tmp_path / "units/sluiced.service").is_file()
    assert (tmp_path / "usrlocal/sbin/sluiced").is_file()
    assert "KEEP" in out.stdout     # the second run kept the rules file


# The installed sluiced started as root with `user: sluice`, in the same
# kind of namespace: BPF loads as root, then the gateway and its workers run
# as the sluice user.
DROP_TO_USER = REAL_INSTALL + r"""
/usr/local/sbin/sluiced -f -c "$T/rules.yaml" 2>"$T/sluiced.log" &
pid=$!
trap 'kill -KILL $pid 2>/dev/null || true' EXIT
i=0
until /usr/local/bin/sluicectl -a "$ADMIN" workers | grep -q idle; do
    i=$((i + 1)); [ $i -lt 100 ] || exit 3; sleep 0.1
done
echo "sluiced $(awk '/^Uid:/ {print $2, $3}' /proc/$pid/status)"
for w in $(ps -o pid= --ppid $pid); do
    echo "worker $(awk '/^Uid:/ {print $2, $3}' /proc/$w/status)"
done
/usr/local/bin/sluicectl -a "$ADMIN" status | grep '^bpf'
kill -TERM $pid
wait $pid
"""


def test_installed_sluiced_drops_to_the_sluice_user(tmp_path, upstream):
    if os.geteuid() != 0:
        pytest.skip("needs root for a mount namespace")
    for name in ("usrlocal", "units"):
        (tmp_path / name).mkdir()
    subprocess.run(["cp", "-a", "/etc", str(tmp_path / "etc")], check=True)
    admin = "127.0.0.1:%d" % free_port()
    pin_dir = "/sys/fs/bpf/sluice-ops-%d" % os.getpid()
    rules = {"listen": ["127.0.0.1:%d" % free_port()], "admin": admin,
             "user": "sluice", "threads": 1,
             "bpf": {"splice": "auto", "pin_dir": pin_dir},
             "python": {"path": ["/usr/local/share/sluice/hooks/examples"],
                        "workers": {"min": 1, "max": 1}},
             "apis": [{"name": "hooked", "listen_path": "/",
                       "upstream": upstream.url,
                       "middleware": {"pre": ["noop.pre"]}}]}
    (tmp_path / "rules.yaml").write_text(json.dumps(rules))
    env = dict(os.environ, T=str(tmp_path), SRC=ROOT, BUILD=BUILD,
               ADMIN=admin)
    env.pop("SLUICE_HOOKS_DIR", None)
    try:
        out = run(["unshare", "--mount", "--propagation", "private", "sh",
                   "-c", DROP_TO_USER], env=env, timeout=120)
    finally:
        shutil.rmtree(pin_dir, ignore_errors=True)
    log = (tmp_path / "sluiced.log").read_text()
    assert out.returncode == 0, out.stdout + out.stderr + log
    uid = next(line.split(":")[2]
               for line in (tmp_path / "etc/passwd").read_text().splitlines()
               if line.startswith("sluice:"))
    lines = out.stdout.splitlines()
    assert "sluiced %s %s" % (uid, uid) in lines, out.stdout
    workers = [line for line in lines if line.startswith("worker ")]
    assert workers and all(line == "worker %s %s" % (uid, uid)
                           for line in workers), out.stdout
    # BPF was loaded while still root.
    assert any(line.startswith("bpf        loaded") for line in lines), \
        out.stdout + log
