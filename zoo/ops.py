"""Shared math as pure functions (shapes in comments; (B, T) = responses x response tokens).

Log-probs and entropy are computed from hidden states by a fused op over tiles of the logits, so the
full (N, V) logits tensor never exists at once; with gradients each tile is recomputed in backward,
so peak memory is about one tile of logits.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

AGG_MODES = ("token-mean", "weighted-token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm")


# ----------------------------------------------------------------------------------------------
# Entropy and log-probs
# ----------------------------------------------------------------------------------------------
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


def entropy_from_logits(logits: torch.Tensor, temperature: float | torch.Tensor = 1.0) -> torch.Tensor:
    """H = -Σ p log p over the full vocabulary, p = softmax(logits / T), in fp32 (nats).

    `temperature` is a float or a tensor broadcastable to logits.shape[:-1]. Returns logits.shape[:-1].
    """
    z = logits.float()
    if isinstance(temperature, torch.Tensor):
        z = z / temperature.float().unsqueeze(-1)
    elif temperature != 1.0:
        z = z / temperature
    logp = torch.log_softmax(z, dim=-1)
    return -(logp.exp() * logp).sum(-1)


def _row_temps(temp, N: int, dev) -> torch.Tensor:
    if isinstance(temp, torch.Tensor):
        return temp.detach().to(dev, torch.float32).reshape(-1).expand(N).contiguous()
    return torch.full((N,), float(temp), device=dev, dtype=torch.float32)


_LOG2E = 1.0 / math.log(2.0)
_LN2 = math.log(2.0)


def _compute_dtype(hidden, weight) -> torch.dtype:
    """The LM-head matmul dtype: on CPU a bf16/fp16 matmul is several times slower than fp32 (no
    AMX/AVX512-BF16 here), so upcast; on an accelerator keep the inputs' low-precision matmul."""
    return torch.float32 if hidden.device.type == "cpu" else torch.promote_types(hidden.dtype, weight.dtype)


class _Plan:
    """How one call computes its logits tiles. Tiles are in base-2 units, z2 = logits · log2(e) / T
    (exp2 is about twice as fast as exp on CPU), and always fp32."""

    def __init__(self, hidden, weight, bias, rows: int, vcols: int):
        self.V = weight.shape[0]
        self.rows, self.vcols = rows, vcols
        self.cdt = _compute_dtype(hidden, weight)
        self.f32 = self.cdt == torch.float32
        self.bias = bias
        self.buffers = hidden.device.type == "cpu"        # reuse tile buffers (CPU: no caching allocator)

    def w(self, weight, v0, v1):
        return weight[v0:v1].to(self.cdt)

    def rows_in(self, h_blk, scale):
        """(rows of hidden in compute dtype, folded): `scale` (r,) is folded into the rows when the
        tile is an fp32 matmul without bias, (h · s) W^T = s · (h W^T); otherwise applied to the tile."""
        hs = h_blk.to(self.cdt)
        if self.bias is None and self.f32:
            return hs * scale.unsqueeze(1), True
        return hs, False

    def logits(self, hs, wc, v0, v1, scale, folded: bool, out=None):
        """Tile z2 = (h W^T + b) · scale, fp32 (r, v1 - v0)."""
        b = None if self.bias is None else self.bias[v0:v1].to(self.cdt)
        if out is not None and self.f32:
            z = torch.mm(hs, wc.t(), out=out) if b is None else torch.addmm(b, hs, wc.t(), out=out)
        else:
            z = F.linear(hs, wc, b).float()
        if not folded:
            z.mul_(scale.unsqueeze(1))
        return z

    def scratch(self, n: int, dev):
        return torch.empty(n, device=dev) if self.buffers else None

    def row_chunks(self, h, scale):
        """(r0, r1, scale of the rows, rows in compute dtype, folded) for each chunk of `rows` rows."""
        for r0 in range(0, h.shape[0], self.rows):
            r1 = min(r0 + self.rows, h.shape[0])
            sc = scale[r0:r1]
            yield (r0, r1, sc, *self.rows_in(h[r0:r1], sc))


