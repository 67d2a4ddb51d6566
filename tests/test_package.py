"""The package itself: build info, the loader's error message, the command line."""
import os
import subprocess
import sys

import torch

import lenetalex
from lenetalex import _loader


def test_build_info_fields():
    info = lenetalex.build_info()
    assert set(info) >= {"version", "torch", "cuda_compiled", "cuda_arch_list", "openmp"}
    assert info["torch"] == torch.__version__
    assert isinstance(info["cuda_compiled"], bool) and isinstance(info["openmp"], bool)
    assert all(isinstance(a, str) for a in info["cuda_arch_list"])
    assert bool(info["cuda_arch_list"]) == info["cuda_compiled"]


def test_ops_registered():
    for name in ["conv2d_activation", "conv2d_activation_backward"]:
        assert hasattr(torch.ops.lenetalex, name)


def test_load_failure_message_names_both_builds():
    msg = _loader._explain_failure(ImportError("undefined symbol: foo"))
    assert "built against" in msg and "running: torch " + torch.__version__ in msg
    assert "undefined symbol: foo" in msg


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "lenetalex", *args], capture_output=True, text=True)


def test_cli_info():
    r = _cli("info")
    assert r.returncode == 0, r.stderr
    assert "lenetalex" in r.stdout and "torch" in r.stdout


def test_cli_check_passes():
    r = _cli("check", "--ops", "conv2d_activation")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "FAIL" not in r.stdout and "within tolerance" in r.stdout


def test_cli_broken_subcommand_reports_its_import_error(tmp_path):
    # A subcommand module that fails to import says why when it is called,
    # instead of argparse's "invalid choice"; the other subcommands still work.
    (tmp_path / "sitecustomize.py").write_text(
        "import sys, importlib.abc\n"
        "class Broken(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path, target=None):\n"
        "        if name == 'lenetalex.train':\n"
        "            raise ImportError('libfoo.so: cannot open shared object file', name='libfoo')\n"
        "sys.meta_path.insert(0, Broken())\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), *sys.path]))
    r = subprocess.run([sys.executable, "-m", "lenetalex", "train", "lenet5"], capture_output=True,
                       text=True, env=env)
    assert r.returncode == 1
    assert "importing lenetalex.train failed" in r.stderr and "libfoo.so" in r.stderr
    assert "invalid choice" not in r.stderr
    r = subprocess.run([sys.executable, "-m", "lenetalex", "info"], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
