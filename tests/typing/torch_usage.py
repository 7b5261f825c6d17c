"""The README's torch examples (shortened) as a `mypy --strict` user writes them, checked
against torch's own types (tests/test_typing.py, when torch is installed): lrcore.torch's
optimizers must be accepted wherever torch takes a torch.optim.Optimizer (lr_scheduler,
GradScaler) and give torch.optim's types back. Run as well, so that the types stated are
what lrcore returns.
"""
import sys
from typing import Optional

import torch

import lrcore.torch
from lrcore import schedules

if sys.version_info >= (3, 11):
    from typing import assert_type
else:
    from typing_extensions import assert_type

torch.manual_seed(0)
X = torch.randn(256, 8)
Y = X @ torch.arange(8.0).unsqueeze(1)
model = torch.nn.Linear(8, 1)
opt = lrcore.torch.AdamW(model.parameters(), lr=0.1, weight_decay=0.0)
sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=20)
for _ in range(20):
    opt.zero_grad()
    # torch's Tensor.backward is unannotated (no-untyped-call), not lrcore's doing
    mse = torch.nn.functional.mse_loss(model(X), Y)
    mse.backward()  # type: ignore[no-untyped-call, unused-ignore]
    result = opt.step()
    assert_type(result, None)
    assert result is None
    sched.step()

model = torch.nn.Linear(8, 1)
amp = lrcore.torch.Adam(model.parameters(), lr=0.1, max_grad_norm=10.0)
scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16)
for _ in range(20):
    amp.zero_grad()
    scaled = scaler.scale(torch.nn.functional.mse_loss(model(X), Y))
    scaled.backward()  # type: ignore[no-untyped-call, unused-ignore]
    scaler.step(amp)
    scaler.update()
norm = amp.last_grad_norm
assert_type(norm, Optional[float])
assert isinstance(norm, float)
assert_type(amp.max_grad_norm, Optional[float])


def closure() -> float:
    return 1.0


sgd = lrcore.torch.SGD([{"params": model.parameters(), "lr": schedules.CosineDecay(0.1, 100)}],
                       momentum=0.9, state_format="bfloat16")
loss = sgd.step(closure)
assert_type(loss, float)
assert loss == 1.0
assert isinstance(sgd, torch.optim.Optimizer)
opt.load_state_dict(opt.state_dict())
