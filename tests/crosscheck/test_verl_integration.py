"""zoo.integrations.verl against our own trainer, on the same tensors: values and gradients.

verl side: verl's own data path (DataProto -> TensorDict -> left_right_2_no_padding, as its trainer feeds
the actor), the actor extension `zoo_ppo_loss` (verl's `ppo_loss` with entropy, uid, ref_log_prob and
token_level_scores handed over) and the policy loss `zoo_<preset>` taken from verl's registry.
Our side: `zoo.update.UpdatePhase.optimizer_step`, the trainer's real optimizer step, on a stand-in model
whose log-probs and entropies are the parameters. One micro-batch, one rank, a later optimizer step
(π_θ ≠ π_old, so clips, dual clips and |log r| penalties act).

Runs only in its own environment (verl pins an older transformers): `bash scripts/crosscheck_verl.sh`.
In the main environment (no verl) the whole module skips with that reason.
"""
from __future__ import annotations

import contextlib
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch.testing import assert_close

from verl_env import import_verl  # noqa: E402  (tests/crosscheck is on sys.path)

_verl, core_algos, tu, _padding = import_verl("verl", "verl.trainer.ppo.core_algos", "verl.utils.tensordict_utils",
                                              "verl.workers.utils.padding")
DataProto, left_right_2_no_padding = _verl.DataProto, _padding.left_right_2_no_padding

from zoo import ops  # noqa: E402
from zoo.config import config_from_dict  # noqa: E402
from zoo.integrations import verl as zv  # noqa: E402
from zoo.objectives import build_strategies, get_base  # noqa: E402
from zoo.strategy import Reducer  # noqa: E402
from zoo.update import UpdatePhase  # noqa: E402

SEED, STEP, G, NG, T, P = 3, 7, 4, 3, 12, 5
REQUIRED = ["top20", "entropy_adv", "eapo", "clip_cov", "kl_cov", "ce_gppo", "archer"]
_ALL = zv.build_losses()
SUPPORTED = sorted(n[len(zv.PREFIX):] for n, f in _ALL.items() if isinstance(f, zv.ZooPolicyLoss))
REFUSED = sorted(n for n, f in _ALL.items() if not isinstance(f, zv.ZooPolicyLoss))
RESULTS: dict[str, tuple[float, float]] = {}


def make_batch(seed: int):
    g = torch.Generator().manual_seed(seed)
    B = G * NG
    lengths = torch.randint(2, T + 1, (B,), generator=g)
    mask = torch.arange(T)[None] < lengths[:, None]
    m = mask.float()
    old = -torch.rand(B, T, generator=g) * 4 * m
    logp = (old + (torch.rand(B, T, generator=g) - 0.5) * 0.8) * m     # ratios beyond 1 ± 0.28 and past c
    ent = torch.rand(B, T, generator=g) * 2 * m
    ent[0, :3] = torch.tensor([0.0, 1e-3, 1e-3])                       # ties and near-zero entropies
    ref = (old + (torch.rand(B, T, generator=g) - 0.5) * 0.4) * m
    rewards = (torch.rand(B, generator=g) > 0.5).float()
    rewards[::G], rewards[1::G] = 1.0, 0.0                              # every group has signal
    gids = torch.arange(B) // G
    A = ops.grpo_advantages(rewards, gids)[:, None] * m
    return SimpleNamespace(B=B, mask=mask, old=old, logp=logp, ent=ent, ref=ref, rewards=rewards, gids=gids, A=A)


# -- ours: the trainer's optimizer step on a stand-in model ------------------------------------------
class _Params(torch.nn.Module):
    def __init__(self, d):
        super().__init__()
        self.logp = torch.nn.Parameter(d.logp.clone())
        self.ent = torch.nn.Parameter(d.ent.clone())


class _Opt:
    def __init__(self, model):
        self.model, self.grads = model, None

    def zero_grad(self, set_to_none=True):
        self.model.zero_grad(set_to_none=set_to_none)

    def step(self):
        self.grads = (self.model.logp.grad.clone(), self.model.ent.grad.clone() if self.model.ent.grad is not None
                      else torch.zeros_like(self.model.ent))


