"""Adam over a single flat parameter buffer, for the small networks of classic-control agents.

With a few dozen small parameter tensors, the per-tensor loops of Adam, gradient clipping and
``zero_grad`` cost more than the arithmetic. :class:`FlatAdam` moves every parameter into views of
one contiguous buffer and every gradient into views of a twin buffer (autograd accumulates into an
existing ``.grad`` in place), so each of those steps is a handful of operations on one tensor.
The module's parameters keep their names and shapes, so state dicts and checkpoints are unchanged.
The update itself is PyTorch's fused Adam kernel, called once per step on the flat buffer.
"""

from __future__ import annotations

from typing import Any, Iterable

import torch
from torch import nn


# The fused Adam kernel for CPU tensors exists from torch 2.4; the project requires 2.5 or newer.
_FUSED_ADAM = hasattr(torch, "_fused_adam_")


class FlatAdam:
    """Adam (with optional global-norm clipping) over parameters stored in one contiguous buffer.

    Create it after the module is on its final device. Do not call ``torch.nn.utils.clip_grad_norm_``
    or set ``.grad`` to None on the flattened parameters: use :meth:`zero_grad` and
    :meth:`clip_grad_norm_` here, which keep the gradients as views of the flat buffer.
    """

    def __init__(self, parameters: Iterable[nn.Parameter], lr: float, eps: float = 1e-8, betas: tuple[float, float] = (0.9, 0.999)):
        self.parameters = [p for p in parameters if p.requires_grad]
        total = sum(p.numel() for p in self.parameters)
        device = self.parameters[0].device
        dtype = self.parameters[0].dtype
        flat = torch.empty(total, device=device, dtype=dtype)
        flat_grad = torch.zeros(total, device=device, dtype=dtype)
        offset = 0
        for parameter in self.parameters:
            count = parameter.numel()
            flat[offset : offset + count].copy_(parameter.data.reshape(-1))
            parameter.data = flat[offset : offset + count].view_as(parameter)
            parameter.grad = flat_grad[offset : offset + count].view_as(parameter)
            offset += count
        self.flat = nn.Parameter(flat)
        self.flat.grad = flat_grad
        self.flat_grad = flat_grad
        self.optimizer = torch.optim.Adam([self.flat], lr=lr, eps=eps, betas=betas)

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return self.optimizer.param_groups

    def zero_grad(self) -> None:
        self.flat_grad.zero_()

    def clip_grad_norm_(self, max_norm: float) -> torch.Tensor:
        """Scale the gradients so their global L2 norm is at most ``max_norm``; return the norm before."""
        norm = torch.linalg.vector_norm(self.flat_grad)
        self.flat_grad.mul_(torch.clamp(max_norm / (norm + 1e-6), max=1.0))
        return norm

    def step(self) -> None:
        """One Adam update of every parameter, in the fused kernel (bias-corrected, no weight decay).

        ``torch.optim.Adam(fused=True).step()`` runs the same kernel but spends longer in its
        Python wrapper than in the arithmetic on these small buffers, so the kernel is called
        directly on the optimizer's own state, which keeps ``state_dict`` in Adam's format.
        """
        if not _FUSED_ADAM:
            self.optimizer.step()
            return
        group = self.optimizer.param_groups[0]
        state = self.optimizer.state[self.flat]
        if not state:
            state["step"] = torch.zeros((), dtype=torch.float32, device=self.flat.device)
            state["exp_avg"] = torch.zeros_like(self.flat, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(self.flat, memory_format=torch.preserve_format)
        step = state["step"]
        if step.device != self.flat.device or step.dtype != torch.float32:  # a state dict from the unfused path
            step = state["step"] = step.to(device=self.flat.device, dtype=torch.float32)
        step.add_(1)
        beta1, beta2 = group["betas"]
        with torch.no_grad():
            torch._fused_adam_(
                [self.flat], [self.flat_grad], [state["exp_avg"]], [state["exp_avg_sq"]], [], [step],
                lr=float(group["lr"]), beta1=beta1, beta2=beta2, weight_decay=0.0, eps=group["eps"],
                amsgrad=False, maximize=False,
            )

    def state_dict(self) -> dict[str, Any]:
        return self.optimizer.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state)
