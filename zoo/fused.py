"""Log-probs and full-vocabulary entropy from final hidden states, as one fused LM-head op.

The logits are processed in tiles (row chunks x vocabulary columns), so the full (N, V) logits tensor
never exists at once; with gradients each tile is recomputed in backward, so peak memory is about one
tile of logits, and `grad_rows` restricts that backward to the rows whose logp carries gradient
(sparse backward). The tile passes themselves live in `zoo.fused_tiles`; `zoo.ops` re-exports
`logprobs_and_entropy` and the tuning constants below (set them here, on `zoo.fused`, to override).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from zoo.fused_tiles import _LOG2E, _compute_dtype, _fused_backward, _fused_forward, _Plan

# Defaults of the fused LM-head op, measured on 2 CPU cores (AVX2, torch 2.13; benchmarks/bench_ops.py):
# the (N, V) logits are processed in tiles of ROWS x VOCAB columns. Single-thread throughput hardly
# depends on the tile (+-10% from 0.25M to 32M elements: the matmul dominates); bigger tiles mean fewer
# OpenMP regions, which matters with 2 threads on a busy machine, and the N x V / 4 cap keeps small
# problems within a fraction of the naive memory. Direct path: faster than the fused op only below
# ~0.25M logits (V = 100: N <= ~2600 tokens).
FUSED_ROWS = 1024                 # rows per chunk (`chunk_size`) on CPU; more for small vocabularies
FUSED_TILE_ELEMS = 1 << 22        # rows x vocab columns per tile on CPU (16 MB of fp32 logits) ...
FUSED_TILE_FRACTION = 4           # ... and at most N x V / 4, so small problems stay lean
FUSED_MIN_VOCAB_TILE = 512
FUSED_ROWS_ACCEL = 8192           # on an accelerator (not tuned here: no GPU was available)
FUSED_TILE_ELEMS_ACCEL = 1 << 26
DIRECT_MAX_ELEMS = 1 << 18        # N * V at or below this (and no chunk size forced): plain autograd


def _row_temps(temp, N: int, dev) -> torch.Tensor:
    if isinstance(temp, torch.Tensor):
        return temp.detach().to(dev, torch.float32).reshape(-1).expand(N).contiguous()
    return torch.full((N,), float(temp), device=dev, dtype=torch.float32)


class _FusedLogpEntropy(torch.autograd.Function):
    """logp and entropy from hidden states. Saves hidden, weight, bias, targets, per-row temperatures
    and per-row statistics only (never logits); backward recomputes each tile."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, t, te, grad_rows, rows, vcols, ent_diff):
        plan = _Plan(hidden, weight, bias, rows, vcols)
        same_t = te is None
        lp, lse2, H, lse2_e = _fused_forward(plan, hidden, weight, targets, _LOG2E / t,
                                             None if same_t else t / te)
        ctx.save_for_backward(hidden, weight, bias, targets, t, te, lse2, lse2_e, H, grad_rows)
        ctx.rows, ctx.vcols, ctx.ent_diff = rows, vcols, ent_diff
        ctx.set_materialize_grads(False)
        if not ent_diff:
            ctx.mark_non_differentiable(H)
            return lp, H
        return lp, H.clone()

    @staticmethod
    @once_differentiable
    def backward(ctx, g_lp, g_H):
        hidden, weight, bias, targets, t, te, lse2, lse2_e, H, grad_rows = ctx.saved_tensors
        need_h, need_w, need_b = ctx.needs_input_grad[:3]
        nones = (None,) * 7
        if not ctx.ent_diff:
            g_H = None
        if g_lp is not None:
            g_lp = g_lp.float()
            if grad_rows is not None:
                g_lp = torch.where(grad_rows, g_lp, torch.zeros_like(g_lp))
        if g_H is not None:
            g_H = g_H.float()
        if (g_lp is None and g_H is None) or not (need_h or need_w or need_b):
            return (None, None, None) + nones
        N = hidden.shape[0]
        if grad_rows is None:
            idx = None
        else:
            act = grad_rows if g_H is None else grad_rows | (g_H != 0)   # the entropy gradient stays dense
            idx = act.nonzero().squeeze(1)

        def pick(x):
            return x if (x is None or idx is None) else x.index_select(0, idx)

        plan = _Plan(hidden, weight, bias, ctx.rows, ctx.vcols)
        tt, tte = pick(t), pick(te)
        gh, gw, gb = _fused_backward(plan, pick(hidden), weight, pick(targets), _LOG2E / tt,
                                     None if tte is None else tt / tte, 1.0 / tt,
                                     None if tte is None else 1.0 / tte, pick(lse2), pick(lse2_e), pick(H),
                                     pick(g_lp), pick(g_H), need_h, need_w, need_b)
        if gh is not None:
            if idx is not None:
                gh = torch.zeros(N, hidden.shape[1], device=hidden.device).index_copy_(0, idx, gh)
            gh = gh.to(hidden.dtype)
        if gw is not None:
            gw = gw.to(weight.dtype)
        if gb is not None:
            gb = gb.to(bias.dtype)
        return (gh, gw, gb) + nones