class _Trainer(UpdatePhase):
    def __init__(self, preset: str, d):
        self.cfg = config_from_dict({"algorithm": {"preset": preset},
                                     "rollout": {"group_size": G, "prompts_per_step": NG, "max_new_tokens": T},
                                     "train": {"grad_clip": 0.0, "seed": SEED, "sparse_backward": False}})
        self.strategies = build_strategies(self.cfg.algorithm)
        self.base, self.reduce, self.device, self.world = get_base(self.cfg.algorithm.base), Reducer(), "cpu", 1
        self.model = _Params(d)
        self.opt, self.sched = _Opt(self.model), SimpleNamespace(step=lambda: None)
        self.opt_steps, self.step_idx, self.bad_steps = STEP, 0, 0
        self.print = print

    def grad_sync(self, sync):
        return contextlib.nullcontext()

    def _forward(self, model, b, idx):                                 # the no-grad pre-pass at the current policy
        return model.logp.detach()[idx], model.ent.detach()[idx]

    def _train_forward(self, b, rows, grad_rows=None):
        ent = self.model.ent[rows] if any(s.needs_entropy_grad for s in self.strategies) else \
            self.model.ent.detach()[rows]
        return self.model.logp[rows], ent


def ours(preset: str, d):
    tr = _Trainer(preset, d)
    b = SimpleNamespace(response_mask=d.mask, group_ids=d.gids, temperatures=torch.ones(d.B, T))
    ref = d.ref if (tr.cfg.algorithm.kl_coef > 0 or any(s.needs_reference for s in tr.strategies)) else None
    sc = SimpleNamespace(batch=b, old_logp=d.old, entropy=d.ent, advantages=d.A, rewards=d.rewards, ref_logp=ref)
    m = tr.optimizer_step(sc, list(range(d.B)), first=False)
    return torch.tensor(m["loss/total"], dtype=torch.float64), tr.opt.grads


# -- verl: its data path, the actor extension, the registry ------------------------------------------
def verl_data(d):
    g = torch.Generator().manual_seed(99)
    plen = torch.randint(1, P + 1, (d.B,), generator=g)
    pmask = torch.arange(P)[None] >= (P - plen)[:, None]                  # left-padded prompts
    prompts = torch.randint(3, 50, (d.B, P), generator=g) * pmask
    responses = torch.randint(3, 50, (d.B, T), generator=g) * d.mask
    attn = torch.cat([pmask, d.mask], 1).long()
    pos = (attn.cumsum(-1) - 1).clamp(min=0)
    scores = torch.zeros(d.B, T)
    scores[torch.arange(d.B), d.mask.sum(-1) - 1] = d.rewards           # the reward on the last valid token
    proto = DataProto.from_dict(
        tensors={"prompts": prompts, "responses": responses, "input_ids": torch.cat([prompts, responses], 1),
                 "attention_mask": attn, "position_ids": pos, "response_mask": d.mask.long(),
                 "old_log_probs": d.old, "advantages": d.A, "ref_log_prob": d.ref, "token_level_scores": scores},
        non_tensors={"uid": np.array([f"prompt-{int(i) * 7919}" for i in d.gids], dtype=object)})
    td = left_right_2_no_padding(proto.to_tensordict())
    tu.assign_non_tensor(td, batch_num_tokens=int(d.mask.sum()), dp_size=1, global_batch_size=d.B)
    return td, plen


def flat(x: torch.Tensor, d, plen) -> torch.Tensor:
    """(B, T) response values -> the model's unpadded per-sequence output (position p-1+j predicts token j)."""
    parts = []
    for i in range(d.B):
        r = int(d.mask[i].sum())
        parts += [x.new_zeros(int(plen[i]) - 1), x[i, :r], x.new_zeros(1)]
    return torch.cat(parts)


def actor_config(preset: str):
    from verl.workers.config import FSDPActorConfig

    return FSDPActorConfig(strategy="fsdp", ppo_mini_batch_size=G * NG, ppo_micro_batch_size_per_gpu=G * NG,
                           use_dynamic_bsz=False, loss_agg_mode="token-mean", entropy_coeff=0.0,
                           calculate_entropy=True, use_kl_loss=False, rollout_n=1,
                           policy_loss={"loss_mode": f"zoo_{preset}"})


