"""Full RL step throughput: this library's Trainer vs TRL's GRPOTrainer on the same model and work.

    python benchmarks/bench_step.py                       # tiny model, CPU, fp32, 16 prompts x 8, 32 tokens
    python benchmarks/bench_step.py --steps 8 --length 24
    python benchmarks/bench_step.py --device cuda --dtype bf16 --model qwen-0.5b-random --length 128

One step = sample prompts x group completions, reward them, (score), one optimizer update.
Both sides: the same weights (one saved directory), the same prompts (countdown, in order), the
same group size, exactly --length completion tokens per sample (our `rollout.ignore_eos`; TRL's
`min_new_tokens` = max_new_tokens), T = 1 with no top-k/top-p, AdamW (betas 0.9/0.999, eps 1e-8,
no weight decay), constant lr, no warmup, grad clip 1.0, one optimizer step per rollout batch,
no reference model (KL 0), no gradient checkpointing, fp32 on CPU. TRL is set up at its fastest:
num_iterations = 1 (no separate old-log-prob forward), beta = 0, bf16 off on CPU, no logging
overhead (report_to none, completions not logged). Ours reuses the sampler's recorded log-probs
as pi_old (`train.old_logp: rollout`) where the trainer has that key (--old-logp rescore to compare).

After --warmup step(s) per side, --steps steps of each are timed in the same process; prints a
markdown table: completion tokens/s, the ratio ours/TRL against the 1.3x target, and where the
time goes (generation, reward, scoring forward, training forward, backward, optimizer, other).
TRL is optional (the `dev` extra); without it its column is skipped with a note.

--model: "" (default) a fresh random tiny model (the `zoo pretrain` architecture, 0.5M params),
a local HF causal-LM directory, or `qwen-0.5b-random` (Qwen2.5-0.5B's shapes, random weights:
speed does not need trained weights; `--layers N` shrinks it for a CPU dry run).
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import os
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

PHASES = ["generation", "reward", "scoring forward (no grad)", "training forward", "backward",
          "optimizer (clip + step)", "other"]
QWEN_05B = dict(hidden_size=896, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
                intermediate_size=4864, vocab_size=151936, tie_word_embeddings=True, max_position_embeddings=32768,
                rope_theta=1_000_000.0, rms_norm_eps=1e-6)


# ----------------------------------------------------------------------------------------------
# Timers
# ----------------------------------------------------------------------------------------------
class Timers:
    """Seconds per phase, added to whichever side (ours / TRL) is running (`active`); CUDA is
    synchronised at every boundary so GPU timings are honest."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.sides: dict[str, dict[str, float]] = {"ours": defaultdict(float), "trl": defaultdict(float)}
        self.active: str | None = None
        self._opt_t0 = 0.0

    def _sync(self):
        if self.cuda:
            torch.cuda.synchronize()

    def add(self, phase: str, seconds: float) -> None:
        if self.active is not None:
            self.sides[self.active][phase] += seconds

    def wrap(self, fn, phase, phase_no_grad=None):
        def timed(*a, **k):
            name = phase if (phase_no_grad is None or torch.is_grad_enabled()) else phase_no_grad
            self._sync()
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                self._sync()
                self.add(name, time.perf_counter() - t0)
        timed.__wrapped__ = fn
        return timed

    def reset(self, side: str) -> None:
        self.sides[side].clear()

    # every optimizer's step, through torch's global hooks (no method is replaced)
    def _opt_pre(self, opt, args, kwargs):
        self._sync()
        self._opt_t0 = time.perf_counter()

    def _opt_post(self, opt, args, kwargs):
        self._sync()
        self.add("optimizer (clip + step)", time.perf_counter() - self._opt_t0)


@contextmanager
def patched(obj, name, new):
    old = getattr(obj, name)
    setattr(obj, name, new)
    try:
        yield
    finally:
        setattr(obj, name, old)


@contextmanager
def common_patches(timers: Timers):
    """Backward, grad clipping and optimizer steps are timed the same way for both trainers."""
    from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook

    h1 = register_optimizer_step_pre_hook(timers._opt_pre)
    h2 = register_optimizer_step_post_hook(timers._opt_post)
    try:
        with patched(torch.Tensor, "backward", timers.wrap(torch.Tensor.backward, "backward")), \
                patched(torch.nn.utils, "clip_grad_norm_", timers.wrap(torch.nn.utils.clip_grad_norm_,
                                                                       "optimizer (clip + step)")):
            yield
    finally:
        h1.remove()
        h2.remove()


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


