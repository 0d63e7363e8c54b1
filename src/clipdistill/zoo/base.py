"""`ClipModel`: the one interface every command sees, whatever format the weights came in."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from clipdistill.errors import UserError

Tokenizer = Callable[[list[str]], torch.Tensor]

# Characters of a text kept per token of context before tokenising. open_clip's BPE is quadratic in a word's
# length (a million-letter word never finishes); a model keeps at most context_length tokens and real text
# averages ~4-5 characters per token, so cutting at 20x context_length characters never changes the kept tokens
# of real text, and bounds the worst case (one random 1540-letter word) to well under a second.
CHARS_PER_CONTEXT_TOKEN = 20


def text_char_budget(context_length: int) -> int:
    return CHARS_PER_CONTEXT_TOKEN * max(int(context_length), 1)


def cap_texts(texts: str | list[str], context_length: int) -> str | list[str]:
    """Each text cut to `text_char_budget(context_length)` characters (a str stays a str)."""
    n = text_char_budget(context_length)
    return texts[:n] if isinstance(texts, str) else [t[:n] for t in texts]


class CappedTokenizer:
    """A backend tokenizer that sees each text cut to the character budget; other attributes pass through."""

    def __init__(self, tokenize: Callable, context_length: int):
        self._tokenize, self._context_length = tokenize, int(context_length)

    @property
    def wrapped(self) -> Callable:
        """The backend's own tokenizer (its class names the tokenizer in export metadata)."""
        return self._tokenize

    def __call__(self, texts, *args, **kwargs):
        return self._tokenize(cap_texts(texts, self._context_length), *args, **kwargs)

    def __getattr__(self, name: str):
        if name.startswith("_"):  # not yet set (unpickling) or private: never recurse into the wrapped object
            raise AttributeError(name)
        return getattr(self._tokenize, name)


def eos_mask(ids: torch.Tensor, eos_id: int) -> torch.Tensor:
    """True for real tokens: everything up to and including the first EOS of each row."""
    is_eos = ids == eos_id
    first = torch.where(is_eos.any(1), is_eos.int().argmax(1), torch.full_like(ids[:, 0], ids.shape[1] - 1))
    return torch.arange(ids.shape[1], device=ids.device)[None, :] <= first[:, None]


