"""FSDP2 sharding of the policy (`train.sharding: fsdp`): parameters, gradients and optimizer state
split over the ranks, for policies whose optimizer state does not fit one GPU.

    accelerate launch --config_file configs/accelerate/fsdp.yaml -m zoo train --config my.yaml --out runs/my

- What is sharded: every decoder layer is its own FSDP unit (`fully_shard`), and the root unit is
  the scoring module `PolicyScorer` (embedding, final norm and LM head, tied or not), so inside its
  forward the fused log-prob/entropy op sees the full LM-head weight and its sparse backward works
  unchanged. Every forward of the trainer (training, scoring, reference) goes through a root.
- Mixed precision: the same design as one process (zoo.policy): fp32 master weights, sharded;
  forwards under autocast in `model.dtype`; gradients reduced in fp32. FSDP's own bf16 parameter
  casting is not used: it gives different numbers from autocast, and one process, DDP and FSDP
  must agree. The cost: all-gathers move fp32 weights (2x the bytes of bf16).
- Rollouts: `full_weights()` all-gathers every unit once per rollout batch and keeps it gathered
  (FSDP2's `unshard()` is not recursive: each unit is unsharded, with reshard-after-forward off,
  then resharded), so decoding runs no collective per token. Peak memory during rollout: the full
  fp32 weights on every rank (plus the autocast cache of their bf16 casts, 6 bytes/parameter in
  all), on top of the sharded optimizer state. An inference engine would take the full weights at
  the engine's `sync_weights` hook instead.
- Checkpoints: model and optimizer shards with torch.distributed.checkpoint (DCP), inside the same
  atomic, checksummed `ckpt-<step>/` as always (see zoo.checkpoint); DCP's metadata file is read
  with a restricted unpickler that only builds DCP's own records (never arbitrary objects).
  `final/` is one consolidated `save_pretrained` directory.
- Optional `train.fsdp_offload: true`: parameters, gradients and optimizer state live in CPU
  memory (FSDP2's CPUOffloadPolicy) for the largest models.
"""
from __future__ import annotations

import pickle
from contextlib import contextmanager
from pathlib import Path

import torch


def shard_policy(root: torch.nn.Module, model, offload: bool = False) -> None:
    """fully_shard every decoder layer of `model`, then `root` (which holds `model`)."""
    from torch.distributed.fsdp import CPUOffloadPolicy, fully_shard

    layers = getattr(model.get_decoder(), "layers", None)
    if layers is None or not len(layers):
        raise ValueError(f"train.sharding: fsdp: {type(model).__name__} has no decoder `layers` to shard")
    kw = {"offload_policy": CPUOffloadPolicy()} if offload else {}
    for layer in layers:
        fully_shard(layer, **kw)
    fully_shard(root, **kw)


def _units(root: torch.nn.Module) -> list:
    from torch.distributed.fsdp import FSDPModule

    return [m for m in root.modules() if isinstance(m, FSDPModule)]


_GATHERED: set[int] = set()      # roots whose weights a `full_weights` block holds gathered


@contextmanager
def full_weights(root: torch.nn.Module | None):
    """All-gather every FSDP unit under `root` once and keep the weights gathered inside the block
    (forwards run no collective there, so ranks may run different numbers of them, and one rank
    alone may run them, e.g. evaluation). A collective: every rank enters it. No-op for root None
    and inside another block for the same root."""
    if root is None or id(root) in _GATHERED:       # nested: the outer block already holds them
        yield
        return
    _GATHERED.add(id(root))
    units = _units(root)
    for u in units:
        u.set_reshard_after_forward(False)
    for u in units:
        u.unshard()
    try:
        yield
    finally:
        _GATHERED.discard(id(root))
        for u in units:
            u.reshard()
            u.set_reshard_after_forward(True)


def set_grad_sync(root: torch.nn.Module, sync: bool) -> None:
    """Reduce-scatter gradients on this backward (the last micro-batch) or only accumulate."""
    root.set_requires_gradient_sync(sync)


def local_tensor(x):
    """A DTensor's full value (a collective), or x itself."""
    return x.full_tensor() if hasattr(x, "full_tensor") else x


def local_bytes(model: torch.nn.Module, opt: torch.optim.Optimizer) -> int:
    """Bytes this rank holds for parameters, gradients and optimizer state (the local shards)."""
    def nbytes(t):
        t = t.to_local() if hasattr(t, "to_local") else t
        return t.numel() * t.element_size()
    n = sum(nbytes(p) for p in model.parameters())
    n += sum(nbytes(p.grad) for p in model.parameters() if p.grad is not None)
    n += sum(nbytes(v) for st in opt.state.values() for v in st.values() if torch.is_tensor(v))
    return n


# ----------------------------------------------------------------------------------------------
# Checkpoints
# ----------------------------------------------------------------------------------------------
class _DCPMetadataUnpickler(pickle.Unpickler):
    """Builds only what DCP's `.metadata` holds: its metadata records, torch sizes, dtypes and
    layouts, paths. Anything else (a tampered file naming other callables) is refused."""

    def find_class(self, module: str, name: str):
        if module in ("torch.distributed.checkpoint.metadata", "torch.distributed.checkpoint.filesystem") \
                and not name.startswith("__"):
            return super().find_class(module, name)
        if module == "torch" and (name == "Size" or isinstance(getattr(torch, name, None), torch.dtype)):
            return super().find_class(module, name)
        if (module, name) in {("torch.serialization", "_get_layout"), ("pathlib", "PosixPath"),
                              ("pathlib", "WindowsPath"), ("pathlib", "PurePosixPath"),
                              ("pathlib", "PureWindowsPath"), ("collections", "OrderedDict")}:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"DCP metadata names {module}.{name}, which a checkpoint never holds: refused")