# ----------------------------------------------------------------------------------------------
# Model
# ----------------------------------------------------------------------------------------------
def build_model_dir(spec: str, layers: int, dtype: torch.dtype, cache: Path) -> Path:
    from zoo.model import build_char_tokenizer, build_tiny_model, save_policy

    if spec and spec != "qwen-0.5b-random":
        p = Path(spec)
        if not (p / "config.json").exists():
            raise SystemExit(f"--model {spec}: not a local HF model directory (no config.json)")
        return p
    tok = build_char_tokenizer()
    if not spec:
        from zoo.config import PretrainConfig

        pc = PretrainConfig()
        out = cache / f"tiny-random-l{layers or pc.layers}"
        if not (out / "config.json").exists():
            model = build_tiny_model(tok, layers or pc.layers, pc.hidden, pc.heads, pc.intermediate, seed=0)
            save_policy(model, tok, out)
        return out
    from transformers import Qwen2Config, Qwen2ForCausalLM

    shape = dict(QWEN_05B, num_hidden_layers=layers or QWEN_05B["num_hidden_layers"])
    out = cache / f"qwen-0.5b-random-l{shape['num_hidden_layers']}-{str(dtype).split('.')[-1]}"
    if not (out / "config.json").exists():
        torch.manual_seed(0)
        cfg = Qwen2Config(**shape, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                          pad_token_id=tok.pad_token_id)
        model = Qwen2ForCausalLM(cfg).to(dtype)
        save_policy(model, tok, out)
        del model
    return out


def _config_fields(cls) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


# ----------------------------------------------------------------------------------------------
# Ours
# ----------------------------------------------------------------------------------------------
class _FixedLengthEngine:
    """Used only if the trainer ignores rollout.ignore_eos: forces stop_at_eos=False."""

    def __init__(self, engine):
        self.engine = engine

    def sample(self, *a, **k):
        k["stop_at_eos"] = False
        return self.engine.sample(*a, **k)

    def sync_weights(self, model):
        self.engine.sync_weights(model)


class Ours:
    def __init__(self, args, model_dir: Path, device: torch.device, work: Path, timers: Timers):
        import zoo.trainer as T
        from zoo.config import RolloutConfig, TrainConfig, config_from_dict

        self.args, self.device, self.timers, self.notes = args, device, timers, []
        rollout = {"group_size": args.group, "prompts_per_step": args.prompts, "max_new_tokens": args.length,
                   "temperature": 1.0, "top_p": 1.0, "top_k": 0, "ignore_eos": True}
        train = {"steps": args.warmup + args.steps + 1, "lr": args.lr, "lr_schedule": "constant", "warmup_steps": 0,
                 "beta1": 0.9, "beta2": 0.999, "weight_decay": 0.0, "grad_clip": 1.0, "minibatches": 1, "epochs": 1,
                 "micro_batch_size": args.micro_batch, "threads": args.threads, "seed": 0, "old_logp": args.old_logp}
        for sect, keys, cls in (("rollout", rollout, RolloutConfig), ("train", train, TrainConfig)):
            for k in [k for k in keys if k not in _config_fields(cls)]:
                self.notes.append(f"config key {sect}.{k} missing: not set")
                del keys[k]
        raw = {"model": {"name_or_path": str(model_dir), "dtype": args.dtype_name, "device": str(device)},
               "task": {"name": "countdown", "train_size": 4000, "eval_size": 16},
               "algorithm": {"preset": "grpo"}, "rollout": rollout, "train": train,
               "eval": {"every": 0, "n": 16, "at_start": False, "k": 0},
               "checkpoint": {"every": 0}, "log": {"progress": False, "tensorboard": False}}
        self.cfg = config_from_dict(raw)
        self.tr = tr = T.Trainer(self.cfg, out_dir=work / "ours", log=lambda *a, **k: None)
        if device.type == "cpu":
            torch.set_num_threads(args.threads)
        if args.compile and hasattr(tr.engine, "compile"):
            tr.engine.compile = True
        tr.engine.sample = timers.wrap(tr.engine.sample, "generation")
        tr.reward_fn = timers.wrap(tr.reward_fn, "reward")
        self.T, self.rle = T, getattr(T, "response_logp_entropy", None)
        self.metrics, self.times, self.n = [], [], 0

    @contextmanager
    def patches(self):
        if self.rle is None:
            self.notes.append("zoo.trainer.response_logp_entropy not found: forward phases not split")
            yield
            return
        import importlib

        timed = self.timers.wrap(self.rle, "training forward", "scoring forward (no grad)")
        try:  # the training forward lives in zoo.batches (the module DDP wraps), scoring in zoo.trainer
            batches = importlib.import_module("zoo.batches")
        except ImportError:
            batches = None
        if batches is None or not hasattr(batches, "response_logp_entropy"):
            with patched(self.T, "response_logp_entropy", timed):
                yield
            return
        with patched(self.T, "response_logp_entropy", timed), patched(batches, "response_logp_entropy", timed):
            yield

    def step(self, timed: bool) -> None:
        self.timers.active = "ours"
        _sync(self.device)
        t0 = time.perf_counter()
        m = self.tr.step()
        _sync(self.device)
        dt = time.perf_counter() - t0
        self.timers.active = None
        self.n += 1
        if self.n == 1 and m.get("rollout/response_length", self.args.length) < self.args.length - 1e-6:
            self.notes.append("trainer ignored rollout.ignore_eos: forced stop_at_eos=False through the engine")
            self.tr.engine = _FixedLengthEngine(self.tr.engine)
        if timed:
            self.metrics.append(m)
            self.times.append(dt)

    def result(self) -> dict:
        a = self.args
        tokens = [m.get("rollout/response_length", 0) * a.prompts * a.group for m in self.metrics]
        if any(abs(t - a.prompts * a.group * a.length) > 0.5 for t in tokens):
            self.notes.append(f"tokens per step {min(tokens):.0f}..{max(tokens):.0f}, expected "
                              f"{a.prompts * a.group * a.length}")
        perf = {k: sum(m.get(k, 0.0) for m in self.metrics) / len(self.metrics) for k in
                ("perf/rollout_seconds", "perf/reward_seconds", "perf/train_seconds", "perf/step_seconds")}
        old = getattr(self.cfg.train, "old_logp", "rescore (key missing)")
        if old == "rollout" and self.timers.sides["ours"].get("scoring forward (no grad)", 0) > 0:
            self.notes.append("train.old_logp=rollout set but a scoring forward still ran")
        return {"name": "ours (zoo Trainer)", "times": self.times, "tokens": tokens,
                "phases": dict(self.timers.sides["ours"]), "perf": perf, "notes": self.notes, "old_logp": old,
                "attn": getattr(self.tr.model.config, "_attn_implementation", "?")}


