"""The README's commands are the ones CI runs, and each of its examples runs alone, as
printed."""
import pathlib
import re
import shlex
import subprocess
import sys

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

pytestmark = pytest.mark.skipif(not README.exists(), reason="not run from a checkout")


def code_blocks(lang):
    return re.findall(rf"```{lang}\n(.*?)```", README.read_text(), flags=re.S)


def run_alone(code, name):
    """Execute a README block in a namespace of its own (a reader pastes it into a fresh
    interpreter) and return that namespace."""
    namespace = {}
    exec(compile(code, name, "exec"), namespace)
    return namespace


# Every fenced block and the test that runs it as written: the tags of python blocks run
# here (python, mixed, compact) or in the torch extras' tests (torch, torch-amp); bash blocks
# are CI's commands, or the benchmark commands checked below.
BLOCK_TESTS = {
    "bash": "test_ci_runs_the_readme_commands, test_the_speed_commands_are_valid",
    "python": "test_readme_examples_run_alone_and_print_what_they_say",
    "python mixed": "test_readme_mixed_precision_example_prints_what_it_says",
    "python compact": "test_readme_compact_state_example_prints_what_it_says",
    "python torch": "tests/test_torch_optim.py::test_the_readme_torch_example_runs_and_prints_what_it_says",
    "python torch-amp": "tests/test_torch_amp.py::test_the_readme_grad_scaler_example_runs_and_prints_what_it_says",
}


def test_every_code_block_is_run_by_a_test():
    tags = re.findall(r"^```(\S.*)$", README.read_text(), flags=re.M)
    assert tags and set(tags) <= set(BLOCK_TESTS), set(tags) - set(BLOCK_TESTS)
    for tag, tests in BLOCK_TESTS.items():
        for test in tests.split(", "):
            path, _, name = test.rpartition("::")
            source = (ROOT / path).read_text() if path else pathlib.Path(__file__).read_text()
            assert f"def {name or test}(" in source, test


def test_ci_runs_the_readme_commands():
    """The two set-up commands, the optional extras' tests, and the further checks."""
    setup, torch_step, further = code_blocks("bash")[:3]
    commands = setup.strip().splitlines()
    assert len(commands) == 2
    assert "torch==" in torch_step and "[plot,compact,peers]" in torch_step
    ci = (ROOT / ".ci" / "run").read_text()
    for command in commands + [torch_step.strip()] + further.strip().splitlines():
        assert command in ci
    for script in re.findall(r"^bash (\S+)", further, flags=re.M):
        assert (ROOT / script).exists(), script


def test_the_speed_commands_are_valid():
    """The Speed section's commands: `lrcore bench`'s options parse, and the pytest-benchmark
    command selects benchmarks (collected, not run: they take minutes)."""
    from lrcore.__main__ import build_parser
    speed = code_blocks("bash")[3]
    lines = speed.replace("\\\n", " ").strip().splitlines()
    bench = [shlex.split(line.split("#")[0]) for line in lines if "-m lrcore" in line]
    pytest_runs = [shlex.split(line) for line in lines if "-m pytest" in line]
    assert bench and pytest_runs
    for argv in bench:
        parser, _ = build_parser()
        assert parser.parse_args(argv[argv.index("lrcore") + 1:]).command == "bench"
    for argv in pytest_runs:
        args = argv[argv.index("pytest") + 1:]
        out = subprocess.run([sys.executable, "-m", "pytest", *args, "--collect-only", "-q",
                              "-p", "no:cacheprovider"], cwd=ROOT, capture_output=True, text=True)
        assert out.returncode == 0, out.stdout + out.stderr
        assert re.search(r"^(\d+) tests? collected", out.stdout, flags=re.M), out.stdout


