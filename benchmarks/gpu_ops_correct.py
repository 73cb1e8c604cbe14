"""Fused log-prob/entropy op vs full logits on a device (fp32 and bf16): `python benchmarks/gpu_ops_correct.py cuda`.
The CPU unit tests never take the accelerator tiling path; gpu_check.sh runs this on the GPU."""
import sys
import torch
from zoo import ops
dev = sys.argv[1]
g = torch.Generator().manual_seed(0)
for dt, tol in ((torch.float32, 1e-4), (torch.bfloat16, 3e-2)):
    N, D, V = 300, 64, 5000
    h = torch.randn(N, D, generator=g).to(dev, dt).requires_grad_()
    w = (torch.randn(V, D, generator=g) / 8).to(dev, dt).requires_grad_()
    y = torch.randint(0, V, (N,), generator=g).to(dev)
    t = (torch.rand(N, generator=g) + 0.5).to(dev)
    wl = torch.randn(N, generator=g).to(dev)
    lp, H = ops.logprobs_and_entropy(h, w, y, t, chunk_size=64, entropy_temperature=1.0, entropy_grad=True)
    ((lp * wl).sum() + H.sum()).backward()
    g1 = [x.grad.float().clone() for x in (h, w)]
    h.grad = w.grad = None
    z = h.float() @ w.float().T
    rl = torch.log_softmax(z / t[:, None], -1).gather(-1, y[:, None]).squeeze(-1)
    rh = ops.entropy_from_logits(z)
    ((rl * wl).sum() + rh.sum()).backward()
    errs = [float((lp - rl).detach().abs().max()), float((H - rh).detach().abs().max())]
    errs += [float((a - b.float()).abs().max() / b.float().abs().max()) for a, b in zip(g1, (h.grad, w.grad))]
    print(dt, "max errors logp, H, grad_h (rel), grad_w (rel):", ["%.2e" % e for e in errs])
    assert max(errs) < tol, (dt, errs)
print("fused op on", dev, "matches full logits: OK")
