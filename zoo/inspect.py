"""`zoo inspect`: sample completions and render every token coloured by its entropy.

    zoo inspect --model runs/quickstart/final --task countdown --n 8 --out inspect.html
    zoo inspect --model runs/quickstart/final --prompt "Compute 6+2*8." --percentile 80

One static HTML page (inline CSS, no scripts, no network): each completion token is one
`<span class="tok">` whose background encodes its entropy H = -Σ p log p (nats, untempered, from
a teacher-forced pass over the sampled text); tokens at or above the given percentile of the
sample's entropies are the forking tokens (80/20 paper), outlined, with the top-5 next-token
alternatives and their probabilities on hover. A summary gives the sample's entropy statistics
and its most frequent forking tokens.
"""
from __future__ import annotations

import html
import json
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch

TOP_K = 5


@dataclass
class TokenInfo:
    text: str
    entropy: float
    top: list[tuple[str, float]]      # (token text, probability), best first
    fork: bool = False


@dataclass
class Sample:
    prompt: str
    completion: str
    tokens: list[TokenInfo]
    reward: float | None = None
    answer: str | None = None
    meta: dict = field(default_factory=dict)


def _tok_text(tokenizer, tid: int) -> str:
    if tid == tokenizer.eos_token_id:
        return "⟨eos⟩"
    s = tokenizer.decode([tid], skip_special_tokens=False)
    return s if s != "" else tokenizer.convert_ids_to_tokens(tid)


@torch.no_grad()
def analyse(model, tokenizer, prompts: list[str], *, max_new_tokens: int = 64, temperature: float = 1.0,
            seed: int = 0) -> list[Sample]:
    """Sample one completion per prompt, then score it teacher-forced: per-token entropy and top-k."""
    from zoo.model import encode_prompts
    from zoo.ops import entropy_from_logits
    from zoo.rollout import decode_responses, generate

    dev = next(model.parameters()).device
    model.eval()
    pids, pmask = encode_prompts(tokenizer, prompts)
    g = torch.Generator().manual_seed(seed)
    stops = tuple(dict.fromkeys(x for p in prompts for x in getattr(p, "stop", ())))   # a format's stop strings
    out = generate(model, tokenizer, pids, pmask, max_new_tokens=max_new_tokens, temperature=temperature, generator=g,
                   stop_at_eos=stops or True)
    resp, rmask = out["response_ids"], out["response_mask"]                      # (B, T)
    texts = decode_responses(tokenizer, resp, rmask)
    ids = torch.cat([pids, resp], 1).to(dev)                                     # (B, P+T)
    am = torch.cat([pmask, rmask], 1).to(dev).long()
    pos = (am.cumsum(-1) - 1).clamp(min=0)
    logits = model(input_ids=ids, attention_mask=am, position_ids=pos).logits.float()  # (B, P+T, V)
    P = pids.shape[1]
    lg = logits[:, P - 1:-1, :]                                                  # (B, T, V) predicts response tokens
    H = entropy_from_logits(lg).cpu()                                            # (B, T)
    probs = torch.softmax(lg, -1)
    tp, ti = probs.topk(min(TOP_K, probs.shape[-1]), dim=-1)                      # (B, T, k)
    tp, ti = tp.cpu(), ti.cpu()
    samples = []
    for b, prompt in enumerate(prompts):
        toks = []
        for t in range(resp.shape[1]):
            if not rmask[b, t]:
                break
            top = [(_tok_text(tokenizer, int(i)), float(p)) for p, i in zip(tp[b, t], ti[b, t])]
            toks.append(TokenInfo(_tok_text(tokenizer, int(resp[b, t])), float(H[b, t]), top))
        from zoo.prompts import prompt_text

        samples.append(Sample(prompt_text(tokenizer, prompt), texts[b], toks))   # the text the model saw
    return samples


def mark_forks(samples: list[Sample], percentile: float) -> float:
    """Mark tokens with H >= the percentile of all the sample's token entropies (ties kept; H > 0)."""
    import numpy as np

    if not 0 < percentile < 100:
        raise ValueError(f"--percentile must be in (0, 100), got {percentile}")
    ents = [t.entropy for s in samples for t in s.tokens]
    if not ents:
        return float("nan")
    thr = float(np.percentile(np.asarray(ents), percentile))
    for s in samples:
        for t in s.tokens:
            t.fork = t.entropy >= thr and t.entropy > 1e-6
    return thr