def _direct_logp_entropy(hidden, weight, bias, targets, t, te, same_t, ent_diff, grad_rows):
    """Plain autograd on the full (N, V) logits: the fast path for small N x V."""
    cdt = _compute_dtype(hidden, weight)
    logits = F.linear(hidden.to(cdt), weight.to(cdt), None if bias is None else bias.to(cdt)).float()   # (N, V)
    z = logits / t.unsqueeze(1)
    lse = torch.logsumexp(z, -1)
    lp = z.gather(1, targets.unsqueeze(1)).squeeze(1) - lse
    if grad_rows is not None:
        lp = torch.where(grad_rows, lp, lp.detach())
    with torch.set_grad_enabled(torch.is_grad_enabled() and ent_diff):
        if same_t:
            logp_e = z - lse.unsqueeze(1)
        else:
            logp_e = torch.log_softmax(logits / te.unsqueeze(1), -1)
        ent = -(logp_e.exp() * logp_e).sum(-1)
    return lp, (ent if ent_diff else ent.detach())


def logprobs_and_entropy(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                         temperature: float | torch.Tensor = 1.0, chunk_size: int | None = None,
                         *, bias: torch.Tensor | None = None,
                         entropy_temperature: float | torch.Tensor | None = None,
                         entropy_grad: bool = False, grad_rows: torch.Tensor | None = None,
                         vocab_chunk_size: int | None = None):
    """Log-prob of `targets` and full-vocabulary entropy from final hidden states, without the (N, V) logits.

    hidden (N, D), weight (V, D) the LM head (may be tied to the input embeddings), targets (N,) long,
    bias (V,) or None. `temperature` (float or (N,)) divides the logits for the log-probs; entropy is
    taken at `entropy_temperature` (float or (N,); default: `temperature`). Returns (logp (N,) fp32,
    entropy (N,) fp32, nats). Logits are handled in fp32: on CPU bf16/fp16 inputs are upcast per tile
    (the matmul too: faster there); on an accelerator the matmul runs in the inputs' dtype and its
    output is upcast. Gradients are accumulated in fp32 and returned in each input's dtype.

    Large N x V go through a fused op over tiles of `chunk_size` rows x `vocab_chunk_size` vocabulary
    columns (defaults: FUSED_ROWS rows, a tile of at most FUSED_TILE_ELEMS and N·V/4): the forward keeps
    only per-row statistics (never the logits) and the backward recomputes each tile. Small N x V
    (<= DIRECT_MAX_ELEMS, when no chunk size is forced) use plain autograd on the full logits; both
    paths give the same values and gradients.

    entropy_grad: True -> entropy is differentiable (dH/dz = -p (log p + H) / T_e); False (default) ->
      entropy is returned detached (requires_grad False): only entropy regularisation needs its gradient.
    grad_rows: bool (N,) or None. When given, logp carries gradient only for the rows where it is True
      (its values are exact for every row): the other rows contribute exactly zero gradient and the
      LM-head backward (recompute + gradient matmuls) runs only over the selected rows, so its cost
      scales with their share. Use it when the loss weights of the other rows' logp are zero. The
      entropy gradient is NOT restricted: with a differentiable entropy that receives a gradient, the
      backward also covers every row whose entropy gradient is non-zero (exact, dense entropy gradient).
    N == 0 returns empty tensors (still attached to the graph of hidden/weight, so backward runs).
    """
    N = hidden.shape[0]
    V = weight.shape[0]
    dev = hidden.device
    ent_diff = bool(entropy_grad)
    t = _row_temps(temperature, N, dev)
    te = t if entropy_temperature is None else _row_temps(entropy_temperature, N, dev)
    same_t = te is t or bool(torch.equal(te, t))
    if grad_rows is not None:
        if grad_rows.dtype != torch.bool or grad_rows.shape != (N,):
            raise ValueError(f"grad_rows must be a bool tensor of shape ({N},), got {grad_rows.dtype} "
                             f"{tuple(grad_rows.shape)}")
        grad_rows = grad_rows.to(dev)
    targets = targets.to(dev).reshape(N)
    if N and not (0 <= int(targets.min()) and int(targets.max()) < V):
        raise ValueError(f"targets must lie in [0, {V}), got [{int(targets.min())}, {int(targets.max())}]")
    if N == 0:                        # empty, but attached to the graph so that backward runs
        z = hidden.new_zeros(0, dtype=torch.float32)
        link = hidden.sum().float() + weight[:0].sum().float() + (0.0 if bias is None else bias[:0].sum().float())
        return z + link, (z + link if ent_diff else z.clone())
    need_grad = torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad
                                             or (bias is not None and bias.requires_grad))
    if chunk_size is None and vocab_chunk_size is None and N * V <= DIRECT_MAX_ELEMS:
        return _direct_logp_entropy(hidden, weight, bias, targets, t, te, same_t, ent_diff, grad_rows)
    cpu = dev.type == "cpu"
    tile = min(FUSED_TILE_ELEMS if cpu else FUSED_TILE_ELEMS_ACCEL, N * V // FUSED_TILE_FRACTION)
    if chunk_size:
        rows = int(chunk_size)
    else:                             # small vocabularies: more rows per chunk, up to a full tile
        rows = min(N, max(FUSED_ROWS if cpu else FUSED_ROWS_ACCEL, tile // V))
    if rows <= 0:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    vcols = int(vocab_chunk_size) if vocab_chunk_size else max(FUSED_MIN_VOCAB_TILE, tile // min(rows, N))
    vcols = min(vcols, V)
    hidden = hidden if hidden.is_contiguous() else hidden.contiguous()
    if not need_grad:
        with torch.no_grad():
            plan = _Plan(hidden, weight, bias, rows, vcols)
            lp, _, H, _ = _fused_forward(plan, hidden, weight, targets, _LOG2E / t, None if same_t else t / te)
        return lp, H
    return _FusedLogpEntropy.apply(hidden, weight, bias, targets, t, None if same_t else te, grad_rows,
                                   rows, vcols, ent_diff)
