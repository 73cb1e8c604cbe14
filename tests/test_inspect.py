"""zoo inspect: one coloured span per token, valid HTML, forking tokens marked; renders in Chromium."""
from __future__ import annotations

import shutil
import struct
import subprocess
import zlib
from html.parser import HTMLParser
from pathlib import Path

import pytest

from zoo.inspect import Sample, TokenInfo, analyse, entropy_summary, mark_forks, render_html

VOID = {"meta", "br", "img", "hr", "input", "link"}
CHROMIUM = "/usr/bin/chromium"


class Checker(HTMLParser):
    """Collects token spans and checks that every element is properly closed and nested."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack, self.errors, self.tokens, self.tags = [], [], [], set()
        self._tok = None

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)
        a = dict(attrs)
        if tag == "span" and "tok" in (a.get("class") or "").split():
            self._tok = {"attrs": a, "text": ""}
            self.tokens.append(self._tok)
        if tag not in VOID:
            self.stack.append(tag)
        if tag in ("script", "link", "iframe", "img"):
            self.errors.append(f"external or scripted element <{tag}>")

    def handle_endtag(self, tag):
        if tag in VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1] if self.stack else 'nothing'}")
        else:
            self.stack.pop()
        if tag == "span":
            self._tok = None

    def handle_data(self, data):
        if self._tok is not None:
            self._tok["text"] += data


def toy_samples():
    mk = lambda text, h: TokenInfo(text, h, [(text, 0.9), ("x", 0.05), ("<y>", 0.03), ("'", 0.01), ("\n", 0.01)])  # noqa: E731
    s1 = Sample("Use 1 2 3 to make 6.", "\\boxed{1+2+3}", [mk(c, h) for c, h in zip(
        "\\boxed{1+2+3}", [0.001, 0.0, 0.002, 0.001, 0.0, 0.001, 0.003, 1.2, 0.9, 0.05, 0.8, 0.02, 0.004])] + [mk("⟨eos⟩", 0.01)],
        reward=1.0, answer="6")
    s2 = Sample("a <b> & \"c\"", "<&>\n", [mk("<", 0.5), mk("&", 1.5), mk(">", 0.0), mk("\n", 0.3)])
    return [s1, s2]


def test_html_structure_one_span_per_token_and_forks_marked():
    samples = toy_samples()
    thr = mark_forks(samples, 80)
    page = render_html(samples, entropy_summary(samples, thr), percentile=80, model="toy")
    p = Checker()
    p.feed(page)
    p.close()
    assert not p.errors, p.errors
    assert not p.stack, f"unclosed: {p.stack}"
    assert {"html", "head", "body", "style", "table"} <= p.tags
    all_tokens = [t for s in samples for t in s.tokens]
    assert len(p.tokens) == len(all_tokens)
    for span, tok in zip(p.tokens, all_tokens):
        assert span["attrs"]["style"].startswith("background:#")
        assert float(span["attrs"]["data-h"]) == pytest.approx(tok.entropy, abs=1e-4)
        assert span["text"] == tok.text.replace("\n", "↵")
        assert ("fork" in span["attrs"]["class"].split()) == tok.fork
        assert "top:" in span["attrs"]["title"]
        if tok.fork:
            assert span["attrs"]["data-alt"].startswith("H = ")
    forks = [t for t in all_tokens if t.fork]
    ents = sorted(t.entropy for t in all_tokens)
    assert forks and all(t.entropy >= thr for t in forks) and thr == pytest.approx(
        __import__("numpy").percentile(ents, 80))
    assert max(all_tokens, key=lambda t: t.entropy).fork
    # high entropy gets a redder (less green) background than low entropy
    green = lambda s: int(s["attrs"]["style"][len("background:#") + 2:][:2], 16)  # noqa: E731
    hi = max(p.tokens, key=lambda s: float(s["attrs"]["data-h"]))
    lo = min(p.tokens, key=lambda s: float(s["attrs"]["data-h"]))
    assert green(hi) < green(lo)
    assert "http://" not in page and "https://" not in page and "<script" not in page


def test_analyse_on_tiny_model(tiny):
    model, tok = tiny
    samples = analyse(model, tok, ["Use 1 2 3 to make 6.", "hi"], max_new_tokens=6, seed=0)
    assert len(samples) == 2
    for s in samples:
        assert 1 <= len(s.tokens) <= 6
        for t in s.tokens:
            assert t.entropy >= 0 and len(t.top) == 5
            probs = [p for _, p in t.top]
            assert probs == sorted(probs, reverse=True) and sum(probs) <= 1 + 1e-5
        assert s.completion == "".join(t.text for t in s.tokens if t.text != "⟨eos⟩")


def test_cli_writes_page(tiny_model_dir, tmp_path, capsys):
    from zoo.cli import main

    out = tmp_path / "p.html"
    assert main(["inspect", "--model", str(tiny_model_dir), "--task", "countdown", "--n", "3",
                 "--max-new-tokens", "8", "--out", str(out), "--threads", "1"]) == 0
    c = Checker()
    c.feed(out.read_text())
    assert not c.errors and len(c.tokens) >= 3 and "reward" in out.read_text()
    assert main(["inspect", "--model", str(tiny_model_dir), "--out", str(out)]) == 2
    assert "--prompt" in capsys.readouterr().err


def _png_pixels(path: Path) -> list[int]:
    """Decode an 8-bit RGB/RGBA non-interlaced PNG (what Chromium writes) to a flat list of bytes."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, w = 8, b"", 0
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + n]
        if kind == b"IHDR":
            w, h, depth, ctype = struct.unpack(">IIBB", body[:10])
            assert depth == 8 and ctype in (2, 6), (depth, ctype)
            bpp = 3 if ctype == 2 else 4
        elif kind == b"IDAT":
            idat += body
        pos += 12 + n
    raw, stride, out, prev = zlib.decompress(idat), w * bpp, [], [0] * (w * bpp)
    for y in range(h):
        f, line = raw[y * (stride + 1)], list(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b, c = prev[i], prev[i - bpp] if i >= bpp else 0
            if f == 1:
                line[i] = (line[i] + a) & 255
            elif f == 2:
                line[i] = (line[i] + b) & 255
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                pa, pb, pc = abs(b - c), abs(a - c), abs(a + b - 2 * c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        out += line
        prev = line
    return out


@pytest.mark.skipif(not Path(CHROMIUM).exists() and not shutil.which("chromium"),
                    reason="chromium is not installed (apt-get install -y chromium)")
def test_renders_in_headless_chromium(tmp_path):
    samples = toy_samples()
    page = tmp_path / "page.html"
    page.write_text(render_html(samples, entropy_summary(samples, mark_forks(samples, 80)), model="toy"), encoding="utf-8")
    shot = tmp_path / "shot.png"
    exe = CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium")
    cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=800,600",
           f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}", page.as_uri()]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert shot.exists(), f"no screenshot (rc {r.returncode}): {r.stderr[-2000:]}"
    px = _png_pixels(shot)
    mean = sum(px) / len(px)
    var = sum((v - mean) ** 2 for v in px[::7]) / len(px[::7])
    assert var > 0, "the screenshot is blank"