class ClipModel(nn.Module):
    """A CLIP with its own tokenizer and transforms. Subclasses wrap one backend in `self.inner`."""

    spec: str
    arch: str
    embed_dim: int
    image_size: int
    context_length: int
    tokenizer: Tokenizer
    train_transform: Callable
    eval_transform: Callable
    image_mean: tuple[float, ...]
    image_std: tuple[float, ...]

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner
        self.load_warnings: list[str] = []  # problems that did not stop the load; `describe()` -> manifests

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Activation checkpointing of the wrapped model (`train.grad_checkpointing`): the training loop asks the
        model, never its wrapper's internals. open_clip models have it; a backend without it is refused."""
        fn = getattr(self.inner, "set_grad_checkpointing", None)
        if fn is None:
            raise UserError(f"train.grad_checkpointing: {getattr(self, 'spec', '')} "
                            f"({type(self.inner).__name__}) cannot do it")
        fn(enable)

    def warn(self, message: str) -> None:
        """Record a loading problem that does not stop the load, and show it now (a UserWarning)."""
        import warnings

        self.load_warnings.append(message)
        warnings.warn(f"{getattr(self, 'spec', '')}: {message}", UserWarning, stacklevel=2)

    # -- implemented by backends ---------------------------------------------------------------
    def encode_image(self, images: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        raise NotImplementedError

    def encode_text(self, ids: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        raise NotImplementedError

    def encode_image_tokens(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(pooled [B, D], patch tokens [B, N, D]), both in the joint space, unnormalised."""
        raise NotImplementedError

    def encode_text_tokens(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(pooled [B, D], tokens [B, L, D], mask [B, L]) in the joint space, unnormalised."""
        raise NotImplementedError

    @property
    def raw_logit_scale(self) -> torch.Tensor:
        raise NotImplementedError

    def visual_parameters(self) -> list[nn.Parameter]:
        raise NotImplementedError

    # -- shared --------------------------------------------------------------------------------
    @property
    def logit_scale(self) -> torch.Tensor:
        return self.raw_logit_scale.exp().clamp(max=100)

    @property
    def logit_bias(self) -> torch.Tensor | None:
        """The learnt bias of a sigmoid-loss (SigLIP) model, added to scale * cosine; None for a CLIP."""
        return None

    def forward(self, images: torch.Tensor, ids: torch.Tensor) -> dict[str, torch.Tensor]:
        out = {
            "image_features": self.encode_image(images),
            "text_features": self.encode_text(ids),
            "logit_scale": self.logit_scale,
        }
        if self.logit_bias is not None:  # SigLIP-style: pairwise probability sigmoid(scale * cos + bias)
            out["logit_bias"] = self.logit_bias
        return out

    def similarity(self, images: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        img = F.normalize(self.encode_image(images), dim=-1)
        txt = F.normalize(self.encode_text(ids), dim=-1)
        return self.logit_scale * img @ txt.T

    def num_params(self) -> dict[str, int]:
        total = sum(p.numel() for p in self.inner.parameters())
        visual = sum(p.numel() for p in self.visual_parameters())
        return {"total": total, "visual": visual, "text": total - visual}

    def weights_hash(self) -> str:
        """sha256 over names, shapes and bytes of the state dict: identifies the weights in manifests."""
        h = hashlib.sha256()
        for name, t in sorted(self.inner.state_dict().items()):
            t = t.detach().cpu().contiguous()
            h.update(name.encode())
            h.update(str(tuple(t.shape)).encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
        return h.hexdigest()

    def describe(self) -> dict:
        return {
            "spec": self.spec,
            "arch": self.arch,
            "embed_dim": self.embed_dim,
            "image_size": self.image_size,
            "context_length": self.context_length,
            "image_mean": list(self.image_mean),
            "image_std": list(self.image_std),
            "params": self.num_params(),
            **({"load_warnings": list(self.load_warnings)} if self.load_warnings else {}),
        }


# torch.nn.init's in-place initialisers: what module constructors and open_clip's `init_parameters` call
_INIT_FUNCTIONS = ("uniform_", "normal_", "trunc_normal_", "constant_", "ones_", "zeros_", "eye_", "dirac_",
                   "xavier_uniform_", "xavier_normal_", "kaiming_uniform_", "kaiming_normal_", "orthogonal_",
                   "sparse_")


@contextmanager
def skip_weight_init() -> Iterator[None]:
    """Build a module without running torch.nn.init's initialisers (its tensors keep whatever memory they got).
    Only for a module whose every tensor is then loaded by `load_exact_state`, which refuses a missing one: the
    discarded random init is most of a large teacher's load time on CPU (ViT-B/32: ~1 s)."""
    saved = {name: getattr(nn.init, name) for name in _INIT_FUNCTIONS if hasattr(nn.init, name)}

    def keep(tensor, *args, **kwargs):
        return tensor

    try:
        for name in saved:
            setattr(nn.init, name, keep)
        yield
    finally:
        for name, fn in saved.items():
            setattr(nn.init, name, fn)


def load_exact_state(module: nn.Module, state: dict[str, torch.Tensor], where: str, against: str,
                     derived: tuple[str, ...] = ("position_ids",)) -> None:
    """Load `state` so that every tensor of `module` comes from it, naming the mismatch instead of a torch
    traceback; a tensor left at its random init would give a model that runs and scores as if it were the
    teacher. `derived` buffers (position ids, which differ across library versions) may be absent or extra."""
    own = module.state_dict()
    wrong = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    if wrong:
        k = wrong[0]
        raise UserError(f"{where}: weights for another architecture than {against} ({len(wrong)} tensors of "
                        f"another shape, e.g. {k}: {tuple(state[k].shape)} vs {tuple(own[k].shape)})")
    missing, unexpected = module.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith(derived)]
    unexpected = [k for k in unexpected if not k.endswith(derived)]
    if missing or unexpected:
        raise UserError(f"{where}: weights do not match {against}: {len(missing)} missing {missing[:4]}, "
                        f"{len(unexpected)} unexpected {unexpected[:4]}; refusing to leave them randomly initialised")
