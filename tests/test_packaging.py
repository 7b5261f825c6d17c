"""What `pip install` builds: an sdist carrying the Cython sources, and a wheel that installs
into a fresh virtual environment and runs the compiled kernels with no Cython or compiler."""
import pathlib
import subprocess
import sys
import tarfile
import venv
import zipfile

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]

pytestmark = [
    pytest.mark.packaging,
    pytest.mark.skipif(not (ROOT / "pyproject.toml").exists(), reason="not run from a checkout"),
]


def run(*cmd, cwd=None):
    out = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, cwd=cwd)
    assert out.returncode == 0, f"{cmd} failed:\n{out.stdout}\n{out.stderr}"
    return out.stdout


@pytest.fixture(scope="module")
def dist(tmp_path_factory):
    """sdist built from the checkout, then the wheel built from that sdist (as pip does)."""
    out = tmp_path_factory.mktemp("dist")
    run(sys.executable, "-m", "build", "--sdist", "--outdir", out, ROOT)
    sdist = next(out.glob("lrcore-*.tar.gz"))
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", out, sdist)
    return sdist, next(out.glob("lrcore-*.whl"))


def test_sdist_carries_the_kernel_sources_not_generated_code(dist):
    with tarfile.open(dist[0]) as tar:
        names = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}
    for source in ("src/_kernels.pyx", "src/kernels.pxd", "src/kernels.h", "src/kernels_impl.h",
                   "setup.py", "pyproject.toml", "lrcore/reference.py"):
        assert source in names
    assert not any(n.startswith("src/") and n.endswith(".c") or n.endswith(".so") for n in names)
    # and everything the sdist's own tests need (.ci/dist runs them from the unpacked sdist)
    for needed in ("LICENSE", ".ci/run", ".ci/asan", ".ci/dist", "docs/reference.md",
                   "docs/schedules_today.png",
                   "tests/c/portability.c", "tests/typing/readme_usage.py",
                   "tests/data/seed001_sgd_lr0.2.txt", "benchmarks/test_bench_step.py",
                   "lrcore/py.typed", "lrcore/__init__.pyi"):
        assert needed in names, needed


def test_wheel_is_binary_and_runs_without_cython(dist, tmp_path):
    wheel = dist[1]
    assert "-linux_" in wheel.name or "-manylinux" in wheel.name or "-macosx" in wheel.name \
        or "-win" in wheel.name
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        assert any(n.startswith("lrcore/_kernels.") for n in names)
        # typed: the marker and the stubs ship; the license too
        assert {"lrcore/py.typed", "lrcore/__init__.pyi", "lrcore/_kernels.pyi"} <= set(names)
        assert any(n.endswith(".dist-info/licenses/LICENSE") or n.endswith("/LICENSE")
                   for n in names), names
        if sys.platform.startswith("linux"):     # stripped: no symbol table, no debug info
            so = next(n for n in names if n.startswith("lrcore/_kernels."))
            data = zf.read(so)
            assert b".debug_info" not in data and b".symtab" not in data
    env = tmp_path / "venv"
    venv.create(env, with_pip=True)
    python = env / ("Scripts" if sys.platform == "win32" else "bin") / "python"
    run(python, "-m", "pip", "install", "--quiet", wheel)
    assert "cython" not in run(python, "-m", "pip", "list").lower()
    # from a neutral directory, so the installed copy is what imports
    out = run(python, "-c", "import lrcore; print(lrcore.backend)", cwd=tmp_path)
    assert out.strip() == "cython"
    assert "backend: cython" in run(python, "-m", "lrcore", "demo", cwd=tmp_path)
