"""zoo.ops.logprobs_and_entropy (fused LM-head op) against the naive full-logits computation."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from zoo import ops

# chunk settings: the direct path (small N x V) and the fused path with several row chunks and
# several vocabulary tiles, the last ones partial (N = 19, V = 23)
DIRECT = {}
CHUNKED = {"chunk_size": 5, "vocab_chunk_size": 7}
PATHS = {"direct": DIRECT, "chunked": CHUNKED}


def naive(h, w, b, y, t, te):
    """Reference: full logits, log_softmax, gather, entropy; fp32."""
    logits = F.linear(h.float(), w.float(), None if b is None else b.float())
    N = logits.shape[0]
    t = torch.as_tensor(t, dtype=torch.float32).expand(N)
    te = torch.as_tensor(te, dtype=torch.float32).expand(N)
    lp = torch.log_softmax(logits / t[:, None], -1).gather(1, y[:, None]).squeeze(1)
    le = torch.log_softmax(logits / te[:, None], -1)
    return lp, -(le.exp() * le).sum(-1)


def make(N=19, D=8, V=23, seed=0, bias=False, dtype=torch.float32, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    h = (torch.randn(N, D, generator=g) * scale).to(dtype).requires_grad_()
    w = (torch.randn(V, D, generator=g) / math.sqrt(D) * 2).to(dtype).requires_grad_()
    b = torch.randn(V, generator=g).to(dtype).requires_grad_() if bias else None
    y = torch.randint(0, V, (N,), generator=g)
    return h, w, b, y, g


def grads(loss, params):
    return torch.autograd.grad(loss, params, allow_unused=True)


# ----------------------------------------------------------------------------------------------
def test_hand_computed_vocab_of_three():
    # h = e1 and W[:, 0] = [0, ln 2, ln 3] -> logits [0, ln 2, ln 3] -> p = [1/6, 1/3, 1/2]
    h = torch.tensor([[1.0, 0.0]], requires_grad=True)
    w = torch.tensor([[0.0, 0.0], [math.log(2), 0.0], [math.log(3), 0.0]], requires_grad=True)
    y = torch.tensor([2])
    H = -(1 / 6 * math.log(1 / 6) + 1 / 3 * math.log(1 / 3) + 1 / 2 * math.log(1 / 2))   # 1.0114043
    # at T = 2: p ∝ [1, sqrt 2, sqrt 3]
    q = torch.tensor([1.0, math.sqrt(2), math.sqrt(3)])
    q = q / q.sum()
    for kw in (DIRECT, {"chunk_size": 1, "vocab_chunk_size": 1}, {"chunk_size": 1, "vocab_chunk_size": 2}):
        lp, ent = ops.logprobs_and_entropy(h, w, y, **kw)
        assert_close(lp, torch.tensor([math.log(0.5)]))
        assert_close(ent, torch.tensor([H]))
        # dlogp/dz = onehot - p = [-1/6, -1/3, 1/2]; z_j = W_j . h -> dW[j, 0] = onehot_j - p_j
        (gw,) = grads(lp.sum(), [w])
        assert_close(gw[:, 0], torch.tensor([-1 / 6, -1 / 3, 1 / 2]))
        assert_close(gw[:, 1], torch.zeros(3))
        lp2, ent2 = ops.logprobs_and_entropy(h, w, y, 2.0, **kw)
        assert_close(lp2, q[2].log().view(1))
        assert_close(ent2, -(q * q.log()).sum().view(1))


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("temp", ["1.0", "0.7", "rows"])
@pytest.mark.parametrize("ent_temp", ["same", "1.3", "rows"])
@pytest.mark.parametrize("bias", [False, True])
def test_values_and_gradients_match_naive(path, temp, ent_temp, bias):
    h, w, b, y, g = make(bias=bias)
    N = h.shape[0]
    t = {"1.0": 1.0, "0.7": 0.7, "rows": torch.rand(N, generator=g) + 0.5}[temp]
    te = {"same": None, "1.3": 1.3, "rows": torch.rand(N, generator=g) + 0.5}[ent_temp]
    params = [h, w] + ([b] if bias else [])
    wl, we = torch.randn(N, generator=g), torch.randn(N, generator=g)
    # loss on logp only, on the entropy only, and on both
    for cl, ce in ((1.0, 0.0), (0.0, 1.0), (1.0, 1.0)):
        lp, ent = ops.logprobs_and_entropy(h, w, y, t, bias=b, entropy_temperature=te, entropy_grad=True,
                                           **PATHS[path])
        ref_lp, ref_ent = naive(h, w, b, y, t, t if te is None else te)
        assert lp.dtype == ent.dtype == torch.float32
        assert_close(lp, ref_lp, atol=1e-5, rtol=1e-5)
        assert_close(ent, ref_ent, atol=1e-5, rtol=1e-5)
        loss = (ent * we).sum() if cl == 0 else (lp * wl).sum() * cl + (ent * we).sum() * ce   # cl = 0: no
        ref = (ref_lp * wl).sum() * cl + (ref_ent * we).sum() * ce                            # grad to logp
        for a, r in zip(grads(loss, params), grads(ref, params)):
            assert_close(a, r, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("path", list(PATHS))
def test_entropy_grad_flag(path):
    h, w, b, y, _ = make()
    lp, ent = ops.logprobs_and_entropy(h, w, y, entropy_grad=False, **PATHS[path])
    assert lp.requires_grad and not ent.requires_grad and ent.grad_fn is None
    lp.sum().backward()                        # logp alone still differentiates
    assert h.grad is not None and w.grad is not None
    _, ent = ops.logprobs_and_entropy(h, w, y, entropy_grad=True, **PATHS[path])
    assert ent.requires_grad
    _, ent = ops.logprobs_and_entropy(h, w, y, **PATHS[path])     # default: no entropy gradient unless asked
    assert not ent.requires_grad
    with torch.no_grad():
        lp2, ent2 = ops.logprobs_and_entropy(h, w, y, entropy_grad=True, **PATHS[path])
    assert not lp2.requires_grad and not ent2.requires_grad
    assert_close(ent2, ent.detach())


@pytest.mark.parametrize("path", list(PATHS))
def test_tied_embeddings_total_gradient(path):
    # the LM head is the input embedding matrix: its gradient is the sum over both uses
    g = torch.Generator().manual_seed(3)
    V, D, B, T = 23, 8, 3, 6
    emb = torch.nn.Embedding(V, D)
    with torch.no_grad():
        emb.weight.copy_(torch.randn(V, D, generator=g))
    A = torch.randn(D, D, generator=g, requires_grad=True)
    ids = torch.randint(0, V, (B, T + 1), generator=g)
    temps = torch.rand(B * T, generator=g) + 0.5

    def loss(use_op):
        hidden = torch.tanh(emb(ids[:, :-1]) @ A).reshape(B * T, D)
        y = ids[:, 1:].reshape(-1)
        if use_op:
            lp, ent = ops.logprobs_and_entropy(hidden, emb.weight, y, temps, entropy_temperature=1.0, entropy_grad=True,
                                               **PATHS[path])
        else:
            lp, ent = naive(hidden, emb.weight, None, y, temps, 1.0)
        return lp.sum() - 0.1 * ent.sum()

    ga = grads(loss(True), [emb.weight, A])
    gr = grads(loss(False), [emb.weight, A])
    for a, r in zip(ga, gr):
        assert_close(a, r, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("path", list(PATHS))
def test_bf16_inputs(path):
    h, w, b, y, g = make(dtype=torch.bfloat16, bias=True)
    t = torch.rand(h.shape[0], generator=g) + 0.5
    lp, ent = ops.logprobs_and_entropy(h, w, y, t, bias=b, entropy_temperature=1.0, entropy_grad=True, **PATHS[path])
    # reference on the same bf16 values in fp32 (the op computes every tile in fp32)
    hf, wf, bf = (x.detach().float().requires_grad_() for x in (h, w, b))
    ref_lp, ref_ent = naive(hf, wf, bf, y, t, 1.0)
    assert lp.dtype == ent.dtype == torch.float32
    assert_close(lp, ref_lp, atol=1e-4, rtol=1e-4)
    assert_close(ent, ref_ent, atol=1e-4, rtol=1e-4)
    wl = torch.randn(h.shape[0], generator=g)
    ga = grads((lp * wl).sum() + ent.sum(), [h, w, b])
    gr = grads((ref_lp * wl).sum() + ref_ent.sum(), [hf, wf, bf])
    for a, r, x in zip(ga, gr, (h, w, b)):
        assert a.dtype == x.dtype == torch.bfloat16
        assert_close(a.float(), r, atol=2e-2, rtol=2e-2)        # bf16 rounding of the gradients


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("bias", [False, True])
def test_grad_rows_equals_dense_with_zero_weights(path, bias):
    h, w, b, y, g = make(bias=bias)
    N = h.shape[0]
    t = torch.rand(N, generator=g) + 0.5
    rows = torch.rand(N, generator=g) < 0.3
    rows[0] = True
    wts = torch.randn(N, generator=g) * rows                 # zero loss weight outside grad_rows
    params = [h, w] + ([b] if bias else [])
    lp_s, ent_s = ops.logprobs_and_entropy(h, w, y, t, bias=b, grad_rows=rows, **PATHS[path])
    lp_d, ent_d = ops.logprobs_and_entropy(h, w, y, t, bias=b, **PATHS[path])
    assert_close(lp_s, lp_d, atol=0, rtol=0)                  # values exact for every row
    assert_close(ent_s, ent_d, atol=0, rtol=0)
    gs = grads((lp_s * wts).sum(), params)
    gd = grads((lp_d * wts).sum(), params)
    for a, r in zip(gs, gd):
        assert_close(a, r, atol=1e-6, rtol=1e-5)
    # rows outside grad_rows contribute exactly nothing, whatever their loss weight
    lp_s, _ = ops.logprobs_and_entropy(h, w, y, t, bias=b, grad_rows=rows, **PATHS[path])
    gs2 = grads((lp_s * (wts + 5.0 * ~rows)).sum(), params)
    for a, r in zip(gs2, gd):
        assert_close(a, r, atol=1e-6, rtol=1e-5)
    assert torch.count_nonzero(gs2[0][~rows]) == 0


@pytest.mark.parametrize("path", list(PATHS))
def test_grad_rows_keeps_entropy_gradient_dense(path):
    # grad_rows restricts the logp gradient only; a differentiable entropy keeps its gradient on every row
    h, w, b, y, g = make()
    N = h.shape[0]
    rows = torch.zeros(N, dtype=torch.bool)
    rows[::4] = True
    wl, we = torch.randn(N, generator=g), torch.randn(N, generator=g)
    lp_s, ent_s = ops.logprobs_and_entropy(h, w, y, 0.8, grad_rows=rows, entropy_grad=True, **PATHS[path])
    ref_lp, ref_ent = naive(h, w, None, y, 0.8, 0.8)
    gs = grads((lp_s * wl).sum() + (ent_s * we).sum(), [h, w])
    gr = grads((ref_lp * wl * rows).sum() + (ref_ent * we).sum(), [h, w])
    for a, r in zip(gs, gr):
        assert_close(a, r, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("path", list(PATHS))
def test_grad_rows_none_selected(path):
    h, w, b, y, _ = make(bias=True)
    rows = torch.zeros(h.shape[0], dtype=torch.bool)
    lp, ent = ops.logprobs_and_entropy(h, w, y, bias=b, grad_rows=rows, entropy_grad=False, **PATHS[path])
    for gr in grads(lp.sum(), [h, w, b]):
        assert gr is None or torch.count_nonzero(gr) == 0


def test_argument_validation():
    h, w, b, y, _ = make()
    with pytest.raises(ValueError, match="grad_rows"):
        ops.logprobs_and_entropy(h, w, y, grad_rows=torch.ones(h.shape[0]))            # not bool
    with pytest.raises(ValueError, match="grad_rows"):
        ops.logprobs_and_entropy(h, w, y, grad_rows=torch.ones(3, dtype=torch.bool))    # wrong shape
    with pytest.raises(ValueError, match="targets"):
        ops.logprobs_and_entropy(h, w, y + w.shape[0], **CHUNKED)                       # out of the vocabulary


def test_empty_input():
    for kw in (DIRECT, CHUNKED):
        h = torch.zeros(0, 4, requires_grad=True)
        w = torch.randn(3, 4, requires_grad=True)
        lp, ent = ops.logprobs_and_entropy(h, w, torch.zeros(0, dtype=torch.long), **kw)
        assert lp.shape == ent.shape == (0,)
        (lp.sum() + ent.sum()).backward()
        assert h.grad.shape == (0, 4) and torch.count_nonzero(w.grad) == 0
        lp, ent = ops.logprobs_and_entropy(h.detach(), w.detach(), torch.zeros(0, dtype=torch.long),
                                           entropy_grad=False, grad_rows=torch.zeros(0, dtype=torch.bool))
        assert lp.shape == ent.shape == (0,) and not ent.requires_grad


def test_forward_saves_no_logits_sized_tensor():
    N, D, V = 64, 8, 96
    h, w, b, y, _ = make(N=N, D=D, V=V, bias=True)
    sizes = []

    def pack(x):
        sizes.append(x.numel())
        return x

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
        lp, ent = ops.logprobs_and_entropy(h, w, y, 0.9, bias=b, chunk_size=16, vocab_chunk_size=32,
                                           entropy_temperature=1.1)
    assert sizes, "nothing saved: the hook did not see the fused op"
    assert max(sizes) < N * V and N * V not in sizes
    (lp.sum() + ent.sum()).backward()


def test_default_path_choice():
    # tiny problems take the direct path; large ones (or a forced chunk size) the fused op
    h, w, b, y, _ = make()
    lp, _ = ops.logprobs_and_entropy(h, w, y)
    assert "Fused" not in type(lp.grad_fn).__name__
    lp, _ = ops.logprobs_and_entropy(h, w, y, chunk_size=8)
    assert "Fused" in type(lp.grad_fn).__name__
    h2, w2, _, y2, _ = make(N=600, D=4, V=600)
    assert 600 * 600 > ops.DIRECT_MAX_ELEMS
    lp, _ = ops.logprobs_and_entropy(h2, w2, y2)
    assert "Fused" in type(lp.grad_fn).__name__


@pytest.mark.parametrize("path", list(PATHS))
def test_large_logits_stable(path):
    # peaked rows (logits ~ 1e3, the max growing from tile to tile): no overflow, H ~ 0 exactly as naive
    N, D, V = 6, 2, 23
    h = torch.tensor([[1.0, 0.0]] * N, requires_grad=True)
    w = torch.stack([torch.arange(V, dtype=torch.float32) * 60.0, torch.zeros(V)], 1).requires_grad_()
    y = torch.tensor([22, 21, 0, 5, 22, 10])
    lp, ent = ops.logprobs_and_entropy(h, w, y, 1.0, **PATHS[path])
    ref_lp, ref_ent = naive(h, w, None, y, 1.0, 1.0)
    assert torch.isfinite(lp).all() and torch.isfinite(ent).all()
    assert_close(lp, ref_lp)
    assert_close(ent, ref_ent, atol=1e-6, rtol=0)
    gs = grads(lp.sum() + ent.sum(), [h, w])
    gr = grads(ref_lp.sum() + ref_ent.sum(), [h, w])
    for a, r in zip(gs, gr):
        assert torch.isfinite(a).all()
        assert_close(a, r, atol=1e-4, rtol=1e-4)