def _target_in_tile(y, v0: int, v1: int):
    """(inside (r,) bool: target in vocab tile [v0, v1), its column (r, 1), clamped when outside)."""
    return (y >= v0) & (y < v1), (y - v0).clamp(0, v1 - v0 - 1).unsqueeze(1)


def _view(buf, r: int, c: int):
    return None if buf is None else buf[:r * c].view(r, c)


def _tile_stats(z, e, st):
    """Online softmax statistics of one base-2 tile z (r, v) fp32, destroyed in place; e: scratch.

    st = [m, s, a] running per row: m = max, s = Σ 2^(z - m), a = Σ 2^(z - m)(z - m), so that
    lse2 = m + log2 s and H = ln s - ln2 · a / s, without cancellation for peaked rows.
    """
    mt = z.amax(1)
    m_new = mt if st[0] is None else torch.maximum(st[0], mt)
    z.sub_(m_new.unsqueeze(1))
    e = torch.exp2(z, out=e)
    s_t = e.sum(1)
    a_t = e.mul_(z).sum(1)                                              # in place: no tile-sized temporary
    if st[0] is None:
        st[0], st[1], st[2] = m_new, s_t, a_t
    else:
        dm = st[0] - m_new                                              # <= 0
        c = torch.exp2(dm)
        st[2] = c * (st[2] + dm * st[1]) + a_t
        st[1] = c * st[1] + s_t
        st[0] = m_new


def _fused_forward(plan: _Plan, hidden, weight, targets, scale, ratio_e):
    """(logp, lse2, H, lse2_e) over row chunks x vocab tiles, never more than one tile of logits.

    scale (N,) = log2(e) / T; ratio_e (N,) = T / T_e, or None when the entropy is taken at T.
    lse2 = log2 Σ exp(logits / T) (base 2, kept for backward); logp and H in nats.
    """
    N, V, dev = hidden.shape[0], plan.V, hidden.device
    R, C = plan.rows, plan.vcols
    lp = torch.empty(N, device=dev)
    lse2 = torch.empty(N, device=dev)
    H = torch.empty(N, device=dev)
    lse2_e = None if ratio_e is None else torch.empty(N, device=dev)
    n_buf = min(R, N) * min(C, V)
    buf, ebuf = plan.scratch(n_buf, dev), plan.scratch(n_buf, dev)
    e2buf = plan.scratch(n_buf, dev) if ratio_e is not None else None
    for r0, r1, sc, hs, folded in plan.row_chunks(hidden, scale):
        rb = r1 - r0
        y = targets[r0:r1]
        st, st_e = [None, None, None], [None, None, None]
        zy = torch.zeros(rb, device=dev)
        for v0 in range(0, V, C):
            v1 = min(v0 + C, V)
            z = plan.logits(hs, plan.w(weight, v0, v1), v0, v1, sc, folded, out=_view(buf, rb, v1 - v0))
            inside, col = _target_in_tile(y, v0, v1)
            g = z.gather(1, col).squeeze(1)
            zy = torch.where(inside, g, zy)
            if ratio_e is not None:
                ze = torch.mul(z, ratio_e[r0:r1].unsqueeze(1), out=_view(e2buf, rb, v1 - v0))
                _tile_stats(ze, _view(ebuf, rb, v1 - v0), st_e)
            _tile_stats(z, _view(ebuf, rb, v1 - v0), st)
        m, s, a = st
        l2s = s.log2()
        lse2[r0:r1] = m + l2s
        lp[r0:r1] = (zy - m - l2s) * _LN2
        if ratio_e is not None:
            m, s, a = st_e
            l2s = s.log2()
            lse2_e[r0:r1] = m + l2s
        H[r0:r1] = l2s * _LN2 - _LN2 * a / s
    return lp, lse2, H, lse2_e


def _mm_acc(dst, a, b, first: bool):
    """dst (fp32) = a @ b when first, else dst += a @ b; a, b in the compute dtype."""
    if a.dtype == torch.float32 and b.dtype == torch.float32:
        if first:
            torch.mm(a, b, out=dst)
        else:
            dst.addmm_(a, b)
    elif first:
        dst.copy_(torch.mm(a, b))
    else:
        dst.add_(torch.mm(a, b).float())


