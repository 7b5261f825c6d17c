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
    assert "torch==" in torch_step and "[plot]" in torch_step
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
    assert capsys.readouterr().out.strip() == "True True"
    assert namespace["state"].step_count == 0 and isinstance(namespace["state"], namespace["lrcore"].Adam)