# ----------------------------------------------------------------------------------------------
# TRL
# ----------------------------------------------------------------------------------------------
class TRLSide:
    def __init__(self, args, model_dir: Path, device: torch.device, work: Path, timers: Timers):
        import datasets
        import transformers
        from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast
        from trl import GRPOConfig, GRPOTrainer

        from rewards import get_reward
        from zoo.data import get_task

        transformers.logging.set_verbosity_error()
        self.args, self.device, self.timers, self.notes = args, device, timers, []
        n_steps = args.warmup + args.steps
        problems = get_task("countdown").problems("train", args.prompts * (n_steps + 1), 0)
        ds = datasets.Dataset.from_dict({"prompt": [p.prompt for p in problems],
                                         "answer": [p.answer for p in problems]})
        tok = PreTrainedTokenizerFast.from_pretrained(model_dir)   # AutoTokenizer may drop the spaces
        tok.padding_side = "left"
        if tok.bos_token_id is not None and tok(problems[0].prompt)["input_ids"][:1] != [tok.bos_token_id]:
            ds = ds.map(lambda r: {"prompt": tok.bos_token + r["prompt"]})
            self.notes.append("BOS added to the prompt text (the tokenizer adds none)")
        self.model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=args.torch_dtype)
        reward = get_reward("countdown")

        def countdown_reward(prompts, completions, answer, **kw):
            return [float(x) for x in reward(completions, answer)]

        cfg = GRPOConfig(
            output_dir=str(work / "trl"), report_to="none", logging_steps=10_000, save_strategy="no",
            disable_tqdm=True, max_steps=n_steps, per_device_train_batch_size=args.prompts * args.group,
            num_generations=args.group, gradient_accumulation_steps=1, steps_per_generation=1, num_iterations=1,
            beta=0.0, max_completion_length=args.length, temperature=1.0, top_p=1.0, top_k=0,
            generation_kwargs={"min_new_tokens": args.length, "top_k": 0, "top_p": 1.0},
            learning_rate=args.lr, lr_scheduler_type="constant", warmup_steps=0, adam_beta1=0.9, adam_beta2=0.999,
            adam_epsilon=1e-8, weight_decay=0.0, max_grad_norm=1.0, optim="adamw_torch",
            gradient_checkpointing=False, bf16=args.dtype_name == "bfloat16", fp16=False,
            use_cpu=device.type == "cpu", loss_type="grpo", epsilon=0.2, scale_rewards="group",
            mask_truncated_completions=False, shuffle_dataset=False, log_completions=False, seed=0,
            dataloader_num_workers=0, remove_unused_columns=False,
        )
        self.trainer = tr = GRPOTrainer(model=self.model, reward_funcs=[countdown_reward], args=cfg,
                                        train_dataset=ds, processing_class=tok)
        self.lengths: list[int] = []
        gen = tr._generate_single_turn

        def gen_and_count(*a, **k):
            out = gen(*a, **k)
            self.lengths.extend(len(c) for c in out[0])
            return out

        tr._generate_single_turn = timers.wrap(gen_and_count, "generation")
        tr._calculate_rewards = timers.wrap(tr._calculate_rewards, "reward")
        tr._get_per_token_logps_and_entropies = timers.wrap(tr._get_per_token_logps_and_entropies,
                                                            "training forward", "scoring forward (no grad)")
        self.times: list[float] = []

    def run(self, between) -> None:
        """TRL's own loop; after each of its steps `between(i)` runs (our step), outside TRL's clock.
        A TRL step is timed from the end of the previous one (data loading and logging included)."""
        from transformers import TrainerCallback

        side, mark = self, [0.0]

        class Clock(TrainerCallback):
            def on_step_end(self, a, state, control, **kw):
                _sync(side.device)
                now = time.perf_counter()
                side.timers.active = None
                i = state.global_step
                if i > side.args.warmup:
                    side.times.append(now - mark[0])
                if i == side.args.warmup:
                    side.timers.reset("trl")
                    side.lengths.clear()
                between(i)
                _sync(side.device)
                side.timers.active = "trl"
                mark[0] = time.perf_counter()

        self.trainer.add_callback(Clock())
        self.timers.active = "trl"
        try:
            with contextlib.redirect_stdout(io.StringIO()):   # its end-of-training summary line
                self.trainer.train()
        finally:
            self.timers.active = None

    def result(self) -> dict:
        a = self.args
        if self.lengths and (min(self.lengths) != a.length or max(self.lengths) != a.length):
            self.notes.append(f"TRL completion lengths {min(self.lengths)}..{max(self.lengths)} (wanted {a.length})")
        n = len(self.times)
        per_step = sum(self.lengths) / n if n else 0.0
        return {"name": f"TRL {__import__('trl').__version__} GRPOTrainer", "times": self.times,
                "tokens": [per_step] * n, "phases": dict(self.timers.sides["trl"]), "notes": self.notes,
                "attn": getattr(self.model.config, "_attn_implementation", "?")}


