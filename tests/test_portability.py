"""The kernels give the same bits whatever compiles them and wherever they run: the C driver
tests/c/portability.c (every optimizer and storage combination, 8-bit and stochastic states,
1 and 2 threads, NaN / inf / subnormal grads) built with every toolchain at hand (the host
compiler, clang, an aarch64 cross compiler run under qemu) and at every vector level must
print the same hashes.

It needs a second toolchain to compare with the host's, so it skips on a machine with only
one (the vector levels of one build are compared by the Python tests, e.g.
test_optimizers.py); with Debian's clang, gcc-aarch64-linux-gnu and qemu-user installed it
runs all of them."""
import pathlib
import shutil
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
DRIVER = ROOT / "tests" / "c" / "portability.c"
FLAGS = ["-O3", "-ffp-contract=off", "-fno-math-errno", "-fno-trapping-math", "-pthread",
         f"-I{ROOT / 'src'}"]

pytestmark = pytest.mark.skipif(not (ROOT / "src" / "kernels.h").exists(),
                                reason="needs the kernel sources (a checkout or the sdist)")


def toolchains():
    """(name, compiler, extra flags, runner) for each toolchain found."""
    found = []
    host = shutil.which("cc") or shutil.which("gcc")
    if host:
        found.append(("host cc", host, [], []))
    if shutil.which("clang") and (not host or pathlib.Path(host).resolve().name != "clang"):
        found.append(("clang", shutil.which("clang"), [], []))
    if shutil.which("aarch64-linux-gnu-gcc") and shutil.which("qemu-aarch64"):
        found.append(("aarch64 gcc under qemu", shutil.which("aarch64-linux-gnu-gcc"), ["-static"],
                      [shutil.which("qemu-aarch64")]))
    return found


def build_and_run(tmp_path, name, compiler, extra, runner, level=None):
    exe = tmp_path / name.replace(" ", "_")
    if not exe.exists():
        subprocess.run([compiler, *FLAGS, *extra, str(DRIVER), "-o", str(exe), "-lm"], check=True,
                       capture_output=True, timeout=600)
    out = subprocess.run([*runner, str(exe), *([] if level is None else [str(level)])],
                         capture_output=True, text=True, timeout=600)
    return out


def test_every_toolchain_and_vector_level_computes_the_same_bits(tmp_path):
    found = toolchains()
    if len(found) < 2:
        pytest.skip("only one C toolchain here; install clang or gcc-aarch64-linux-gnu and "
                    "qemu-user to compare builds")
    results = {}
    for name, compiler, extra, runner in found:
        for level in (0, 1, 2):
            out = build_and_run(tmp_path, name, compiler, extra, runner, level)
            if out.returncode == 3:         # this CPU or build has no such level
                continue
            assert out.returncode == 0, (name, level, out.stdout, out.stderr)
            results[f"{name}, level {level}"] = out.stdout
    lines = next(iter(results.values())).splitlines()
    assert len(lines) == 228 and all(line.endswith("NaN params") for line in lines)
    # 1 and 2 threads agree; otherwise the cases differ, and most params stay finite
    by_case = {}
    for line in lines:
        case, threads, digest = line[:line.index(" t")], line.split()[-5], line.split()[-4]
        by_case.setdefault(case, {})[threads] = digest
    assert all(d["t1"] == d["t2"] for d in by_case.values())
    assert len({d["t1"] for d in by_case.values()}) == len(by_case) == len(lines) // 2
    assert sum(int(line.split()[-3]) < 69635 // 2 for line in lines) > 200
    first = next(iter(results))
    for name, printed in results.items():
        assert printed == results[first], f"{name} differs from {first}"