def entropy_summary(samples: list[Sample], threshold: float) -> dict:
    import numpy as np

    v = np.asarray([t.entropy for s in samples for t in s.tokens], dtype=np.float64)
    if v.size == 0:
        return {"n_tokens": 0}
    forks = Counter(t.text for s in samples for t in s.tokens if t.fork)
    return {"n_samples": len(samples), "n_tokens": int(v.size), "mean": float(v.mean()),
            "p50": float(np.quantile(v, 0.5)), "p80": float(np.quantile(v, 0.8)), "p95": float(np.quantile(v, 0.95)),
            "max": float(v.max()), "share_below_0.01": float((v < 0.01).mean()), "threshold": threshold,
            "n_forking": int(sum(forks.values())), "top_forking_tokens": forks.most_common(12)}


def _colour(h: float, hmax: float) -> str:
    """White (H = 0) -> yellow -> red (H >= hmax), on a sqrt scale so small entropies stay visible."""
    x = 0.0 if hmax <= 0 else min(1.0, math.sqrt(max(h, 0.0) / hmax))
    if x < 0.5:                                   # white -> yellow
        r, g, b = 255, 255, int(255 * (1 - 2 * x))
    else:                                         # yellow -> red
        r, g, b = 255, int(255 * (1 - (x - 0.5) * 2 * 0.85)), 0
    return f"#{r:02x}{g:02x}{b:02x}"


