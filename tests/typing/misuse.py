"""Calls that `mypy --strict` must reject: each line marked `# E: <code>` must get exactly
that error and no other line any (tests/test_typing.py). lrcore's .py modules are not
annotated, so mypy can only catch these through lrcore's stubs: they prove the stubs are
read and precise. Never run: several of these would raise at runtime.
"""
import numpy as np

import lrcore
from lrcore import schedules

w = np.zeros(4, np.float32)
state = lrcore.SGD(lr=0.1)

lrcore.SGD(lr="0.1")  # E: arg-type
lrcore.SGD(momentun=0.9)  # E: call-arg
lrcore.Adam(state_format="8-bit")  # E: arg-type
lrcore.Adam(betas=0.9)  # E: arg-type
lrcore.SGD(0.1, 0.9, 0.0, False, 0.0, False, "skip")  # E: call-arg
lrcore.step(w, w, state, 1024.0)  # E: call-arg
lrcore.step([1.0, 2.0], [w], state)  # E: list-item
lrcore.step(w, w, "SGD")  # E: arg-type
name: str = lrcore.step(w, w, state)  # E: assignment
state.step_count = 0  # E: misc
state.momentum = 0.5  # E: misc
lrcore.load("state.npz").momentum  # E: attr-defined
schedules.CosineDecay(0.1)  # E: call-arg
rate: int = schedules.Constant(0.1)(3)  # E: assignment
schedules.Warmup(schedules.Constant(0.1), warmup_steps=10, mode="cosine")  # E: arg-type
lrcore.find_lr(lambda params: 0.5, [w], state)  # E: arg-type, return-value
lrcore.set_backend("c")  # E: arg-type
threads: str = lrcore.get_num_threads()  # E: assignment
