"""On-device personalization (the seed paper's Table 4): what is tuned, what is shared, what stays on the device.

:class:`PersonalizationConfig` picks a method:

==========  ============================================================================================
``lora``     peft LoRA on the named ``nn.Linear`` projections (``targets``, default ``q_proj``/``v_proj``;
             peft regexes work too), rank ``rank``, scale ``alpha / rank``; the base stays frozen
``adapter``  a bottleneck adapter (``d -> rank -> d``, zero-initialised) after every block's feed-forward
``prompt``   ``prompt_tokens`` learned tokens prepended to every sequence (prompt tuning)
``expert``   only the selected mixture-of-experts experts (``experts``; empty = chosen from local usage)
``full``     every parameter (the baseline)
==========  ============================================================================================

With ``tune_heads`` (default) the heads of the device's own tasks are trained and shared too (task-aware
aggregation averages them only among devices running that task); ``share_all_heads`` makes the device hold and
share every task head of the model -- a multi-task model on every device -- while it trains only its own tasks'. With ``personal`` the device also gets a
**personal** prompt and (with ``personal_heads``) personal residual classifiers (zero-initialised, under
``personal.``): trained locally, never returned by :func:`shared_state`, so they never leave the device. The prompt
carries the user; the residual classifiers also learn the device's own label priors, which help where tomorrow
looks like today and hurt where it does not.

:func:`apply_personalization` freezes the base and returns a :class:`Personalized` record; :func:`shared_state`
returns exactly the tunable, shareable tensors (LoRA keys in peft's adapter state-dict naming,
``...q_proj.lora_A.weight``), :func:`state_nbytes` their exact byte size. Apply personalization *after* loading the
base checkpoint: peft wraps the targeted layers.
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol, cast

import torch
from torch import nn

from .errors import ConfigError, PersonalizationError
from .model import Block, Bottleneck, M3TModel, MoE

__all__ = [
    "METHODS",
    "PersonalizationConfig",
    "Personalized",
    "apply_personalization",
    "shared_state",
    "personal_state",
    "trainable_state",
    "load_shared_state",
    "load_trainable_state",
    "state_nbytes",
    "select_experts",
    "is_personal_key",
    "without_personalization",
    "check_shareable",
    "PERSONAL_PREFIX",
]

METHODS: tuple[str, ...] = ("lora", "adapter", "prompt", "expert", "full")
#: parameters under this prefix are a device's personal modules (:class:`agents.model.PersonalModules`)
PERSONAL_PREFIX = "personal."


@dataclass(frozen=True)
class PersonalizationConfig:
    """How a device tunes the foundation model locally (see the module docstring for the methods)."""

    method: str = "lora"
    rank: int = 4
    alpha: float = 8.0
    targets: tuple[str, ...] = ("q_proj", "v_proj")
    lora_dropout: float = 0.0
    prompt_tokens: int = 4
    experts: tuple[int, ...] = ()
    tune_heads: bool = True
    share_all_heads: bool = False
    personal: bool = False
    personal_heads: bool = True
    personal_prompt_tokens: int = 2
    learning_rate: float = 3e-3
    weight_decay: float = 0.0

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError("method", "unknown personalization method", value=self.method, allowed=list(METHODS))
        for n in ("rank", "prompt_tokens", "personal_prompt_tokens"):
            v = getattr(self, n)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(n, "must be an integer >= 1", value=v)
        for n in ("alpha", "learning_rate"):
            v = getattr(self, n)
            if not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                raise ConfigError(n, "must be a positive number", value=v)
        if not 0 <= self.lora_dropout < 1 or self.weight_decay < 0:
            raise ConfigError("lora_dropout", "lora_dropout in [0, 1) and weight_decay >= 0",
                              value=(self.lora_dropout, self.weight_decay))
        object.__setattr__(self, "targets", tuple(self.targets))
        object.__setattr__(self, "experts", tuple(int(e) for e in self.experts))
        if self.method == "lora" and not self.targets:
            raise ConfigError("targets", "LoRA needs at least one target module name")

    @property
    def lora_scale(self) -> float:
        return self.alpha / self.rank

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["targets"], d["experts"] = list(self.targets), list(self.experts)
        return d

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> PersonalizationConfig:
        names = set(cls.__dataclass_fields__)
        unknown = sorted(set(raw) - names)
        if unknown:
            raise ConfigError(unknown[0], "unknown field", allowed=sorted(names))
        kw = dict(raw)
        for k in ("targets", "experts"):
            if k in kw:
                kw[k] = tuple(kw[k])
        return cls(**kw)


@dataclass
class Personalized:
    """What :func:`apply_personalization` did: the method, tasks, and the parameter names by role."""

    config: PersonalizationConfig
    tasks: tuple[str, ...]
    shared_names: tuple[str, ...]  # model parameter names that are tuned and shared
    personal_names: tuple[str, ...]  # tuned, never shared
    experts: tuple[int, ...] = ()


def _is_lora_param(name: str) -> bool:
    """A LoRA factor injected by peft (``...lora_A.<adapter>.weight``); peft owns its state-dict naming."""
    return ".lora_A." in name or ".lora_B." in name


def select_experts(model: M3TModel, count: int) -> tuple[int, ...]:
    """The ``count`` experts the last forward used most (summed over layers): what expert tuning should tune."""
    moes = [b.ff for b in model.blocks if isinstance(b.ff, MoE)]
    if not moes:
        raise PersonalizationError("expert tuning needs a mixture-of-experts model (config num_experts > 0)")
    e = len(moes[0].experts)
    counts = torch.zeros(e)
    for m in moes:
        if m.last_choice is not None:
            counts += torch.bincount(m.last_choice.reshape(-1), minlength=e).float()
    order = torch.argsort(counts, descending=True, stable=True)
    return tuple(sorted(int(i) for i in order[:count]))


def apply_personalization(model: M3TModel, cfg: PersonalizationConfig, tasks: Sequence[str]) -> Personalized:
    """Freeze the base, add the method's modules, mark what trains. ``tasks`` are the device's tasks."""
    tasks = model.check_tasks(tasks)
    d = model.cfg.d_model
    if cfg.method == "lora":
        from peft import LoraConfig, inject_adapter_in_model

        linear = [n for n, mod in model.named_modules() if isinstance(mod, nn.Linear)]
        # A target is a module name (``q_proj``) or a dotted suffix of one (``net.0``), matched as peft matches list
        # entries; anything else is a regular expression over full module names. Mixed lists become one expression.
        names = [t for t in cfg.targets if re.fullmatch(r"[A-Za-z_][\w]*(\.\w+)*", t)]
        missing = [t for t in names if not any(n == t or n.endswith(f".{t}") for n in linear)]
        if missing:
            raise PersonalizationError(f"LoRA targets {missing} name no nn.Linear in the model; linear layers: "
                                       f"{sorted({n.rsplit('.', 1)[-1] for n in linear})}")
        if len(names) == len(cfg.targets):
            target: str | list[str] = list(cfg.targets)
        else:
            parts = [f"(?:.*\\.)?{re.escape(t)}" if t in names else f"(?:{t})" for t in cfg.targets]
            target = "|".join(parts)
        # peft annotates lora_alpha as int, but uses it only as the numerator of its scale (alpha / r): floats work
        lcfg = LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha,  # type: ignore[arg-type]
                          lora_dropout=cfg.lora_dropout, target_modules=target, bias="none")
        inject_adapter_in_model(lcfg, model)
    elif cfg.method == "adapter":
        for blk in _blocks(model):
            blk.adapter = Bottleneck(d, cfg.rank)
    elif cfg.method == "prompt":
        model.prompt["shared"] = nn.Parameter(torch.randn(cfg.prompt_tokens, d) * 0.02)
    elif cfg.method == "expert" and not any(isinstance(b.ff, MoE) for b in model.blocks):
        raise PersonalizationError("expert tuning needs a mixture-of-experts model (config num_experts > 0); "
                                   "use a preset with experts or set num_experts")
    if cfg.personal:
        model.personal.prompt = nn.Parameter(torch.randn(cfg.personal_prompt_tokens, d) * 0.02)
        for t in (tasks if cfg.personal_heads else ()):
            lin = nn.Linear(d, model.cfg.num_classes(t))
            nn.init.zeros_(lin.weight)
            nn.init.zeros_(lin.bias)
            model.personal.heads[t] = lin

    experts: tuple[int, ...] = ()
    if cfg.method == "expert":
        n_exp = model.cfg.num_experts
        experts = cfg.experts or tuple(range(model.cfg.top_k))
        bad = [e for e in experts if not 0 <= e < n_exp]
        if bad:
            raise PersonalizationError(f"experts {bad} do not exist; the model has experts 0..{n_exp - 1}")

    shared: list[str] = []
    personal: list[str] = []
    for name, p in model.named_parameters():
        if is_personal_key(name):
            role = "personal"
        elif cfg.method == "full":
            role = "shared"
        elif cfg.method == "lora" and _is_lora_param(name):
            role = "shared"
        elif cfg.method == "adapter" and ".adapter." in name:
            role = "shared"
        elif cfg.method == "prompt" and name.startswith("prompt."):
            role = "shared"
        elif cfg.method == "expert" and any(f".ff.experts.{e}." in name for e in experts):
            role = "shared"
        elif cfg.tune_heads and any(name.startswith(f"heads.{t}.")
                                    for t in (model.cfg.tasks if cfg.share_all_heads else tasks)):
            role = "shared"
        else:
            role = "frozen"
        p.requires_grad_(role != "frozen")
        (shared if role == "shared" else personal if role == "personal" else []).append(name)
    return Personalized(cfg, tasks, tuple(shared), tuple(personal), experts)


class _LoadResult(Protocol):
    """The keys ``load_state_dict`` (and peft's ``set_peft_model_state_dict``) did not match."""

    missing_keys: list[str]
    unexpected_keys: list[str]


def _blocks(model: M3TModel) -> list[Block]:
    """The model's transformer blocks, typed (iterating an ``nn.ModuleList`` yields plain modules)."""
    return [cast(Block, blk) for blk in model.blocks]


def _params(model: nn.Module) -> dict[str, nn.Parameter]:
    return dict(model.named_parameters())


def is_personal_key(key: str) -> bool:
    """True for a device's personal tensors (``personal.`` anywhere in the dotted name): they never leave it.

    This is the one place the rule is written; :func:`check_shareable` enforces it on anything about to be sent
    and :func:`load_shared_state` on anything received.
    """
    return key.startswith(PERSONAL_PREFIX) or f".{PERSONAL_PREFIX}" in key


def check_shareable(state: Mapping[str, torch.Tensor], where: str = "shared state") -> None:
    """Raise :class:`PersonalizationError` if ``state`` holds a personal tensor."""
    personal = sorted(k for k in state if is_personal_key(k))
    if personal:
        raise PersonalizationError(f"{where} holds personal tensors {personal[:3]}: personal adapters never "
                                   "leave the device")


def _lora_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """peft's adapter state dict (its own key naming: ``...q_proj.lora_A.weight``), detached copies."""
    from peft import get_peft_model_state_dict

    return {k: v.detach().clone() for k, v in get_peft_model_state_dict(model).items()}


def shared_state(model: nn.Module, info: Personalized) -> dict[str, torch.Tensor]:
    """The tuned tensors that may leave the device (detached copies).

    LoRA factors come from peft's ``get_peft_model_state_dict`` in peft's naming; the other shared tensors
    (task heads, shared prompt, bottleneck adapters, experts) keep their parameter names.
    """
    params = _params(model)
    out = _lora_state(model) if info.config.method == "lora" else {}
    out.update({n: params[n].detach().clone() for n in info.shared_names if not _is_lora_param(n)})
    check_shareable(out)
    return out


def personal_state(model: nn.Module, info: Personalized) -> dict[str, torch.Tensor]:
    """The device's personal tensors (never shared)."""
    params = _params(model)
    return {n: params[n].detach().clone() for n in info.personal_names}


def trainable_state(model: nn.Module, info: Personalized) -> dict[str, torch.Tensor]:
    """Shared and personal tensors together: everything the device keeps between rounds."""
    return {**shared_state(model, info), **personal_state(model, info)}


def load_shared_state(model: nn.Module, info: Personalized, state: Mapping[str, torch.Tensor], *,
                      strict: bool = False) -> list[str]:
    """Copy received shared tensors in; returns the keys that were loaded.

    A device may receive a subset (partial aggregation skips keys it does not hold) unless ``strict``; an unknown
    key or a shape mismatch is an error, and a personal key is refused: personal state is never received. LoRA
    factors go in through peft's ``set_peft_model_state_dict``.
    """
    for k in state:
        if is_personal_key(k):
            raise PersonalizationError(f"refusing to load personal tensor {k!r} from outside the device")
    params = _params(model)
    lora_own = _lora_state(model) if info.config.method == "lora" else {}
    plain_own = {n: params[n] for n in info.shared_names if not _is_lora_param(n)}
    lora_in: dict[str, torch.Tensor] = {}
    loaded = []
    for k, v in state.items():
        own = lora_own.get(k, plain_own.get(k))
        if own is None:
            known = sorted([*lora_own, *plain_own])
            raise PersonalizationError(f"{k!r} is not a shared tensor of this model ({info.config.method}); "
                                       f"expected keys like {known[:3]}")
        if tuple(v.shape) != tuple(own.shape):
            raise PersonalizationError(f"{k!r}: expected shape {tuple(own.shape)}, got {tuple(v.shape)}")
        if not bool(torch.isfinite(v).all()):
            raise PersonalizationError(f"{k!r}: received non-finite values")
        if k in lora_own:
            lora_in[k] = v.to(own.dtype)
        else:
            with torch.no_grad():
                plain_own[k].copy_(v.to(plain_own[k].dtype))
        loaded.append(k)
    if lora_in:
        from peft import set_peft_model_state_dict

        # peft annotates the result as ``namedtuple``; it is what ``nn.Module.load_state_dict`` returns
        res = cast(_LoadResult, set_peft_model_state_dict(model, lora_in))
        if res.unexpected_keys:
            raise PersonalizationError(f"peft did not place LoRA tensors {res.unexpected_keys[:3]}")
    if strict:
        missing = sorted((set(lora_own) | set(plain_own)) - set(loaded))
        if missing:
            raise PersonalizationError(f"missing shared tensors {missing[:5]}")
    return loaded


def load_trainable_state(model: nn.Module, info: Personalized, state: Mapping[str, torch.Tensor]) -> None:
    """Restore a device's own checkpoint (shared and personal tensors)."""
    personal = {k: v for k, v in state.items() if is_personal_key(k)}
    load_shared_state(model, info, {k: v for k, v in state.items() if not is_personal_key(k)})
    params = _params(model)
    for k, v in personal.items():
        if k not in info.personal_names:
            raise PersonalizationError(f"{k!r} is not a personal tensor of this device")
        if tuple(v.shape) != tuple(params[k].shape):
            raise PersonalizationError(f"{k!r}: expected shape {tuple(params[k].shape)}, got {tuple(v.shape)}")
        with torch.no_grad():
            params[k].copy_(v)


@contextlib.contextmanager
def without_personalization(model: M3TModel) -> Iterator[None]:
    """Inside the block the model runs with every personalization module switched off: peft's LoRA layers
    disabled (``enable_adapters(False)``), bottleneck adapters, shared and personal prompts and personal heads
    removed. Before any tuning (LoRA B, adapters' up-projections and personal heads start at zero; tuned heads are
    still the checkpoint's) this is exactly the pretrained foundation model."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    lora = [m for m in model.modules() if isinstance(m, BaseTunerLayer)]
    blocks = _blocks(model)
    adapters = [blk.adapter for blk in blocks]
    prompt, personal = model.prompt, model.personal
    try:
        for m in lora:
            m.enable_adapters(False)
        for blk in blocks:
            blk.adapter = None
        model.prompt = nn.ParameterDict()
        model.personal = type(personal)()
        yield
    finally:
        for m in lora:
            m.enable_adapters(True)
        for blk, ad in zip(blocks, adapters, strict=True):
            blk.adapter = ad
        model.prompt, model.personal = prompt, personal


def state_nbytes(state: Mapping[str, torch.Tensor]) -> int:
    """Exact payload bytes of a tensor dict (elements x element size; headers not counted)."""
    return int(sum(t.numel() * t.element_size() for t in state.values()))