def _show(s: str) -> str:
    """Visible text for a token: newline as ↵ (plus a line break), other text escaped."""
    return html.escape(s.replace("\n", "↵"), quote=False)


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px;color:#222;background:#fafafa}
h1{font-size:20px} h2{font-size:15px;margin:18px 0 6px}
.sample{background:#fff;border:1px solid #ddd;border-radius:6px;padding:10px 14px;margin:12px 0}
.prompt{color:#555;font-family:ui-monospace,Menlo,Consolas,monospace;white-space:pre-wrap}
.completion{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:16px;line-height:2.1;white-space:pre-wrap}
.tok{position:relative;padding:2px 0;border-radius:2px}
.tok.fork{outline:2px solid #7b1fa2;font-weight:bold;cursor:help}
.tok.fork:hover::after{content:attr(data-alt);position:absolute;left:0;top:1.9em;z-index:10;white-space:pre;
 background:#222;color:#fff;font-size:12px;line-height:1.35;padding:6px 8px;border-radius:4px;font-weight:normal}
.meta{font-size:12px;color:#666}
table{border-collapse:collapse;font-size:13px} td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
.legend span{display:inline-block;width:28px;height:14px;border:1px solid #ccc;vertical-align:middle}
"""


def render_html(samples: list[Sample], summary: dict, *, title: str = "zoo inspect", percentile: float = 80,
                model: str = "") -> str:
    ents = [t.entropy for s in samples for t in s.tokens]
    hmax = max([summary.get("p95", 0.0) or 0.0, summary.get("threshold", 0.0) or 0.0, 1e-6]) if ents else 1.0
    out = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
           f"<title>{html.escape(title)}</title>", f"<style>{CSS}</style>", "</head>", "<body>",
           f"<h1>{html.escape(title)}</h1>",
           f'<p class="meta">model: {html.escape(model)} &middot; entropy in nats (untempered) &middot; '
           f"forking tokens: H &ge; the {percentile:g}th percentile of this sample "
           f"({summary.get('threshold', float('nan')):.4f}), outlined; hover one for its top-{TOP_K} alternatives.</p>"]
    legend = "".join(f'<span style="background:{_colour(h, hmax)}" title="H = {h:.3f}"></span>'
                     for h in [hmax * (i / 8) ** 2 for i in range(9)])
    out.append(f'<p class="legend">H = 0 {legend} &ge; {hmax:.3f}</p>')
    out.append("<h2>Entropy statistics</h2><table><tr>" + "".join(
        f"<th>{k}</th>" for k in ("samples", "tokens", "mean", "p50", "p80", "p95", "max", "H&lt;0.01", "forking")) + "</tr><tr>")
    if summary.get("n_tokens"):
        vals = [summary["n_samples"], summary["n_tokens"], f"{summary['mean']:.4f}", f"{summary['p50']:.4f}",
                f"{summary['p80']:.4f}", f"{summary['p95']:.4f}", f"{summary['max']:.4f}",
                f"{100 * summary['share_below_0.01']:.1f}%", summary["n_forking"]]
    else:
        vals = [len(samples), 0] + ["-"] * 7
    out.append("".join(f"<td>{v}</td>" for v in vals) + "</tr></table>")
    if summary.get("top_forking_tokens"):
        out.append('<p class="meta">most frequent forking tokens: ' + ", ".join(
            f"<code>{_show(t)}</code>&times;{n}" for t, n in summary["top_forking_tokens"]) + "</p>")
    out.append("<h2>Samples</h2>")
    for i, s in enumerate(samples):
        head = f"#{i + 1}"
        if s.reward is not None:
            head += f" &middot; reward {s.reward:g}" + (f" (gold {html.escape(s.answer)})" if s.answer is not None else "")
        out.append(f'<div class="sample"><div class="meta">{head}</div>')
        out.append(f'<div class="prompt">{html.escape(s.prompt)}</div>')
        spans = []
        for t in s.tokens:
            alts = " | ".join(f"{a!r} {p:.3f}" for a, p in t.top)
            alt_lines = "\n".join(f"{a!r}  {p:.3f}" for a, p in t.top)
            cls = "tok fork" if t.fork else "tok"
            attrs = (f'class="{cls}" style="background:{_colour(t.entropy, hmax)}" data-h="{t.entropy:.4f}" '
                     f'title="{html.escape(f"H = {t.entropy:.4f} | top: {alts}", quote=True)}"')
            if t.fork:
                attrs += f' data-alt="{html.escape(f"H = {t.entropy:.3f}" + chr(10) + alt_lines, quote=True)}"'
            spans.append(f"<span {attrs}>{_show(t.text)}</span>" + ("\n" if t.text == "\n" else ""))
        out.append(f'<div class="completion">{"".join(spans)}</div></div>')
    out += ["</body>", "</html>", ""]
    return "\n".join(out)


def cmd_inspect(args) -> int:
    from zoo.config import ConfigError
    from zoo.model import load_policy
    from zoo.model import set_threads

    if bool(args.prompt) == bool(args.task):
        raise ConfigError("zoo inspect: give either --prompt TEXT or --task NAME (with --n)")
    set_threads(args.threads)
    model, tok = load_policy(args.model, "float32", args.device)
    problems = None
    if args.task:
        from zoo.data import get_task

        problems = get_task(args.task).problems("eval", args.n, args.seed)
        prompts = [p.prompt for p in problems]
    else:
        prompts = [args.prompt.replace("\\n", "\n")] * max(1, args.n if args.n_given else 1)
    if args.template != "raw":                      # a prompt format (zoo.prompts), as task.template
        from zoo.prompts import load_template, render

        fmt = load_template(args.template, args.system)
        prompts = [_with_stop(render(fmt, p), fmt.stop) for p in prompts]
    samples = analyse(model, tok, prompts, max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                      seed=args.seed)
    if problems is not None:
        from rewards import get_reward

        task_reward = get_reward(get_task_reward(args.task))
        rewards = task_reward([s.completion for s in samples], [p.answer for p in problems])
        for s, p, r in zip(samples, problems, rewards):
            s.reward, s.answer = float(r), p.answer
    thr = mark_forks(samples, args.percentile)
    summary = entropy_summary(samples, thr)
    page = render_html(samples, summary, title=f"zoo inspect: {Path(args.model).name}", percentile=args.percentile,
                       model=str(args.model))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    print(json.dumps({"out": str(out), **{k: (round(v, 4) if isinstance(v, float) else v)
                                          for k, v in summary.items() if k != "top_forking_tokens"}}, indent=1))
    return 0


def _with_stop(prompt: str, stop: tuple):
    """The prompt, carrying the format's stop strings for `analyse` (a str subclass keeps them)."""
    if not stop:
        return prompt
    if not isinstance(prompt, str) or type(prompt) is str:
        prompt = _StopPrompt(prompt)
    prompt.stop = tuple(stop)
    return prompt


class _StopPrompt(str):
    stop: tuple = ()


def get_task_reward(name: str) -> str:
    from zoo.data import get_task

    return get_task(name).reward


def add_parser(subparsers) -> None:
    sp = subparsers.add_parser("inspect", help="HTML page of sampled tokens coloured by entropy, forking tokens marked")
    sp.add_argument("--model", required=True, help="local HF causal-LM directory (e.g. a run's final/)")
    sp.add_argument("--prompt", help="prompt text (\\n for newlines); sampled --n times")
    sp.add_argument("--task", help="take --n eval prompts of this task (countdown, arith, ...)")
    sp.add_argument("--n", type=int, default=None, help="number of prompts / samples (default 8 with --task, 1 with --prompt)")
    sp.add_argument("--out", default="inspect.html", help="output HTML file (default inspect.html)")
    sp.add_argument("--percentile", type=float, default=80.0, help="forking tokens: H at or above this percentile")
    sp.add_argument("--max-new-tokens", type=int, default=64)
    sp.add_argument("--temperature", type=float, default=1.0)
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument("--threads", type=int, default=0)
    sp.add_argument("--device", default="auto")
    sp.add_argument("--template", default="raw", help="prompt format, as task.template: raw, chat, qwen_math, boxed, "
                    "r1_zero, ... or a file (zoo list)")
    sp.add_argument("--system", default="", help="system message (chat formats)")

    def run(args):
        args.n_given = args.n is not None
        if args.n is None:
            args.n = 8
        if args.n <= 0:
            raise ValueError(f"--n must be positive, got {args.n}")
        return cmd_inspect(args)

    sp.set_defaults(fn=run)
