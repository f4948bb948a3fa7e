"""vagrant/provision.sh, the script a real VM runs, in its dry-run mode: it
builds and installs into a temporary root, verifies the tree and the unit,
and only prints the commands that would change the host (apt, systemctl)."""

import os
import shutil

import pytest

from opsutil import ROOT, run

PROVISION = os.path.join(ROOT, "vagrant", "provision.sh")


def provision(*args, env=None):
    full_env = dict(os.environ)
    full_env.pop("SLUICE_ROOT", None)
    full_env.update(env or {})
    return run([PROVISION, *args], timeout=900, env=full_env)


def test_dry_run_installs_and_verifies_under_the_root(tmp_path):
    out = provision("--dry-run", "--root", str(tmp_path))
    assert out.returncode == 0, out.stdout + out.stderr
    assert os.access(tmp_path / "usr/local/sbin/sluiced", os.X_OK)
    assert (tmp_path / "etc/sluice/rules.yaml").is_file()
    assert (tmp_path / "lib/systemd/system/sluiced.service").is_file()
    for check in ["ok /usr/local/sbin/sluiced", "ok /usr/local/bin/sluicectl",
                  "ok /usr/local/libexec/sluice/sluice-worker",
                  "ok /etc/sluice/rules.yaml checks",
                  "ok systemd-analyze verify"]:
        assert check in out.stdout, out.stdout


def test_dry_run_only_prints_what_changes_the_host(tmp_path):
    out = provision("--dry-run", "--root", str(tmp_path))
    assert out.returncode == 0, out.stdout + out.stderr
    would = [line for line in out.stdout.splitlines()
             if line.startswith("dry-run: would run: ")]
    assert any("deps" in line for line in would)
    assert "dry-run: would run: systemctl enable sluiced" in would
    assert "dry-run: would run: systemctl restart sluiced" in would
    # Nothing but the root was written: the temporary verify copy is gone.
    assert sorted(os.listdir(tmp_path)) == ["etc", "lib", "usr"]


def test_sluice_root_in_the_environment_means_dry_run(tmp_path):
    out = provision(env={"SLUICE_ROOT": str(tmp_path)})
    assert out.returncode == 0, out.stdout + out.stderr
    assert "dry-run: would run: systemctl restart sluiced" in out.stdout
    assert (tmp_path / "usr/local/bin/sluicectl").exists()


def test_admin_option_rewrites_a_fresh_rules_file_only(tmp_path):
    out = provision("--dry-run", "--root", str(tmp_path),
                    "--admin", "0.0.0.0:9901")
    assert out.returncode == 0, out.stdout + out.stderr
    rules = (tmp_path / "etc/sluice/rules.yaml").read_text()
    assert 'admin: "0.0.0.0:9901"' in rules
    # A second run keeps what is there.
    (tmp_path / "etc/sluice/rules.yaml").write_text(
        rules.replace("0.0.0.0:9901", "127.0.0.1:9901"))
    out = provision("--dry-run", "--root", str(tmp_path),
                    "--admin", "0.0.0.0:9901")
    assert out.returncode == 0, out.stdout + out.stderr
    assert 'admin: "127.0.0.1:9901"' in \
        (tmp_path / "etc/sluice/rules.yaml").read_text()


def test_dry_run_without_a_root_is_refused():
    out = provision("--dry-run")
    assert out.returncode == 2
    assert "--root" in out.stderr


def test_vagrantfile_validates(tmp_path):
    """Only where Debian's vagrant is installed (it is not a test
    dependency: the VM itself is not started here)."""
    if not shutil.which("vagrant"):
        pytest.skip("vagrant is not installed")
    env = dict(os.environ, VAGRANT_HOME=str(tmp_path / "home"),
               VAGRANT_DOTFILE_PATH=str(tmp_path / "dot"),
               VAGRANT_CHECKPOINT_DISABLE="1")
    out = run(["vagrant", "validate", "--ignore-provider"],
              cwd=os.path.join(ROOT, "vagrant"), env=env, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "validated successfully" in out.stdout
