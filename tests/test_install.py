"""The real wheel, installed into a fresh virtual environment outside the repository, used from an empty folder:
the demo and the README's compile / build / infer path work, and nothing is written outside that folder."""
import os
import shutil
import subprocess
import sys
import venv

import numpy as np
import pytest
from repo import ROOT

pytestmark = pytest.mark.slow
CLEAN_ENV = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}


def _snapshot(*roots):
    """Every file under `roots` (bytecode aside) with its size and modification time."""
    files = {}
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = [d for d in dirnames if d not in (".git", "__pycache__", ".venv", ".pytest_cache")]
            for name in filenames:
                path = os.path.join(dirpath, name)
                st = os.stat(path)
                files[path] = (st.st_size, st.st_mtime_ns)
    return files


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(mcu-train executable, the installed packages' folders) from a wheel built from this checkout."""
    base = tmp_path_factory.mktemp("install")
    # Built from a copy of the checkout: building in place would leave build/ and *.egg-info behind.
    shutil.copytree(ROOT, base / "src", ignore=shutil.ignore_patterns(".git", ".venv", "build", "out", "runs",
                                                                         "*.egg-info", "__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", base / "dist", base / "src"],
                   check=True, capture_output=True)
    wheel, = (base / "dist").glob("mcu_train-*.whl")
    venv.create(base / "venv", with_pip=True)
    python = base / "venv" / "bin" / "python"
    subprocess.run([python, "-m", "pip", "install", "-q", wheel], check=True, capture_output=True, env=CLEAN_ENV)
    site = subprocess.run([python, "-c", "import mcu_train, codegen, os; print(os.path.dirname(mcu_train.__file__)); "
                           "print(os.path.dirname(codegen.__file__))"], check=True, capture_output=True, text=True,
                          cwd=base, env=CLEAN_ENV).stdout.split()
    assert all(str(base / "venv") in d for d in site), site
    return base / "venv" / "bin" / "mcu-train", site


def _run(exe, *args, cwd, env=CLEAN_ENV, check=True):
    res = subprocess.run([str(exe), *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=600,
                         env=env)
    if check:
        assert res.returncode == 0, res.stderr + res.stdout
    return res


def test_wheel_works_in_an_empty_folder_and_writes_only_there(installed, tmp_path):
    exe, package_dirs = installed
    work = tmp_path / "work"
    work.mkdir()
    before = _snapshot(*package_dirs, ROOT)

    demo = _run(exe, "demo", "--quiet", cwd=work)
    assert "second half of the stream: the personalised board" in demo.stdout
    assert (work / "build" / "demo" / "run.jsonl").is_file() and (work / "build" / "demo" / "run.png").is_file()

    # The README's compile / build / infer path, with the shipped model named as the README names it.
    calib = np.load(ROOT / "models" / "har_calib.npz")["x"][:4]
    np.savez(work / "windows.npz", x=calib)
    _run(exe, "compile", "models/har.onnx", "--calib", "models/har_calib.npz", "-o", "out/har", cwd=work)
    built = _run(exe, "build", "--board", "mps2-an386", "out/har", cwd=work)
    assert (work / "out" / "har" / "build-mps2-an386" / "firmware.elf").is_file(), built.stdout
    _run(exe, "infer", "out/har", "--board", "mps2-an386", "--input", "windows.npz", "-o", "results.npz", cwd=work)
    assert np.load(work / "results.npz")["exit"].shape == (4,)
    _run(exe, "build", "--board", "mps2-an386", cwd=work)
    assert (work / "build" / "mps2-an386" / "firmware.elf").is_file()

    assert _snapshot(*package_dirs, ROOT) == before, "a command wrote outside the current folder"


def test_missing_toolchain_names_the_debian_packages(installed, tmp_path):
    exe, _ = installed
    env = dict(CLEAN_ENV, PATH=str(exe.parent))  # the venv only: no cross-compiler, no QEMU
    res = _run(exe, "build", "--board", "mps2-an386", cwd=tmp_path, env=env, check=False)
    assert res.returncode == 2
    assert "arm-none-eabi-gcc" in res.stderr and "gcc-arm-none-eabi" in res.stderr, res.stderr
    assert "Traceback" not in res.stderr and not (tmp_path / "build" / "mps2-an386" / "firmware.elf").exists()
