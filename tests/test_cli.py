"""python -m lrcore: the demo a new user runs first."""
import os
import subprocess
import sys

import lrcore


def run_cli(*args):
    env = {k: v for k, v in os.environ.items() if k != "LRCORE_BACKEND"}
    return subprocess.run([sys.executable, "-m", "lrcore", *args], capture_output=True,
                          text=True, env=env, cwd=os.path.dirname(os.path.dirname(lrcore.__file__)))


def test_demo_prints_the_four_runs(compiled):
    out = run_cli("demo")
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert text.startswith(f"lrcore {lrcore.__version__} demo (backend: cython)")
    for header in ("lr = 0.2: converges", "lr = 0.3: converges faster",
                   "lr = 1: too large", "lr = 0.0001: too small"):
        assert header in text
    rows = [line.split() for line in text.splitlines() if line.strip()[:1].isdigit()]
    assert ["0", "2.600000", "12.959999"] in rows            # seed 001, first row
    assert ["3", "-0.846400", "0.023593"] in rows            # seed 003, fourth row
    assert ["1", "5.000000", "36.000000"] in rows            # lr = 1 swings back to 5
    assert ["39", "4.952183", "35.428478"] in rows           # lr = 0.0001 after 40 steps


def test_bad_arguments_exit_2_with_usage():
    out = run_cli("nonsense")
    assert out.returncode == 2
    assert "usage: lrcore" in out.stderr and "Traceback" not in out.stderr


def test_help_lists_the_demo():
    out = run_cli("--help")
    assert out.returncode == 0 and "demo" in out.stdout