def _fused_backward(plan: _Plan, h, weight, y, scale, ratio_e, inv_t, inv_te, lse2, lse2_e, H, g_lp, g_H,
                    need_h: bool, need_w: bool, need_b: bool):
    """Gradients (fp32) wrt hidden rows h, weight, bias of Σ g_lp·logp + Σ g_H·H over the rows given.

    dlogp/dz = (onehot(y) - p_T) / T; dH/dz = -p_e (ln p_e + H) / T_e (z: raw logits). With only the
    logp term, G = -diag(g_lp / T) (P - onehot): the tile holds M = P - onehot and the per-row factor
    is applied to the (rows, D) operands instead of the (rows, vocab) tile.
    """
    n, D, V, dev = h.shape[0], h.shape[1], plan.V, h.device
    R, C = plan.rows, plan.vcols
    f32 = plan.f32
    # the first row chunk writes grad_weight (no memset of a (V, D) buffer), the others accumulate
    gh = torch.empty(n, D, device=dev) if need_h else None
    gw = (torch.empty if n else torch.zeros)(V, D, device=dev) if need_w else None
    gb = torch.zeros(V, device=dev) if need_b else None
    n_buf = min(R, n) * min(C, V)
    buf = plan.scratch(n_buf, dev)
    pbuf = plan.scratch(n_buf, dev) if g_H is not None else None
    for r0, r1, sc, hs, folded in plan.row_chunks(h, scale):
        rb = r1 - r0
        h_raw = h[r0:r1].to(plan.cdt)
        yb = y[r0:r1]
        l2 = lse2[r0:r1].unsqueeze(1)
        cl = None if g_lp is None else g_lp[r0:r1] * inv_t[r0:r1]      # g_lp / T
        if g_H is None:                       # logp only: tile M = P - onehot, factors on the row side
            ncl = -cl
            h_w = h_raw * ncl.to(plan.cdt).unsqueeze(1) if need_w else None
            gh_b = torch.empty(rb, D, device=dev) if need_h else None
        else:
            ch = g_H[r0:r1] * (inv_t if inv_te is None else inv_te)[r0:r1]   # g_H / T_e
        for v0 in range(0, V, C):
            v1 = min(v0 + C, V)
            out = _view(buf, rb, v1 - v0)
            wc = plan.w(weight, v0, v1)
            inside, idx = _target_in_tile(yb, v0, v1)
            if g_H is None:
                if folded and out is not None:
                    z = torch.addmm(-l2, hs, wc.t(), out=out)                         # log2 p_T
                else:
                    z = plan.logits(hs, wc, v0, v1, sc, folded, out=out).sub_(l2)
                M = z.exp2_()
                M.scatter_add_(1, idx, -inside.float().unsqueeze(1))                 # P - onehot
                Mc = M if f32 else M.to(plan.cdt)
                if need_h:
                    _mm_acc(gh_b, Mc, wc, v0 == 0)
                if need_w:
                    _mm_acc(gw[v0:v1], Mc.t(), h_w, r0 == 0)
                if need_b:
                    gb[v0:v1].addmv_(M.t(), ncl)
                continue
            z = plan.logits(hs, wc, v0, v1, sc, folded, out=out)
            # entropy part: G_e = p_e (-ch ln p_e - ch H), ln p_e = ln2 (z2_e - lse2_e)
            pout = _view(pbuf, rb, v1 - v0)
            if ratio_e is None:
                ze = z if cl is None else (z.clone() if pout is None else pout.copy_(z))
                ze.sub_(l2)
            else:
                ze = torch.mul(z, ratio_e[r0:r1].unsqueeze(1), out=pout)
                ze.sub_(lse2_e[r0:r1].unsqueeze(1))
            pe = torch.exp2(ze)
            G = ze.mul_((-_LN2 * ch).unsqueeze(1)).sub_((ch * H[r0:r1]).unsqueeze(1)).mul_(pe)
            del pe
            if cl is not None:                                                      # + cl (onehot - p_T)
                z.sub_(l2).exp2_().mul_((-cl).unsqueeze(1))
                z.scatter_add_(1, idx, torch.where(inside, cl, torch.zeros_like(cl)).unsqueeze(1))
                G.add_(z)
            Gc = G if f32 else G.to(plan.cdt)
            if need_h:
                _mm_acc(gh[r0:r1], Gc, wc, v0 == 0)
            if need_w:
                _mm_acc(gw[v0:v1], Gc.t(), h_raw, r0 == 0)
            if need_b:
                gb[v0:v1].add_(G.sum(0))
        if g_H is None and need_h:
            gh[r0:r1] = gh_b * ncl.unsqueeze(1)
    return gh, gw, gb


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


