"""How far apart two float32 model outputs computed in different ways may be (policy: docs/testing.md).

The same float32 computation (same inputs, same batch, same process, same thread count) gives
bit-identical results, and tests compare those exactly. Computed in different ways (another batch
composition, row or padding; another thread count or instruction set; another code path; another
runtime such as ONNX Runtime), the results differ by float32 rounding, and tests compare them with
the bound derived here, which does not depend on the CPU:

* Every blocked GEMM tile, split reduction or vectorised loop sums the same products in some order;
  another row, thread count, instruction set or runtime only changes that order. With round to
  nearest, the rounding errors of a float32 sum of n products behave as independent zero-mean
  variables: its error stays within lambda * sqrt(n) * u * sum|a_i * b_i| with probability at least
  1 - 2n exp(-lambda**2 (1 - u)**2 / 2), u = 2**-24 the unit roundoff (Higham & Mary, "A new approach
  to probabilistic rounding error analysis", SIAM J. Sci. Comput. 41, 2019). With lambda = 10 that
  is 1 - n * 4e-22: never violated in practice. Two computations then differ by at most
  10 * sqrt(n) * eps * sum|a_i * b_i|, eps = 2u = 2**-23 ~ 1.2e-7.
* Along a network the errors of the successive products add up, each relative to the activations it
  happens in; normalisation layers keep those at the scale of the outputs, or at 1 for outputs that
  are themselves small (probabilities, cosines), hence ``scale = max(1, max |output|)``, and n is the
  network's ``depth``: the summed inner lengths of the matrix products, convolutions, attention
  products and reductions on the path from the input to the output. Element-wise functions (exp,
  tanh, GELU) add a few ulps each, negligible next to that.

So ``float32_atol(depth, outputs) = 10 * sqrt(depth) * eps * scale``. The worst case, every error
of the same sign and full size, is depth * eps * scale: 2-19 times more for these depths and never
approached; measured differences stay far below the bound used here (docs/testing.md). A real bug
(another image's row, a wrong position, a missing normalisation, orders not swapped) moves outputs
by a sizeable fraction of their scale; tests that use these bounds also check that the effect they
look for is far above them.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

#: float32 machine epsilon, 2**-23 (twice the unit roundoff).
F32_EPS = float(np.finfo(np.float32).eps)
#: How many standard deviations of accumulated rounding a bound allows (see the module docstring).
LAMBDA = 10.0

#: Summed inner lengths ("depth" above) of the models the tests run. The tiny random transformers
#: (``tiny_vlms`` and the tiny CLIP/SigLIP): the patch embedding (up to 3 x 2 x 14 x 14 = 1,176 for
#: Qwen's temporal patches), 2 ViT layers of width 32 (qkv 32, head dim 8, <= 32 tokens, out 32, MLP
#: 32 + 64, norms: ~270 each), the projector or patch merger (<= 256), one decoder layer over <= 130
#: tokens (~360) and the LM head (32): about 2,400 -> 5.8e-5 relative.
TINY_TRANSFORMER_DEPTH = 2_400
#: The tests' tiny CNN student backbone (3 x 3 convolutions over 3, 8 and 16 channels: 27 + 72 + 144,
#: the global mean over <= 64 positions, the head over <= 64 features) and the small LoRA test nets:
#: about 400 -> 2.4e-5 relative.
TINY_CNN_DEPTH = 400
#: EfficientNet-Lite0 (stem 27; 16 MBConv blocks of expand 1 x 1, depthwise 3 x 3 / 5 x 5 and project
#: 1 x 1 over up to 1,152 channels: ~10,700; head 320; mean over 49 positions) and the student's head
#: over 1,280 features: about 12,500 -> 1.3e-4 relative.
LITE0_DEPTH = 12_500
#: The mini VLM: EfficientNet-Lite0 (~11,100), the projector (1,280 + 64) and MiniLM-L6 (6 layers of
#: qkv 384, head dim 32, out 384, MLP 384 + 1,536 and two norms of 384: ~3,500 each): about 35,000
#: -> 2.2e-4 relative.
MINI_VLM_DEPTH = 35_000


def _max_abs(x: Any) -> float:
    if hasattr(x, "detach"):  # a torch tensor
        x = x.detach().cpu().double().numpy()
    a = np.asarray(x, dtype=np.float64)
    return float(np.max(np.abs(a))) if a.size else 0.0


def output_scale(*outputs: Any) -> float:
    """``max(1, largest |value|)`` of the compared outputs (arrays, tensors or numbers)."""
    return max([1.0, *(_max_abs(o) for o in outputs)])


def float32_rtol(depth: int) -> float:
    """``10 * sqrt(depth) * eps``: the relative bound for a float32 network of that depth."""
    return LAMBDA * math.sqrt(depth) * F32_EPS


def float32_atol(depth: int, *outputs: Any) -> float:
    """The absolute tolerance ``10 * sqrt(depth) * eps * scale`` for outputs of a float32 network of
    that depth computed in two different ways (module docstring); pass the compared outputs (or
    their scale) for ``scale``."""
    return float32_rtol(depth) * output_scale(*outputs)
