"""The tile passes of the fused LM-head op (`zoo.fused`): forward and backward over row chunks x
vocabulary tiles of the logits, never more than one tile at once. No autograd here: `zoo.fused`
wires these passes into a torch.autograd.Function and picks the tile sizes.

Tiles are in base-2 units, z2 = logits · log2(e) / T, and always fp32; (N, D) hidden rows,
(V, D) LM-head weight, (N,) per-row statistics.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

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