def theirs(preset: str, d):
    zv.register([preset], seed=SEED)[f"zoo_{preset}"].step = STEP        # a fresh loss object, our (seed, step)
    assert core_algos.get_policy_loss_fn(f"zoo_{preset}").step == STEP
    td, plen = verl_data(d)
    lp = torch.nn.Parameter(d.logp.clone())
    ent = torch.nn.Parameter(d.ent.clone())
    loss, metrics = zv.zoo_ppo_loss(actor_config(preset), {"log_probs": flat(lp, d, plen),
                                                           "entropy": flat(ent, d, plen)}, td)
    loss.backward()
    return loss.detach().double(), (lp.grad, ent.grad if ent.grad is not None else torch.zeros_like(ent)), metrics


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max())


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("preset", SUPPORTED)
def test_zoo_loss_in_verl_equals_ours(preset, seed):
    d = make_batch(seed)
    mine_loss, mine_g = ours(preset, d)
    ref_loss, ref_g, metrics = theirs(preset, d)
    m = d.mask
    diffs = (max_diff(mine_loss, ref_loss), max(max_diff(mine_g[0] * m, ref_g[0] * m), max_diff(mine_g[1] * m, ref_g[1] * m)))
    RESULTS[f"{preset}/seed{seed}"] = diffs
    print(f"RESULT zoo_{preset} seed {seed}: |Δloss| {diffs[0]:.2e}  |Δgrad| {diffs[1]:.2e}  loss {float(ref_loss):+.6f}")
    assert_close(ref_loss, mine_loss, atol=1e-6, rtol=1e-5)
    assert_close(ref_g[0] * m, mine_g[0] * m, atol=1e-6, rtol=1e-5)
    assert_close(ref_g[1] * m, mine_g[1] * m, atol=1e-6, rtol=1e-5)
    assert float(mine_g[0].abs().sum()) > 0                               # a real gradient was compared
    assert "actor/pg_clipfrac" in metrics


def test_required_presets_are_supported():
    assert not set(REQUIRED) - set(SUPPORTED)


@pytest.mark.parametrize("name", REFUSED)
def test_refused_presets_raise_with_the_reason(name):
    zv.register([name[len(zv.PREFIX):]])
    with pytest.raises(ValueError, match="cannot honour"):
        core_algos.get_policy_loss_fn(name)(None, None, None, None)


def test_no_handover_is_a_clear_error():
    d = make_batch(0)
    fn = zv.register(["top20"])["zoo_top20"]
    with pytest.raises(RuntimeError, match="calculate_entropy"):
        fn(d.old, d.logp, d.A, d.mask, "token-mean", None)


@pytest.mark.parametrize("preset", ["grpo", "dapo", "dr_grpo"])
def test_micro_batches_add_up_to_the_mini_batch(preset):
    """With verl's global denominators the micro-batch losses sum to the mini-batch's (no statistics)."""
    d = make_batch(2)
    fn = zv.register([preset])[f"zoo_{preset}"]
    info = {"dp_size": 1, "batch_num_tokens": int(d.mask.sum()), "global_batch_size": d.B, "loss_scale_factor": None}
    cfg = SimpleNamespace(global_batch_info=info)
    whole, _ = fn(d.old, d.logp, d.A, d.mask, "token-mean", cfg)
    h = d.B // 2
    parts = [fn(d.old[s], d.logp[s], d.A[s], d.mask[s], "token-mean", cfg)[0] for s in (slice(0, h), slice(h, None))]
    assert_close(parts[0] + parts[1], whole, atol=1e-6, rtol=1e-6)


def test_install_swaps_the_actor_loss_for_zoo_modes_only():
    try:
        from verl.workers import engine_workers
    except Exception as e:  # noqa: BLE001
        pytest.skip(f"verl.workers.engine_workers not importable here ({type(e).__name__}: {e})")
    original = engine_workers.ppo_loss
    try:
        zv.install()
        assert engine_workers.ppo_loss is zv.zoo_ppo_loss
        assert "zoo_top20" in core_algos.POLICY_LOSS_REGISTRY and "vanilla" in core_algos.POLICY_LOSS_REGISTRY
    finally:
        engine_workers.ppo_loss = original


def test_zz_report():
    """Prints the table of max |Δ| (run with -s to see it)."""
    for k, (dl, dg) in sorted(RESULTS.items()):
        print(f"{k:28s} loss {dl:.1e}  grad {dg:.1e}")
