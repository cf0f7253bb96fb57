"""EMA teacher (docs/design.md §3): θ_T <- τ θ_T + (1 - τ) θ_S, τ annealed linearly, kept in fp32."""

from typing import Dict, Iterable, Tuple

import torch
import torch.nn as nn


def ema_decay_at(step: int, start: float, end: float, anneal_end_step: int) -> float:
    """τ at update ``step``: linear from ``start`` (step 0) to ``end`` (``anneal_end_step``), then ``end``."""
    if anneal_end_step <= 0 or step >= anneal_end_step:
        return end
    return start + (end - start) * step / anneal_end_step


class EMATeacher:
    """Holds a teacher module whose parameters follow a student by EMA.

    The teacher is deliberately not an ``nn.Module`` attribute of the model: it stays out of the
    optimizer, DDP, ``model.parameters()`` and fairseq's ``.half()`` / ``.to(bfloat16)`` casts.
    ``step`` is the last update folded in, saved with the weights so that a resumed run continues
    the same sequence of EMA steps.
    """

    def __init__(self, module: nn.Module):
        self.module = module.float().eval().requires_grad_(False)
        self.step = 0

    @torch.no_grad()
    def copy_from(self, student_params: Dict[str, torch.Tensor]) -> None:
        for name, p in self.module.named_parameters():
            p.copy_(student_params[name].detach().float())

    @torch.no_grad()
    def update(self, student_params: Dict[str, torch.Tensor], decay: float) -> None:
        """One EMA step; ``student_params`` maps every teacher parameter name to the student's."""
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"EMA decay {decay} outside [0, 1]")
        teacher, student = self._pairs(student_params)
        if decay == 1.0:
            return
        torch._foreach_mul_(teacher, decay)
        torch._foreach_add_(teacher, student, alpha=1.0 - decay)

    def _pairs(self, student_params: Dict[str, torch.Tensor]) -> Tuple[list, list]:
        teacher, student = [], []
        for name, p in self.module.named_parameters():
            s = student_params[name].detach()
            teacher.append(p)
            student.append(s if s.dtype == p.dtype and s.device == p.device else s.to(p.device, p.dtype))
        return teacher, student

    def to(self, device: torch.device) -> "EMATeacher":
        """Move to ``device`` keeping fp32 (the student may be fp16/bf16)."""
        self.module.to(device=device, dtype=torch.float32)
        return self

    def state_dict(self, prefix: str = "_ema.") -> Dict[str, torch.Tensor]:
        state = {prefix + k: v.detach().clone() for k, v in self.module.state_dict().items()}
        state[prefix.rstrip(".") + "_step"] = torch.tensor(self.step, dtype=torch.long)
        return state

    def load_state_dict(self, state: Dict[str, torch.Tensor], prefix: str = "_ema.") -> None:
        own = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        missing = sorted(set(self.module.state_dict()) - set(own))
        unexpected = sorted(set(own) - set(self.module.state_dict()))
        if missing or unexpected:
            raise KeyError(f"teacher weights do not match the model: missing {missing[:5]}, unexpected {unexpected[:5]}")
        self.module.load_state_dict(own)
        self.module.float()
        step_key = prefix.rstrip(".") + "_step"
        self.step = int(state[step_key]) if step_key in state else 0


def teacher_keys(state: Iterable[str], prefix: str = "_ema.") -> list:
    """Keys of a state dict that belong to the teacher (weights and step counter)."""
    step_key = prefix.rstrip(".") + "_step"
    return [k for k in state if k.startswith(prefix) or k == step_key]
