"""The README's set-up commands are the ones CI runs, and its example runs as printed."""
import pathlib
import re

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

pytestmark = pytest.mark.skipif(not README.exists(), reason="not run from a checkout")


def code_blocks(lang):
    return re.findall(rf"```{lang}\n(.*?)```", README.read_text(), flags=re.S)


def test_ci_runs_the_readme_commands():
    """The two set-up commands, and the optional extras' tests."""
    setup, torch_step = code_blocks("bash")[:2]
    commands = setup.strip().splitlines()
    assert len(commands) == 2
    assert "torch==" in torch_step and "[plot,compact]" in torch_step
    ci = (ROOT / ".ci" / "run").read_text()
    for command in commands + [torch_step.strip()]:
        assert command in ci


def test_readme_examples_run_and_print_what_they_say(compiled, capsys):
    training, schedule, checkpoint = code_blocks("python")[:3]
    namespace = {}
    exec(compile(training, "README example", "exec"), namespace)
    printed = capsys.readouterr().out
    w = np.array(printed[printed.index("[") + 1:printed.index("]")].split(), dtype=float)
    np.testing.assert_allclose(w, np.arange(8), atol=0.01)
    assert printed.rstrip().endswith("200")

    exec(compile(schedule, "README schedule example", "exec"), namespace)
    printed = capsys.readouterr().out.strip()
    claimed = re.search(r"# (\[.*\])", schedule).group(1)
    assert printed == claimed

    exec(compile(checkpoint, "README checkpoint example", "exec"), namespace)
    printed = capsys.readouterr().out.strip().splitlines()
    assert namespace["state"].step_count == 0 and isinstance(namespace["state"], namespace["lrcore"].Adam)
    claimed = [line.split("# ", 1)[1] for line in checkpoint.splitlines()
               if line.startswith("print(") and "# " in line]
    assert printed == claimed and len(claimed) == 3
    check_find_lr_example(namespace)


def check_find_lr_example(namespace):
    """What the find_lr example and the paragraph after it say, recomputed in float64: the
    sweep went past 2/λmax and stopped early; its loss was lowest past 2/λmax, 4× that ended
    it; suggestion and steepest are below 2/λmax, and SGD at the suggestion trains."""
    result, Xs, ys = namespace["result"], namespace["Xs"].astype(np.float64), namespace["ys"]
    bound = 2 / np.linalg.eigvalsh(Xs.T @ Xs / len(ys)).max()
    assert result.stopped_early
    assert result.lrs[-1] > bound > result.suggestion and result.steepest < bound
    lowest = np.argmin(result.losses)
    assert result.lrs[lowest] > bound and f"{result.lrs[lowest]:.3g}" == "0.115"
    assert result.losses[-1] > 4 * result.losses[lowest] and len(result.lrs) < 100
    loss = lambda w: 0.5 * np.mean((Xs @ w - ys) ** 2)
    start, end = loss(np.zeros(8)), loss(namespace["w0"].astype(np.float64))
    assert f"{start:.0f} -> {end:.2f}" == "3483 -> 0.44" and end < start / 1000
    assert namespace["sgd"].step_count == 100 and namespace["sgd"].lr == result.suggestion


def test_readme_mixed_precision_example_prints_what_it_says(compiled, capsys):
    """The numpy mixed-precision example (it continues the first example's X, y)."""
    pytest.importorskip("ml_dtypes")
    training = code_blocks("python")[0]
    mixed = code_blocks("python mixed")[0]
    namespace = {}
    exec(compile(training, "README example", "exec"), namespace)
    capsys.readouterr()
    exec(compile(mixed, "README mixed-precision example", "exec"), namespace)
    printed = capsys.readouterr().out.strip().splitlines()
    claimed = [line.rsplit("# ", 1)[1] for line in mixed.splitlines() if line.startswith("print(")]
    assert printed == claimed and len(claimed) == 2
    assert namespace["wb"].dtype.name == "bfloat16" and namespace["state"].step_count == 500


def test_readme_compact_state_example_prints_what_it_says(compiled, capsys):
    """The compact-state example (it continues the first example's X, y): 8-bit Adam
    converges as float32 Adam does, and stochastic rounding keeps bfloat16 weights moving
    where round-to-nearest stalls."""
    pytest.importorskip("ml_dtypes")
    namespace = {}
    exec(compile(code_blocks("python")[0], "README example", "exec"), namespace)
    capsys.readouterr()
    compact = code_blocks("python compact")[0]
    exec(compile(compact, "README compact-state example", "exec"), namespace)
    printed = capsys.readouterr().out.rstrip("\n").splitlines()
    claimed = [line.rsplit("# ", 1)[1] for line in compact.splitlines() if line.startswith("print(")
               and "# " in line] + [line.split("# prints: ", 1)[1] for line in compact.splitlines()
                                    if line.startswith("# prints: ")]
    assert printed == claimed and len(claimed) == 3
    assert namespace["adam8"].state_bytes == 2 * 8 + 2 * 4     # codes + one absmax per buffer
