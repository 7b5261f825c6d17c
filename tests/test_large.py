"""Arrays past 2**31 elements: every index in the kernels is a Py_ssize_t.

Touches about 8.6 GB (one float32 array of 2**31 + 17 elements, written once; the gradient
stays mostly unallocated zero pages), compiled backend only."""
import numpy as np
import pytest

import lrcore

pytestmark = pytest.mark.large

N = 2**31 + 17


def test_a_step_past_2_31_elements(compiled):
    p = np.zeros(N, np.float32)
    g = np.zeros(N, np.float32)
    marks = {5: 3.0, 2**31 - 1: 2.0, 2**31: 0.0, 2**31 + 3: -4.0, N - 1: 1.0}
    for i, v in marks.items():
        g[i] = v
    lrcore.step(p, g, lrcore.SGD(lr=0.5))
    for i, v in marks.items():
        assert p[i] == -0.5 * v, i
    assert p[N // 2] == 0.0
