"""lrcore's type stubs (lrcore/*.pyi, marked by lrcore/py.typed) as a `mypy --strict` user
meets them, and kept equal to the runtime:

- tests/typing/readme_usage.py, the README's numpy examples fully annotated, passes
  `mypy --strict` (its assert_type calls fail on any imprecise type, an Any included) and
  runs (its types are what lrcore returns);
- it passes as well where torch is not installed (lrcore's stub names the lrcore.torch
  submodule, whose stub imports torch);
- tests/typing/misuse.py: every wrong call marked there gets exactly its error, and no other
  line any. lrcore's .py modules are unannotated, so only the stubs can catch them;
- mypy.stubtest finds every stub consistent with the module it describes (names, signatures,
  kinds of objects), the justified exceptions listed in tests/typing/stubtest_allowlist.txt;
- with torch installed, tests/typing/torch_usage.py checks lrcore.torch against torch's types.

mypy runs from the repository root, where it finds this checkout's lrcore (mypy searches the
current directory first) and reads its stubs (a .pyi beside a .py is preferred).
"""
import importlib.util
import os
import pathlib
import re
import subprocess
import sys
import venv

import pytest

pytest.importorskip("mypy", reason="mypy is not installed: pip install -e '.[test]'")

import lrcore  # noqa: E402
from lrcore import _backend  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
TYPING = "tests/typing"
HAS_TORCH = importlib.util.find_spec("torch") is not None
SUCCESS = re.compile(r"^Success: no issues found in \d+ (source file|module)s?$", re.M)


# the lrcore under test is the checkout's (an editable install) or an installed wheel's
FROM_CHECKOUT = pathlib.Path(lrcore.__file__).resolve().parents[1] == ROOT


def run(*args, timeout=900, cwd=ROOT):
    """`python *args` in the repository root, without this run's LRCORE_* variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LRCORE_")}
    out = subprocess.run([sys.executable, *map(str, args)], cwd=cwd, env=env,
                         capture_output=True, text=True, timeout=timeout)
    return out.returncode, out.stdout + out.stderr


@pytest.fixture(scope="module")
def mypy(tmp_path_factory):
    """`python -m mypy --strict ... *args`: (exit status, output). One cache for the module's
    runs, so torch's types (read through lrcore.torch's stub) are analysed once."""
    cache = tmp_path_factory.mktemp("mypy-cache")

    def check(*args):
        return run("-m", "mypy", "--strict", "--cache-dir", cache, *args)
    return check


def test_readme_usage_passes_mypy_strict(mypy):
    status, output = mypy(f"{TYPING}/readme_usage.py")
    assert status == 0 and SUCCESS.search(output), output


def test_readme_usage_runs():
    status, output = run(f"{TYPING}/readme_usage.py", timeout=300)
    assert status == 0, output


@pytest.mark.skipif(not HAS_TORCH, reason="torch is not installed: the run of "
                    "test_readme_usage_passes_mypy_strict is already the torch-less case")
def test_readme_usage_passes_mypy_strict_without_torch(tmp_path):
    """A user without torch: a Python environment holding numpy and ml_dtypes only (links to
    this one's), given to mypy as the interpreter whose packages it reads."""
    import ml_dtypes
    import numpy
    env = tmp_path / "env"
    venv.create(env, with_pip=False)
    python = env / ("Scripts" if sys.platform == "win32" else "bin") / "python"
    purelib = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    for module in (numpy, ml_dtypes):
        source = pathlib.Path(module.__file__).parent
        try:
            (pathlib.Path(purelib) / source.name).symlink_to(source, target_is_directory=True)
        except OSError as exc:          # e.g. Windows without the symlink privilege
            pytest.skip(f"cannot link {source.name} into a test environment: {exc}")
    assert subprocess.run([python, "-c", "import torch"], capture_output=True).returncode != 0
    status, output = run("-m", "mypy", "--strict", "--python-executable", python,
                         "--cache-dir", tmp_path / "cache", f"{TYPING}/readme_usage.py")
    assert status == 0 and SUCCESS.search(output), output


def test_misuse_is_rejected_line_by_line(mypy):
    path = ROOT / TYPING / "misuse.py"
    expected = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        marker = re.search(r"# E: ([\w, -]+)$", line)
        if marker:
            expected[number] = {code.strip() for code in marker[1].split(",")}
    assert len(expected) >= 15
    status, output = mypy(f"{TYPING}/misuse.py")
    found = {}
    for number, code in re.findall(r"misuse\.py:(\d+): error: .*\[([\w-]+)\]$", output, re.M):
        found.setdefault(int(number), set()).add(code)
    assert status == 1
    assert found == expected, output


def test_stubs_match_the_runtime(tmp_path):
    """stubtest over lrcore and every submodule (given the package, it walks them all; naming
    submodules as well would make mypy see them twice). Modules this environment cannot import
    are allowed to fail to: lrcore.torch without torch, the extension in a numpy-only run."""
    unimportable = tmp_path / "unimportable.txt"
    lines = ["# modules this environment cannot import"]
    if not HAS_TORCH:
        lines.append(r"lrcore\.torch")
    if _backend._kernels is None:
        lines.append(r"lrcore\._kernels")
    unimportable.write_text("\n".join(lines) + "\n")
    # stubtest imports lrcore and mypy reads its stubs: from the checkout's root for an editable
    # install (mypy cannot follow its import hook), else from a neutral folder, so that both
    # find the installed package (a source tree without the extension must not shadow it)
    status, output = run("-m", "mypy.stubtest", "--mypy-config-file", ROOT / TYPING / "stubtest.ini",
                         "--allowlist", ROOT / TYPING / "stubtest_allowlist.txt",
                         "--allowlist", unimportable, "lrcore",
                         cwd=ROOT if FROM_CHECKOUT else tmp_path)
    assert status == 0 and SUCCESS.search(output), output


@pytest.mark.skipif(not HAS_TORCH, reason="torch is not installed")
def test_torch_usage_passes_mypy_strict_and_runs(mypy):
    status, output = mypy(f"{TYPING}/torch_usage.py")
    assert status == 0 and SUCCESS.search(output), output
    status, output = run(f"{TYPING}/torch_usage.py", timeout=300)
    assert status == 0, output
