"""python -m lrcore: the demo a new user runs first."""
import os
import subprocess
import sys

import pytest

import lrcore


from conftest import run_cli, run_python


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
    assert ["1", "2.849600", "14.819419", "0.098010"] in rows   # the decaying rate, seed 001


@pytest.mark.parametrize("args, codes", [
    (("demo",), (0, 1)),        # its output may fit in the pipe's buffer before head exits
    (("schedule", "Constant", "learning_rate=1", "--steps", "100000"), (1,)),   # 2.4 MB: never
])
def test_a_reader_that_closes_the_pipe_early_gets_no_traceback(args, codes):
    """`python -m lrcore demo | head -3`: the command ends quietly when head exits."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LRCORE_")}
    proc = subprocess.Popen([sys.executable, "-m", "lrcore", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env,
                            cwd=os.path.dirname(os.path.dirname(lrcore.__file__)))
    first = [proc.stdout.readline() for _ in range(3)]
    proc.stdout.close()                   # as head does after its lines
    stderr = proc.stderr.read().decode()
    proc.wait(timeout=300)
    assert all(first) and stderr == "" and proc.returncode in codes


def test_bad_arguments_exit_2_with_usage():
    out = run_cli("nonsense")
    assert out.returncode == 2
    assert "usage: lrcore" in out.stderr and "Traceback" not in out.stderr


def test_help_lists_the_commands():
    out = run_cli("--help")
    assert out.returncode == 0 and "demo" in out.stdout and "schedule" in out.stdout


def test_schedule_prints_step_and_rate():
    out = run_cli("schedule", "ExponentialDecay", "initial_learning_rate=0.1", "decay_steps=1",
                  "decay_rate=0.99", "staircase=true", "--steps", "4")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == ("# ExponentialDecay(initial_learning_rate=0.1, decay_steps=1, "
                        "decay_rate=0.99, staircase=True)")
    rows = [line.split() for line in lines[2:]]
    assert [int(s) for s, _ in rows] == [0, 1, 2, 3]
    assert [float(v) for _, v in rows] == pytest.approx([0.1, 0.099, 0.09801, 0.0970299])


def test_schedule_warmup_takes_a_nested_schedule():
    inner = "{'class_name': 'CosineDecay', 'config': {'initial_learning_rate': 1.0, 'decay_steps': 4}}"
    out = run_cli("schedule", "Warmup", f"schedule={inner}", "warmup_steps=2", "--steps", "7")
    assert out.returncode == 0, out.stderr
    values = [float(line.split()[1]) for line in out.stdout.splitlines()[2:]]
    assert values == pytest.approx([0.0, 0.5, 1.0, 0.85355339, 0.5, 0.14644661, 0.0])


def test_schedule_sequence_takes_nested_pieces():
    """Sequence's pieces as serialize() configs or numbers: a linear ramp over 3 steps, then
    0.5 (Linear at the step counted from its boundary, optax's join_schedules)."""
    ramp = ("{'class_name': 'Linear', 'config': {'initial_learning_rate': 0.0, "
            "'end_learning_rate': 1.5, 'decay_steps': 3}}")
    out = run_cli("schedule", "Sequence", f"schedules=[{ramp}, 0.5]", "boundaries=[3]",
                  "--steps", "5")
    assert out.returncode == 0, out.stderr
    values = [float(line.split()[1]) for line in out.stdout.splitlines()[2:]]
    assert values == pytest.approx([0.0, 0.5, 1.0, 0.5, 0.5])


@pytest.mark.parametrize("args, message", [
    (["schedule", "Bogus"], "unknown schedule 'Bogus'"),
    (["schedule", "CosineDecay", "initial_learning_rate=1", "decay_steps=0"],
     "CosineDecay: decay_steps must be a finite number > 0, got 0"),
    (["schedule", "CosineDecay", "decay_steps=10"], "CosineDecay:"),
    (["schedule", "CosineDecay", "oops"], "expected key=value, got 'oops'"),
    (["schedule", "Constant", "learning_rate=1", "--steps", "-3"],
     "--steps must be from 0 to 10000000, got -3"),
    (["schedule", "Constant", "learning_rate=1", "--steps", str(10**400)],
     "--steps must be from 0 to 10000000, got 1000"),
])
def test_schedule_bad_arguments_are_one_line_errors(args, message):
    out = run_cli(*args)
    assert out.returncode == 2
    assert message in out.stderr and "Traceback" not in out.stderr


def test_info_prints_the_build(compiled):
    out = run_cli("info")
    assert out.returncode == 0
    fields = dict(line.split(": ", 1) for line in out.stdout.splitlines())
    assert fields["backend"] == "cython" and fields["version"] == lrcore.__version__
    assert fields["isa_dispatched"] in fields["isa_compiled"]


def test_bench_rejects_unknown_implementations():
    out = run_cli("bench", "--only", "jax")
    assert out.returncode == 2 and "unknown implementations ['jax']" in out.stderr


def test_plot_without_matplotlib_is_a_one_line_hint(tmp_path):
    code = ("import sys; sys.modules['matplotlib'] = None\n"
            "from lrcore.__main__ import main\n"
            f"main(['schedule', 'Constant', 'learning_rate=1', '--plot', {str(tmp_path / 'x.png')!r}])")
    out = run_python("-c", code)
    assert out.returncode == 2
    assert "plots need matplotlib: pip install 'lrcore[plot]'" in out.stderr
    assert "Traceback" not in out.stderr and not (tmp_path / "x.png").exists()


def test_the_console_script_is_installed():
    script = os.path.join(os.path.dirname(sys.executable), "lrcore")
    out = subprocess.run([script, "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    for command in ("demo", "schedule", "bench", "info"):
        assert command in out.stdout


@pytest.mark.parametrize("args, message", [
    (["schedule", "ExponentialDecay", "initial_learning_rate=0.1", f"decay_steps={10**400}",
      "decay_rate=0.5"], "ExponentialDecay: decay_steps must be a finite number > 0, got an int "
                         "too large for a float"),
    (["schedule", "Warmup", "schedule=0.1", f"warmup_steps={10**400}"],
     "Warmup: warmup_steps must be an int >= 0 and < 2**63"),
    (["schedule", "Warmup", "schedule={'class_name': 'Nope'}", "warmup_steps=2"],
     "Warmup: config must be {'class_name': one of"),
    (["schedule", "Warmup", "schedule={'class_name': 'CosineDecay', 'config': {'lr': 1}}",
      "warmup_steps=2"], "Warmup: config must only hold CosineDecay's arguments"),
    (["schedule", "Warmup", "schedule={'class_name': 'CosineDecay', 'config': "
      "{'initial_learning_rate': 1.0, 'decay_steps': 0}}", "warmup_steps=2"],
     "Warmup: decay_steps must be a finite number > 0, got 0"),
    (["schedule", "Warmup", "schedule={'class_name': 'Warmup', 'config': {}}", "warmup_steps=2"],
     "Warmup: config must hold a 'schedule' entry"),
])
def test_schedule_huge_ints_and_bad_inner_configs_are_usage_errors(args, message):
    out = run_cli(*args)
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr and "usage: lrcore schedule" in out.stderr
    assert message in out.stderr.splitlines()[-1]


def test_bench_mixed_prints_only_the_mixed_precision_tables(compiled):
    out = run_cli("bench", "--mixed", "--quick", "--only", "lrcore")
    assert out.returncode == 0, out.stderr
    titles = [line for line in out.stdout.splitlines() if line.startswith(
        ("float32 params, bfloat16 grads", "bfloat16 params and grads", "grad_scale 1024"))]
    assert len(titles) == 4
    assert "Adam (lr 1e-3), time per step; ratio" not in out.stdout     # not the full report