# ----------------------------------------------------------------------------------------------
def _median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def report(args, device, cols: list[dict], trl_note: str) -> tuple[str, float | None]:
    ours = cols[0]
    lines = [f"### RL step throughput: {args.prompts} prompts x {args.group} samples, exactly {args.length} "
             f"completion tokens each, {args.steps} timed steps per trainer after {args.warmup} warm-up",
             "", f"device {device}, dtype {args.dtype_name}, torch threads {torch.get_num_threads()}, model "
             + (args.model or "tiny random (the zoo pretrain shape)")
             + (f" ({args.layers} layers)" if args.layers else "")
             + f", attention {ours['attn']}, ours: train.old_logp={ours['old_logp']}"
             + (", compiled decode step" if args.compile else "")
             + (", prompt sharing OFF" if args.no_share_prompts else ", prompts shared per group")
             + (", steps interleaved (one TRL step, then one of ours)" if len(cols) > 1 else ""), ""]
    lines += ["| per step | " + " | ".join(c["name"] for c in cols) + " |", "|---" * (len(cols) + 1) + "|"]
    tps = []
    for c in cols:
        c["tps"] = _median(c["tokens"]) / _median(c["times"])
        tps.append(c["tps"])
    lines.append("| completion tokens/s (median step) | " + " | ".join(f"{t:,.0f}" for t in tps) + " |")
    lines.append("| seconds (median / mean) | " + " | ".join(
        f"{_median(c['times']):.3f} / {sum(c['times']) / len(c['times']):.3f}" for c in cols) + " |")
    for ph in PHASES:
        vals = []
        for c in cols:
            total = sum(c["times"])
            sec = total - sum(c["phases"].values()) if ph == "other" else c["phases"].get(ph, 0.0)
            vals.append(f"{sec / len(c['times']):.3f} ({100 * sec / total:.0f}%)")
        lines.append(f"| {ph} | " + " | ".join(vals) + " |")
    lines.append("")
    ratio = None
    if len(cols) > 1:
        ratio = tps[0] / tps[1]
        lines.append(f"**ratio ours/TRL: {ratio:.2f}x** (target >= 1.3x): **{'PASS' if ratio >= 1.3 else 'FAIL'}**")
    else:
        lines.append(f"TRL column skipped: {trl_note}")
    p = ours["perf"]
    lines += ["", f"ours, the trainer's perf/* (mean s/step): rollout {p['perf/rollout_seconds']:.3f} (generation + "
              f"batching), reward {p['perf/reward_seconds']:.3f}, train {p['perf/train_seconds']:.3f}, "
              f"step {p['perf/step_seconds']:.3f}"]
    for c in cols:
        lines += [f"- note ({c['name']}): {n}" for n in c["notes"]]
    return "\n".join(lines), ratio


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="", help='"" (tiny random), a local HF dir, or qwen-0.5b-random')
    ap.add_argument("--layers", type=int, default=0, help="override the number of layers of a built model")
    ap.add_argument("--device", default="cpu", help="cpu | cuda | auto")
    ap.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--group", type=int, default=8)
    ap.add_argument("--length", type=int, default=32, help="completion tokens per sample (fixed)")
    ap.add_argument("--steps", type=int, default=10, help="timed steps per trainer")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--micro-batch", type=int, default=0, help="our train.micro_batch_size (0 = whole batch)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (CPU)")
    ap.add_argument("--old-logp", default="rollout", choices=["rollout", "rescore"])
    ap.add_argument("--compile", action="store_true", help="torch.compile our decode step")
    ap.add_argument("--no-share-prompts", action="store_true",
                    help="ours: run every row's prompt (no per-group prompt sharing in prefill and training forward)")
    ap.add_argument("--no-trl", action="store_true")
    ap.add_argument("--cache", default="", help="where built models are saved (default: a temp dir)")
    ap.add_argument("--out", default="", help="also write the table (.md) and numbers (.json) with this path stem")
    args = ap.parse_args(argv)
    if args.warmup < 1 or args.steps < 1:
        ap.error("--warmup and --steps must be >= 1")
    from zoo.model import resolve_device

    device = resolve_device(args.device)
    torch.set_num_threads(args.threads)
    args.dtype_name = {"fp32": "float32", "bf16": "bfloat16"}[args.dtype]
    args.torch_dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[args.dtype]
    trl_note = "--no-trl" if args.no_trl else ""
    if not args.no_trl:
        try:
            import datasets  # noqa: F401
            import trl  # noqa: F401
        except Exception as e:  # noqa: BLE001 - absent on the GPU image
            trl_note = f"trl/datasets not importable ({type(e).__name__}: {e})"
    if args.no_share_prompts:
        import zoo.rollout
        import zoo.sampler

        # looked up by the sampler's prefill (zoo.sampler) and by the training forward (zoo.rollout)
        zoo.sampler._shared_prompts = zoo.rollout._shared_prompts = lambda *a, **k: None
    timers = Timers(device)
    with tempfile.TemporaryDirectory(prefix="bench_step_") as tmp:
        work = Path(tmp)
        cache = Path(args.cache) if args.cache else work / "models"
        cache.mkdir(parents=True, exist_ok=True)
        model_dir = build_model_dir(args.model, args.layers, args.torch_dtype, cache)
        ours = Ours(args, model_dir, device, work, timers)
        trl = None
        if not trl_note:
            torch.manual_seed(0)
            trl = TRLSide(args, model_dir, device, work, timers)
        with common_patches(timers), ours.patches():
            if trl is not None:
                def between(i):
                    ours.step(timed=i > args.warmup)
                    if i == args.warmup:
                        timers.reset("ours")
                trl.run(between)
            else:
                for i in range(1, args.warmup + args.steps + 1):
                    ours.step(timed=i > args.warmup)
                    if i == args.warmup:
                        timers.reset("ours")
        cols = [ours.result()] + ([trl.result()] if trl is not None else [])
    text, ratio = report(args, device, cols, trl_note)
    print(text)
    res = {"columns": cols, "trl_note": trl_note, "ratio": ratio,
           "args": {k: v for k, v in vars(args).items() if k != "torch_dtype"}}
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out + ".md").write_text(text + "\n")
        Path(args.out + ".json").write_text(json.dumps(res, indent=1, default=str))
    return res


if __name__ == "__main__":
    main()