# ----------------------------------------------------------------------------------------------
# Statistics
# ----------------------------------------------------------------------------------------------
def quantile_kth(v: torch.Tensor, q: float) -> torch.Tensor:
    """torch.quantile(v, q) (linear interpolation) via kthvalue: no 2^24-element limit.

    v is 1-D and non-empty. Position p = q·(n-1), computed in v's dtype exactly as torch.quantile
    does, so the result matches it bit for bit; result = lerp(v_(floor p), v_(ceil p), p - floor p).
    """
    n = v.numel()
    if n == 0:
        raise ValueError("quantile of an empty tensor")
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile q must be in [0, 1], got {q}")
    v = v.float()
    pos = torch.tensor(q, dtype=torch.float32 if n <= 2 ** 24 else torch.float64) * (n - 1)
    lo = int(pos.floor())
    hi = min(int(pos.ceil()), n - 1)
    v_lo = torch.kthvalue(v, lo + 1).values
    if hi == lo:
        return v_lo
    v_hi = torch.kthvalue(v, hi + 1).values
    return torch.lerp(v_lo, v_hi, (pos - lo).to(v.dtype))


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of x over mask (0 where nothing is valid, never NaN)."""
    m = mask.to(x.dtype)
    if dim is None:
        return (x * m).sum() / m.sum().clamp(min=1)
    return (x * m).sum(dim) / m.sum(dim).clamp(min=1)


def group_stats(values: torch.Tensor, group_ids: torch.Tensor):
    """Per-response group mean and unbiased std (G-1 denominator) of a (B,) tensor. Returns (mean, std) (B,)."""
    uniq, inv = torch.unique(group_ids, return_inverse=True)
    G = len(uniq)
    v = values.float()
    cnt = torch.zeros(G, dtype=torch.float32, device=v.device).index_add_(0, inv, torch.ones_like(v))
    s = torch.zeros(G, dtype=torch.float32, device=v.device).index_add_(0, inv, v)
    mean = s / cnt
    dev2 = torch.zeros(G, dtype=torch.float32, device=v.device).index_add_(0, inv, (v - mean[inv]) ** 2)
    std = torch.sqrt(dev2 / (cnt - 1).clamp(min=1))
    return mean[inv], std[inv]


def grpo_advantages(rewards: torch.Tensor, group_ids: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """A_i = (R_i - mean_g R) / (std_g R + eps), std with G-1 denominator. (B,)"""
    mean, std = group_stats(rewards, group_ids)
    return (rewards.float() - mean) / (std + eps)


def dr_grpo_advantages(rewards: torch.Tensor, group_ids: torch.Tensor) -> torch.Tensor:
    """A_i = R_i - mean_g R (Dr. GRPO: no std normalisation). (B,)"""
    mean, _ = group_stats(rewards, group_ids)
    return rewards.float() - mean


# ----------------------------------------------------------------------------------------------
# Losses
# ----------------------------------------------------------------------------------------------
def clipped_surrogate(logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor,
                      clip_low: float, clip_high: float) -> torch.Tensor:
    """ℓ = -min(r·A, clip(r, 1-ε_low, 1+ε_high)·A), r = exp(logp - old_logp). (B, T)"""
    ratio = torch.exp(logp - old_logp)                                   # (B, T)
    clipped = torch.clamp(ratio, 1.0 - clip_low, 1.0 + clip_high)        # (B, T)
    return -torch.minimum(ratio * advantages, clipped * advantages)


def k3_kl(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """KL_k3 = exp(d) - d - 1, d = ref_logp - logp. (B, T)"""
    d = ref_logp - logp
    return torch.exp(d) - d - 1.0


def agg_denominators(mask: torch.Tensor, weights: torch.Tensor | None, max_len: int) -> dict[str, float]:
    """Step-level denominators for every aggregation mode (mask/weights cover the whole step)."""
    m = mask.float()
    w = m if weights is None else weights.float() * m
    return {
        "n_valid": float(m.sum()),
        "n_seqs": float(mask.shape[0]),
        "sum_weights": float(w.sum()),
        "max_len": float(max_len),
    }


def agg_loss(loss_mat: torch.Tensor, mask: torch.Tensor, mode: str, denom: dict[str, float]) -> torch.Tensor:
    """Aggregate a (B, T) per-token loss of one micro-batch with STEP-level denominators.

    Summing this over the micro-batches of an optimizer step gives the step loss:
      token-mean              Σ ℓ / Σ_step valid
      weighted-token-mean     Σ ℓ / Σ_step w        (ℓ already carries the weights)
      seq-mean-token-mean     Σ_i (Σ_t ℓ_i,t / |o_i|) / n_seqs_step
      seq-mean-token-sum-norm Σ ℓ / (n_seqs_step · L_max)
    Zero valid tokens give 0, never NaN.
    """
    m = mask.to(loss_mat.dtype)
    lm = loss_mat * m
    if mode == "token-mean":
        return lm.sum() / max(denom["n_valid"], 1.0)
    if mode == "weighted-token-mean":
        return lm.sum() / max(denom["sum_weights"], 1e-8) if denom["sum_weights"] > 0 else lm.sum() * 0.0
    if mode == "seq-mean-token-mean":
        per_seq = lm.sum(-1) / m.sum(-1).clamp(min=1)                   # (B,)
        return per_seq.sum() / max(denom["n_seqs"], 1.0)
    if mode == "seq-mean-token-sum-norm":
        return lm.sum() / max(denom["n_seqs"] * denom["max_len"], 1.0)
    raise ValueError(f"unknown loss aggregation mode '{mode}'; valid: {', '.join(AGG_MODES)}")


# ----------------------------------------------------------------------------------------------
# Per-group token statistics and EAPO quadrants (also logged for every run: cheap)
# ----------------------------------------------------------------------------------------------
QUADRANTS = ("PHR", "PLR", "NHR", "NLR")


def group_token_stats(x: torch.Tensor, mask: torch.Tensor, group_ids: torch.Tensor, eps: float = 0.0):
    """Mean and (population) std of x over the valid tokens of each group, broadcast to (B, T).

    x, mask (B, T); group_ids (B,). A group with no valid token gets mean 0, std 0.
    """
    uniq, inv = torch.unique(group_ids, return_inverse=True)
    G = len(uniq)
    m = mask.float()
    xf = x.detach().float() * m
    cnt = torch.zeros(G, device=x.device).index_add_(0, inv, m.sum(-1))             # (G,)
    s = torch.zeros(G, device=x.device).index_add_(0, inv, xf.sum(-1))              # (G,)
    mean = s / cnt.clamp(min=1)                                                      # (G,)
    dev = ((x.detach().float() - mean[inv].unsqueeze(-1)) ** 2) * m                 # (B, T)
    var = torch.zeros(G, device=x.device).index_add_(0, inv, dev.sum(-1)) / cnt.clamp(min=1)
    B, T = x.shape
    return mean[inv].unsqueeze(-1).expand(B, T), var.sqrt()[inv].unsqueeze(-1).expand(B, T)


def quadrant_ids(advantages: torch.Tensor, entropy: torch.Tensor, mask: torch.Tensor,
                 group_ids: torch.Tensor) -> torch.Tensor:
    """EAPO quadrant of each token: 0 PHR, 1 PLR, 2 NHR, 3 NLR; -1 invalid or A == 0. (B, T) long.

    Positive/negative = sign of the advantage; high-entropy iff H >= μ_H, the mean H over the
    valid tokens of the token's group (the G responses of one prompt).
    """
    mu, _ = group_token_stats(entropy, mask, group_ids)                  # (B, T)
    high = entropy.detach().float() >= mu                                # (B, T)
    pos, neg = advantages > 0, advantages < 0
    q = torch.full(advantages.shape, -1, dtype=torch.long, device=advantages.device)
    q[pos & high] = 0
    q[pos & ~high] = 1
    q[neg & high] = 2
    q[neg & ~high] = 3
    q[~mask.bool()] = -1
    return q
