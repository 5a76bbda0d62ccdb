"""Split prefix attention: a prompt continuing a kept KV cache attends in two unmasked calls on CPU.

:func:`load_causal_lm <judge.local.models.load_causal_lm>` installs it on every CPU model whose
attention is SDPA; any case it does not cover goes to plain SDPA.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

#: new positions from which a prompt continuing a kept KV cache gets the split attention (below it, one
#: masked call costs less)
SPLIT_ATTENTION_MIN = 256
#: the attention implementation name of :func:`split_prefix_attention` (SDPA's masks, SDPA's kernels)
SPLIT_SDPA = "judge_split_sdpa"


def split_prefix_attention(model: Any) -> None:
    """Make the model's CPU attention split a cache continuation in two unmasked flash-attention calls.

    Queries continuing a kept cache (a prompt after its rubric's prefix) need a mask that is causal
    shifted by the prefix length, and a masked SDPA call on CPU can skip no blocks: the new part costs
    as much as a full square. Instead: the queries against the prefix (nothing masked) and against
    themselves (``is_causal``, which skips the upper half), merged by their log-sum-exps -- the same
    softmax, up to float rounding. 2,212 ms -> 1,407 ms over 30 layers for 1,692 queries on a
    720-token prefix (float32, 2 cores; BENCHMARKS.md). Any other mask goes to plain SDPA.
    """
    import torch

    if getattr(model.config, "_attn_implementation", None) != "sdpa":
        return
    if not hasattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu"):
        return
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(SPLIT_SDPA, _split_attention)
    AttentionMaskInterface.register(SPLIT_SDPA, sdpa_mask)  # the masks SDPA gets
    model.set_attn_implementation(SPLIT_SDPA)


def _split_attention(
    module: Any,
    query: Any,
    key: Any,
    value: Any,
    attention_mask: Any,
    dropout: float = 0.0,
    scaling: float | None = None,
    is_causal: bool | None = None,
    **kwargs: Any,
) -> tuple[Any, None]:
    """transformers attention function: see :func:`split_prefix_attention`; SDPA's for every other case."""
    import torch
    from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward

    q_len, prefix = query.shape[2], key.shape[2] - query.shape[2]
    if (
        q_len < SPLIT_ATTENTION_MIN
        or prefix <= 0
        or dropout
        or is_causal is False
        or not getattr(module, "is_causal", True)
        or kwargs.get("position_bias") is not None
        or kwargs.get("softcap") is not None
        or not _is_shifted_causal(attention_mask, q_len, prefix)
    ):
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, is_causal=is_causal, **kwargs
        )
    groups = getattr(module, "num_key_value_groups", 1)
    if groups > 1:
        key, value = repeat_kv(key, groups), repeat_kv(value, groups)
    flash = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
    new, lse_new = flash(query, key[:, :, prefix:], value[:, :, prefix:], is_causal=True, scale=scaling)[:2]
    old, lse_old = flash(query, key[:, :, :prefix], value[:, :, :prefix], scale=scaling)[:2]
    lse = torch.logaddexp(lse_new, lse_old)
    out = new.float() * (lse_new - lse).exp().unsqueeze(-1) + old.float() * (lse_old - lse).exp().unsqueeze(-1)
    return out.to(query.dtype).transpose(1, 2).contiguous(), None


def _is_shifted_causal(mask: Any, q_len: int, prefix: int) -> bool:
    """Whether a boolean SDPA mask lets every query see the whole prefix and itself causally, nothing else
    (every row alike: no padding). Every layer of a forward pass gets the same mask: it is checked once."""
    import torch

    if mask is None or mask.dtype != torch.bool or tuple(mask.shape[-2:]) != (q_len, q_len + prefix):
        return False
    last, verdict = _LAST_MASK
    if last() is mask:
        return verdict
    causal = torch.ones(q_len, q_len, dtype=torch.bool, device=mask.device).tril()
    verdict = bool(mask[..., :prefix].all()) and bool((mask[..., prefix:] == causal).all())
    _set_last_mask(mask, verdict)
    return verdict


def _no_mask() -> None:
    return None


_LAST_MASK: tuple[Callable[[], Any], bool] = (_no_mask, False)  # (weak reference to a mask, its verdict)


def _set_last_mask(mask: Any, verdict: bool) -> None:
    global _LAST_MASK
    _LAST_MASK = (weakref.ref(mask), verdict)  # one assignment: a reader sees a matching pair