def _reader(path: Path):
    from torch.distributed.checkpoint import FileSystemReader

    class SafeReader(FileSystemReader):
        def read_metadata(self, *args, **kwargs):
            with open(Path(self.path) / ".metadata", "rb") as f:
                md = _DCPMetadataUnpickler(f).load()
            if getattr(md, "storage_meta", None) is not None:
                md.storage_meta.load_id = self.load_id
            return md

    return SafeReader(str(path))


def save_shards(root: torch.nn.Module, opt: torch.optim.Optimizer, path: Path) -> None:
    """Every rank writes its model and optimizer shards into `path` (a collective)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    msd, osd = get_state_dict(root, opt)
    dcp.save({"model": msd, "optim": osd}, checkpoint_id=str(path))


def load_shards(root: torch.nn.Module, opt: torch.optim.Optimizer, path: Path) -> None:
    """Load model and optimizer shards from `path` into the sharded root and optimizer (a
    collective; DCP reshards when the checkpoint was written by another number of ranks)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    msd, osd = get_state_dict(root, opt)
    state = {"model": msd, "optim": osd}
    dcp.load(state, storage_reader=_reader(Path(path)))
    set_state_dict(root, opt, model_state_dict=state["model"], optim_state_dict=state["optim"])


def full_model_state(root: torch.nn.Module, prefix: str = "model.") -> dict:
    """The full (unsharded) model state dict on rank 0, on CPU, keys without the root's prefix
    (a collective; other ranks get an empty dict)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    sd = get_model_state_dict(root, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in sd.items()}


# ----------------------------------------------------------------------------------------------
# The trainer's side
# ----------------------------------------------------------------------------------------------
def sharding_mode(cfg) -> str:
    """`train.sharding`, or fsdp when accelerate was launched with an FSDP config."""
    import os

    if cfg.train.sharding == "none" and os.environ.get("ACCELERATE_USE_FSDP", "").lower() in ("1", "true"):
        return "fsdp"
    return cfg.train.sharding


class ShardedTraining:
    """Mixin for `zoo.trainer.Trainer`: FSDP setup, gathered weights for rollouts and evaluation,
    gradient-sync control over micro-batches, and the FSDP roots every forward goes through."""

    sharded = False
    _roots: dict = {}

    def _setup_sharding(self, scorer) -> torch.nn.Module:
        """The module the training forward calls: the FSDP root, DDP's wrapper, or the scorer."""
        from zoo.batches import PolicyScorer
        from zoo.schema import ConfigError

        self.sharded = sharding_mode(self.cfg) == "fsdp"
        if not self.sharded:
            self._roots = {}
            return self.acc.prepare(scorer) if self.acc else scorer
        if self.world < 2:
            raise ConfigError("train.sharding: fsdp needs a multi-process launch (accelerate launch with "
                              "configs/accelerate/fsdp.yaml, or torchrun); one process has nothing to shard over")
        if self.policy.peft is not None:
            raise ConfigError("train.sharding: fsdp with model.lora is not supported yet: LoRA already keeps the "
                              "trainable state small; use DDP (the default under accelerate launch)")
        # a forward whose decoder calls differ between ranks (a shared prompt cache runs the decoder
        # twice) would mismatch FSDP's per-layer all-gathers: one decoder call per forward here
        scorer.share_prompts = False
        shard_policy(scorer, self.model, self.cfg.train.fsdp_offload)
        self._roots = {id(self.model): scorer}
        if self.policy.ref is not None:             # the frozen reference is sharded the same way
            ref_root = PolicyScorer(self.policy.ref, share_prompts=False)
            shard_policy(ref_root, self.policy.ref, self.cfg.train.fsdp_offload)
            self._roots[id(self.policy.ref)] = ref_root
        for root in self._roots.values():          # FSDP initialises lazily on a forward through its root;
            self._one_token_forward(root)          # the root stays gathered after a forward: reshard it, so
            for u in _units(root):                 # the optimizer (built next) holds the sharded parameters
                u.reshard()
        self.print(f"[zoo] FSDP: {len(self.model.get_decoder().layers)} decoder layers and the scoring root sharded "
                   f"over {self.world} ranks" + (", offloaded to CPU" if self.cfg.train.fsdp_offload else ""))
        return scorer

    def _one_token_forward(self, root) -> None:
        one = torch.tensor([[self.tok.eos_token_id]])
        on = torch.ones(1, 1, dtype=torch.bool)
        with torch.no_grad():
            root(one, on, one, on, torch.ones(1, 1), self.cfg.rollout.temperature, self.cfg.model.chunk_size)

    def root_of(self, model):
        """The FSDP root a forward of `model` must go through (None when not sharded)."""
        return self._roots.get(id(model))

    def gathered(self):
        """Keep the policy's full weights gathered inside the block (FSDP); a no-op otherwise."""
        return full_weights(self.train_forward if self.sharded else None)

    def grad_sync(self, sync: bool):
        """Context for one micro-batch's backward: gradients are all-reduced (DDP) or
        reduce-scattered (FSDP) only on the last micro-batch of an optimizer step."""
        from contextlib import nullcontext

        if self.sharded:
            set_grad_sync(self.train_forward, sync)
            return nullcontext()
        return nullcontext() if (sync or self.acc is None) else self.train_forward.no_sync()