def test_readme_examples_run_alone_and_print_what_they_say(compiled, capsys):
    training, schedule, checkpoint = code_blocks("python")
    run_alone(training, "README example")
    printed = capsys.readouterr().out
    w = np.array(printed[printed.index("[") + 1:printed.index("]")].split(), dtype=float)
    np.testing.assert_allclose(w, np.arange(8), atol=0.01)
    assert printed.rstrip().endswith("200")

    run_alone(schedule, "README schedule example")
    printed = capsys.readouterr().out.strip()
    claimed = re.search(r"# (\[.*\])", schedule).group(1)
    assert printed == claimed

    namespace = run_alone(checkpoint, "README checkpoint example")
    printed = capsys.readouterr().out.strip().splitlines()
    assert namespace["state"].step_count == 0 and isinstance(namespace["state"], namespace["lrcore"].Adam)
    claimed = [line.split("# ", 1)[1] for line in checkpoint.splitlines()
               if line.startswith("print(") and "# " in line]
    assert printed == claimed and len(claimed) == 4
    check_find_lr_example(namespace)


def check_find_lr_example(namespace):
    """What the find_lr example and the paragraph after it say, recomputed in float64: the
    sweep went past 2/λmax and stopped early, 4× its minimum ending it; "minimum" is a tenth of
    the lowest loss read (past 2/λmax), every rule's rate is below 2/λmax, valley's is far
    inside the range, and SGD trains at minimum's rate (to 1.47) and less at valley's (403)."""
    result, Xs, ys = namespace["result"], namespace["Xs"].astype(np.float64), namespace["ys"]
    bound = 2 / np.linalg.eigvalsh(Xs.T @ Xs / len(ys)).max()
    assert result.stopped_early and result.rule == "minimum"
    assert result.lrs[-1] > bound > max(result.suggestions.values())
    lo, hi = result.window                      # the rates the rules read
    lowest = lo + int(np.argmin(result.losses[lo:hi]))
    assert result.lrs[lowest] > bound and f"{result.lrs[lowest]:.3g}" == "0.0658"
    assert result.suggestion == result.lrs[lowest] / 10
    assert result.losses[-1] > 4 * result.losses.min() and len(result.lrs) < 100
    loss = lambda w: 0.5 * np.mean((Xs @ w - ys) ** 2)
    start, end = loss(np.zeros(8)), loss(namespace["w0"].astype(np.float64))
    assert f"{start:.0f} -> {end:.2f}" == "3483 -> 1.47" and end < start / 1000
    assert namespace["sgd"].step_count == 100 and namespace["sgd"].lr == result.suggestion
    w, valley = np.zeros(8, np.float32), namespace["lrcore"].SGD(lr=result.suggestions["valley"])
    for _ in range(100):
        namespace["lrcore"].step([w], namespace["fn"]([w])[1], valley)
    assert f"{loss(w.astype(np.float64)):.0f}" == "403"


def test_readme_mixed_precision_example_prints_what_it_says(compiled, capsys):
    """The numpy mixed-precision example."""
    pytest.importorskip("ml_dtypes")
    mixed = code_blocks("python mixed")[0]
    namespace = run_alone(mixed, "README mixed-precision example")
    printed = capsys.readouterr().out.strip().splitlines()
    claimed = [line.rsplit("# ", 1)[1] for line in mixed.splitlines() if line.startswith("print(")]
    assert printed == claimed and len(claimed) == 2
    assert namespace["wb"].dtype.name == "bfloat16" and namespace["state"].step_count == 500


def test_readme_compact_state_example_prints_what_it_says(compiled, capsys):
    """The compact-state example: 8-bit Adam
    converges as float32 Adam does, and stochastic rounding keeps bfloat16 weights moving
    where round-to-nearest stalls."""
    pytest.importorskip("ml_dtypes")
    compact = code_blocks("python compact")[0]
    namespace = run_alone(compact, "README compact-state example")
    printed = capsys.readouterr().out.rstrip("\n").splitlines()
    claimed = [line.rsplit("# ", 1)[1] for line in compact.splitlines() if line.startswith("print(")
               and "# " in line] + [line.split("# prints: ", 1)[1] for line in compact.splitlines()
                                    if line.startswith("# prints: ")]
    assert printed == claimed and len(claimed) == 3
    assert namespace["adam8"].state_bytes == 2 * 8 + 2 * 4     # codes + one absmax per buffer
