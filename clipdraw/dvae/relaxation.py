"""Token scores -> relaxed tokens: gumbel noise, the vocabulary softmax (once for every
caller), and the one place that borrows a private torch op (``softmax_backward``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

RELAXATIONS = ("softmax", "straight-through")   # what the decoder takes; gumbel noise is the caller's


def softmax_over_vocabulary(scores: torch.Tensor, tau: float = 1.0, vocabulary_last: bool = True) -> torch.Tensor:
    """``softmax(scores / tau)`` over the vocabulary, dim 1 of (B, vocab, g, g).

    ``vocabulary_last``: computed with the vocabulary as the last axis, so that channels-last
    scores give channels-last probabilities, the decoder's layout, without a copy
    (``F.softmax(x, dim=1)`` returns them in the default layout). False: ``F.softmax`` over
    dim 1, probabilities in the default layout, as the toy dVAE trains. The two kernels round
    differently in the last bit, so a caller keeps one: the toy's shipped weights, and every
    optimizer image, were made with the one they use.
    """
    if not vocabulary_last:
        return F.softmax(scores / tau, dim=1)
    return F.softmax((scores / tau).permute(0, 2, 3, 1), dim=-1).permute(0, 3, 1, 2)


def gumbel_noise(like: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Standard Gumbel samples shaped like ``like``, from ``generator`` (reproducible by seed)."""
    uniform = torch.rand(like.shape, generator=generator, device=like.device)
    return -torch.log((-torch.log(uniform.clamp_min(1e-10))).clamp_min(1e-10))


def straight_through(soft: torch.Tensor) -> torch.Tensor:
    """One-hot argmax of token probabilities (B, vocab, g, g) forward, their gradient backward."""
    hard = F.one_hot(soft.argmax(dim=1), soft.shape[1]).permute(0, 3, 1, 2).to(soft.dtype)
    return hard + soft - soft.detach()


def relaxed_tokens(scores: torch.Tensor, tau: float, relaxation: str = "softmax") -> torch.Tensor:
    """The decoder's input for ``scores``: their vocabulary softmax at ``tau``, or with
    'straight-through' its one-hot argmax carrying the softmax's gradient."""
    if relaxation not in RELAXATIONS:
        from ..errors import InputError  # noqa: PLC0415

        raise InputError(f"the dVAE decoder's relaxation is one of {', '.join(RELAXATIONS)}, got {relaxation!r}")
    soft = softmax_over_vocabulary(scores, tau)
    return straight_through(soft) if relaxation == "straight-through" else soft


def softmax_backward(grad: torch.Tensor, probs: torch.Tensor, dim: int) -> torch.Tensor:
    """The gradient of softmax's input from its output's, given the output ``probs``.

    Autograd's own kernel, so that a backward written by hand (``low_memory``) gives the same
    bits as the plain path. It is a private aten op: ``tests/test_dvae.py`` compares it with
    autograd's softmax backward and fails if torch changes it.
    """
    return torch.ops.aten._softmax_backward_data(grad, probs, dim, probs.dtype)
