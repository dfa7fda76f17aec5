"""The multi-modal multi-task foundation model (M3T FM): modality tokenizers -> shared transformer -> task heads.

Reading order, nanoGPT style: :class:`M3TModel` builds one token sequence per sample ::

    [task tokens (one per asked task)] [prompt tokens (optional)] [personal prompt (optional)] [modality tokens]

and runs it through ``n_layers`` pre-norm :class:`Block` s. Each task's logits are read at its own task token
(:class:`TaskHead`), so a task is selected by a learned token and asking for fewer tasks costs less.

Why the attention mask looks the way it does:

* a missing modality is a missing token, never a zero image: its tokens are masked out as keys, per sample, and a
  modality absent from the whole batch is not tokenized at all (a device without audio never builds audio
  tokens);
* task tokens read the modality (and prompt) tokens but not each other, and nothing reads the task tokens, so a
  task's prediction does not depend on which other tasks were asked for in the same call.

Parameter names carry their scope so federation can aggregate partially: ``encoders.<modality>.`` (tokenizers,
their modality and time embeddings), ``heads.<task>.`` (task token and classifier), ``blocks.<i>.`` (the shared
backbone: ``attn.q_proj/k_proj/v_proj/out_proj`` and ``ff.fc_in/fc_out`` are plain :class:`torch.nn.Linear`, so
peft's LoRA can target them by name), ``prompt.`` and ``personal.`` for the personalization modules of
:mod:`agents.personalize`.

Input: a batch dict in the layout of :func:`bridge.dataset.collate_frames` (see :mod:`agents.batching`), plus
optional ``audio_hz`` (int) and ``camera_fov_y_deg`` ([B] tensor) entries.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from .audio import AudioFeatures
from .config import ModelConfig
from .errors import EmptyFrameError, UnknownTaskError

__all__ = ["M3TModel", "Block", "Attention", "MLP", "MoE", "Bottleneck", "TaskHead", "PersonalModules", "ImageEncoder",
           "SeriesEncoder", "AudioEncoder", "SERIES_DIMS", "SERIES_SCALES"]

#: features per time step of the time-series modalities (bridge.arrays layout)
SERIES_DIMS: dict[str, int] = {"gaze": 8, "pose": 7, "imu": 6, "hands": 2 * 26 * 3}
#: fixed input scales that bring each feature to order 1 (angles rad, positions m, pupil mm, m/s^2, rad/s)
SERIES_SCALES: dict[str, tuple[float, ...]] = {
    "gaze": (2.0, 2.0, 10.0, 10.0, 10.0, 0.2, 0.25, 1.0),
    "pose": (0.2, 0.2, 0.2, 1.0, 1.0, 1.0, 1.0),
    "imu": (0.1, 0.1, 0.1, 1.0, 1.0, 1.0),
    "hands": (4.0,) * (2 * 26 * 3),
}


# ---------------------------------------------------------------------------------------------------------------
# backbone
class Attention(nn.Module):
    """Multi-head self-attention with separate q/k/v/out ``nn.Linear`` projections (peft targets them by name)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        d = cfg.d_model
        self.n_heads, self.dropout = cfg.n_heads, cfg.dropout
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (nn.Linear(d, d) for _ in range(4))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, s, d = x.shape  # mask [B, 1, S, S] bool, True = may attend
        h = self.n_heads

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.view(b, s, h, d // h).transpose(1, 2)  # [B, h, S, d/h]

        y = F.scaled_dot_product_attention(split(self.q_proj(x)), split(self.k_proj(x)), split(self.v_proj(x)),
                                           attn_mask=mask, dropout_p=self.dropout if self.training else 0.0)
        return self.out_proj(y.transpose(1, 2).reshape(b, s, d))


class MLP(nn.Module):
    def __init__(self, d: int, hidden: int):
        super().__init__()
        self.fc_in, self.fc_out = nn.Linear(d, hidden), nn.Linear(hidden, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc_out(F.gelu(self.fc_in(x)))


class MoE(nn.Module):
    """Mixture-of-experts feed-forward: a linear gate routes each token to its ``top_k`` experts.

    ``last_choice`` keeps the experts each token used in the last forward ([B, S, top_k]) so the model can report
    how many experts each task activates (the paper's submodule activation efficiency); ``aux_loss`` is the
    Switch-Transformer load-balancing term (E * sum_e fraction_e * mean gate probability_e), 1.0 when balanced.
    """

    def __init__(self, d: int, hidden: int, num_experts: int, top_k: int):
        super().__init__()
        self.top_k = top_k
        self.gate = nn.Linear(d, num_experts, bias=False)
        self.experts = nn.ModuleList(MLP(d, hidden) for _ in range(num_experts))
        self.last_choice: torch.Tensor | None = None
        self.aux_loss: torch.Tensor = torch.zeros(())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s, d = x.shape
        flat = x.reshape(b * s, d)
        probs = self.gate(flat).softmax(dim=-1)  # [N, E]
        top_p, top_i = probs.topk(self.top_k, dim=-1)  # [N, k]
        top_p = top_p / top_p.sum(dim=-1, keepdim=True)
        out = torch.zeros_like(flat)
        for e, expert in enumerate(self.experts):
            rows, slot = (top_i == e).nonzero(as_tuple=True)
            if rows.numel():
                out.index_add_(0, rows, expert(flat[rows]) * top_p[rows, slot, None])
        e_count = len(self.experts)
        frac = F.one_hot(top_i[:, 0], e_count).float().mean(dim=0)
        self.aux_loss = e_count * (frac * probs.mean(dim=0)).sum()
        self.last_choice = top_i.detach().view(b, s, self.top_k)
        return out.view(b, s, d)


class Bottleneck(nn.Module):
    """A bottleneck adapter (down -> GELU -> up, up initialised to zero so a new adapter changes nothing)."""

    def __init__(self, d: int, dim: int):
        super().__init__()
        self.down, self.up = nn.Linear(d, dim), nn.Linear(dim, d)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(F.gelu(self.down(x)))


class Block(nn.Module):
    """Pre-norm transformer block; ``adapter`` (None unless personalization adds one) acts on the FF output."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        d, hidden = cfg.d_model, int(cfg.d_model * cfg.mlp_ratio)
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.attn = Attention(cfg)
        self.ff: nn.Module = MoE(d, hidden, cfg.num_experts, cfg.top_k) if cfg.num_experts else MLP(d, hidden)
        self.adapter: Bottleneck | None = None
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = x + self.drop(self.attn(self.ln1(x), mask))
        h = self.ff(self.ln2(x))
        if self.adapter is not None:
            h = h + self.adapter(h)
        return x + self.drop(h)


class PersonalModules(nn.Module):
    """A device's personal prompt tokens and residual classifiers; empty until personalization adds them."""

    def __init__(self) -> None:
        super().__init__()
        self.prompt: nn.Parameter | None = None
        self.heads = nn.ModuleDict()


class TaskHead(nn.Module):
    """A task's learned query token and its classifier over the token's final state."""

    def __init__(self, d: int, num_classes: int):
        super().__init__()
        self.token = nn.Parameter(torch.randn(d) * 0.02)
        self.norm = nn.LayerNorm(d)
        self.proj = nn.Linear(d, num_classes)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.proj(self.norm(h))  # [B, C]


# ---------------------------------------------------------------------------------------------------------------
# tokenizers
class ImageEncoder(nn.Module):
    """Patch tokens of an image plus one fovea token: the crop around where the device points.

    The fovea is cut at the gaze point when the sample has a valid gaze, else at the view centre (head gaze), the
    same rule by which ``object_recognition`` labels are made; grid sampling keeps it differentiable and
    batch-wide.
    """

    def __init__(self, cfg: ModelConfig, in_ch: int):
        super().__init__()
        d, p = cfg.d_model, cfg.patch_px
        self.patch = nn.Conv2d(in_ch, d, kernel_size=p, stride=p)
        self.pos_emb = nn.Parameter(torch.randn(cfg.n_patches, d) * 0.02)
        self.fovea = nn.Linear(in_ch * cfg.fovea_px * cfg.fovea_px, d)
        self.modality_emb = nn.Parameter(torch.randn(d) * 0.02)
        self.fovea_px, self.size = cfg.fovea_px, cfg.image_size_px

    def forward(self, img: torch.Tensor, centre_xy: torch.Tensor) -> torch.Tensor:
        b = img.shape[0]  # img [B, C, S, S] normalised, centre_xy [B, 2] in [-1, 1] (x right, y down)
        tokens = self.patch(img).flatten(2).transpose(1, 2) + self.pos_emb  # [B, P, d]
        f = self.fovea_px
        half = f / self.size  # crop half-width in normalised units
        lin = torch.linspace(-half, half, f, device=img.device, dtype=img.dtype)
        gy, gx = torch.meshgrid(lin, lin, indexing="ij")
        grid = torch.stack([gx, gy], dim=-1)[None] + centre_xy[:, None, None, :]  # [B, f, f, 2]
        crop = F.grid_sample(img, grid, mode="bilinear", padding_mode="border", align_corners=False)
        fov = self.fovea(crop.reshape(b, -1))[:, None]  # [B, 1, d]
        return torch.cat([fov, tokens], dim=1) + self.modality_emb  # [B, 1 + P, d]


class SeriesEncoder(nn.Module):
    """One token from a short window of a time series: an MLP over values, first differences and validity."""

    scale: torch.Tensor  # [n] per-channel input scale (buffer)

    def __init__(self, cfg: ModelConfig, modality: str):
        super().__init__()
        n = SERIES_DIMS[modality]
        self.window = cfg.window
        self.register_buffer("scale", torch.tensor(SERIES_SCALES[modality]), persistent=False)
        self.net = nn.Sequential(nn.Linear(cfg.window * (2 * n + 1), cfg.d_model), nn.GELU(),
                                 nn.Linear(cfg.d_model, cfg.d_model))
        self.modality_emb = nn.Parameter(torch.randn(cfg.d_model) * 0.02)

    def forward(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]  # x [B, W, n], valid [B, W] bool
        v = valid.to(x.dtype)[..., None]
        x = x * self.scale * v
        dx = torch.cat([torch.zeros_like(x[:, :1]), x[:, 1:] - x[:, :-1]], dim=1) * v
        feats = torch.cat([x, dx, v], dim=-1).reshape(b, -1)
        return (self.net(feats) + self.modality_emb)[:, None]  # [B, 1, d]


class AudioEncoder(nn.Module):
    """Log-mel tokens of the channel mean over time, plus one inter-channel level-difference token.

    Channel-count agnostic: devices have 2-6 microphones, so the spectrum is of the mean channel and the spatial
    cue is the level difference between the outermost channels (left and right of the array) per mel band.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        d, m = cfg.d_model, cfg.audio_n_mels
        self.features = AudioFeatures(cfg)
        self.conv = nn.Conv1d(m, d, kernel_size=3, stride=2, padding=1)
        self.proj = nn.Linear(d, d)
        self.ild = nn.Linear(m, d)
        self.time_emb = nn.Parameter(torch.randn(cfg.audio_max_tokens, d) * 0.02)
        self.modality_emb = nn.Parameter(torch.randn(d) * 0.02)
        self.max_tokens = cfg.audio_max_tokens

    def forward(self, audio: torch.Tensor, audio_hz: int) -> torch.Tensor:
        logmel, ild = self.features(audio, audio_hz)  # [B, M, T], [B, M]
        h = F.gelu(self.conv(logmel))  # [B, d, T']
        if h.shape[-1] > self.max_tokens:
            h = F.adaptive_avg_pool1d(h, self.max_tokens)
        t = self.proj(h.transpose(1, 2)) + self.time_emb[: h.shape[-1]]  # [B, T', d]
        return torch.cat([self.ild(ild)[:, None], t], dim=1) + self.modality_emb  # [B, 1 + T', d]


# ---------------------------------------------------------------------------------------------------------------
class M3TModel(nn.Module):
    """The M3T foundation model. ``forward(batch, tasks)`` -> {task: logits [B, num_classes]}."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        enc: dict[str, nn.Module] = {}
        for m in cfg.modalities:
            if m == "rgb":
                enc[m] = ImageEncoder(cfg, 3)
            elif m == "depth":
                enc[m] = ImageEncoder(cfg, 1)
            elif m == "audio":
                enc[m] = AudioEncoder(cfg)
            else:
                enc[m] = SeriesEncoder(cfg, m)
        self.encoders = nn.ModuleDict(enc)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.ln_f = nn.LayerNorm(cfg.d_model)
        self.heads = nn.ModuleDict({t: TaskHead(cfg.d_model, cfg.num_classes(t)) for t in cfg.tasks})
        # personalization modules (agents.personalize): learned prompt tokens, shared and personal
        self.prompt: nn.ParameterDict = nn.ParameterDict()
        self.personal = PersonalModules()
        self.apply(self._init)
        self.last_present: dict[str, torch.Tensor] = {}

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    # -- input pipeline -------------------------------------------------------------------------------------
    def _resize(self, x: torch.Tensor, mode: str) -> torch.Tensor:
        s = self.cfg.image_size_px
        if tuple(x.shape[-2:]) == (s, s):
            return x
        if mode == "nearest":
            return F.interpolate(x, size=(s, s), mode="nearest")
        return F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False, antialias=True)

    def _fovea_centre(self, batch: Mapping[str, Any], b: int, aspect_hw: float) -> torch.Tensor:
        """Gaze point in normalised image coordinates ([-1, 1], x right, y down); the centre without gaze."""
        centre = torch.zeros(b, 2)
        gaze = batch.get("gaze")
        if gaze is None:
            return centre
        g = gaze[:, -1] if gaze.dim() == 3 else gaze  # last step of the window [B, 8]
        ok = _mask(batch, "gaze", b)
        gv = batch.get("gaze_valid")
        if gv is not None:
            ok = ok & (gv[:, -1] if gv.dim() == 2 else gv).bool()
        wv = batch.get("window_valid", {}).get("gaze")
        if wv is not None:
            ok = ok & wv[:, -1].bool()
        fov = batch.get("camera_fov_y_deg")
        fov_y = torch.full((b,), self.cfg.fov_y_deg) if fov is None else torch.as_tensor(fov, dtype=torch.float32)
        fov_y = torch.where(torch.isfinite(fov_y) & (fov_y > 0), fov_y, torch.tensor(self.cfg.fov_y_deg))
        t = torch.tan(torch.deg2rad(fov_y) / 2)
        x = torch.tan(g[:, 0].clamp(-1.4, 1.4)) / t * aspect_hw  # pinhole, square pixels
        y = -torch.tan(g[:, 1].clamp(-1.4, 1.4)) / t
        xy = torch.stack([x, y], dim=-1).clamp(-1, 1)
        return torch.where(ok[:, None], xy, centre)

    def tokenize(self, batch: Mapping[str, Any]) -> tuple[list[torch.Tensor], list[torch.Tensor], list[str]]:
        """Tokens of every modality the batch carries: (token tensors [B, n, d], key masks [B, n], names)."""
        b = _batch_size(batch)
        present = batch.get("present", {})
        toks, masks, names = [], [], []
        aspect = 1.0
        for key in ("rgb", "depth"):
            if key in batch:
                h, w = batch[key].shape[-2:]
                aspect = float(h) / float(w)
                break
        centre: torch.Tensor | None = None
        for m in self.cfg.modalities:
            if m not in batch or m not in present or not bool(torch.as_tensor(present[m]).any()):
                continue  # absent from the whole batch: no tokens at all
            x = batch[m]
            if m in ("rgb", "depth"):
                if centre is None:
                    centre = self._fovea_centre(batch, b, aspect)
                if m == "rgb":
                    img = (self._resize(x.float(), "bilinear") - 0.5) / 0.25
                else:
                    dm = torch.nan_to_num(x.float(), nan=0.0, posinf=self.cfg.depth_max_m).clamp(0, self.cfg.depth_max_m)
                    img = torch.log1p(self._resize(dm, "nearest")) / math.log1p(self.cfg.depth_max_m) * 2 - 1
                t = self.encoders[m](img, centre)
            elif m == "audio":
                t = self.encoders[m](x.float(), _audio_hz(batch, self.cfg.audio_hz))
            else:
                x, valid = self._window(batch, m, x.float(), b)
                t = self.encoders[m](x, valid)
            toks.append(t)
            masks.append(_mask(batch, m, b)[:, None].expand(b, t.shape[1]))
            names.append(m)
        return toks, masks, names

    def _window(self, batch: Mapping[str, Any], m: str, x: torch.Tensor, b: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The last ``window`` rows of a series (left-padded as invalid when the batch window is shorter)."""
        if x.dim() == 2:
            x = x[:, None]
        x = x.reshape(b, x.shape[1], -1)
        valid = batch.get("window_valid", {}).get(m)
        valid = torch.ones(x.shape[:2], dtype=torch.bool) if valid is None else valid.bool().reshape(b, -1)
        w = self.cfg.window
        if x.shape[1] >= w:
            return x[:, -w:], valid[:, -w:]
        pad = w - x.shape[1]
        return (torch.cat([x.new_zeros(b, pad, x.shape[2]), x], dim=1),
                torch.cat([valid.new_zeros(b, pad), valid], dim=1))

    # -- forward ------------------------------------------------------------------------------------------
    def check_tasks(self, tasks: Sequence[str] | None) -> tuple[str, ...]:
        tasks = tuple(self.cfg.tasks if tasks is None else tasks)
        for t in tasks:
            if t not in self.heads:
                raise UnknownTaskError(t, self.cfg.tasks)
        return tasks

    def forward(self, batch: Mapping[str, Any], tasks: Sequence[str] | None = None,
                drop_modalities: bool | None = None) -> dict[str, torch.Tensor]:
        """Logits per task. Training mode applies modality dropout unless ``drop_modalities`` is False."""
        tasks = self.check_tasks(tasks)
        toks, masks, names = self.tokenize(batch)
        if not toks:
            raise EmptyFrameError("the batch carries none of the model's modalities "
                                  f"{list(self.cfg.modalities)}; present: "
                                  f"{[m for m, v in batch.get('present', {}).items() if bool(torch.as_tensor(v).any())]}")
        b = toks[0].shape[0]
        if (self.training if drop_modalities is None else drop_modalities) and self.cfg.modality_dropout > 0:
            masks = _modality_dropout(masks, self.cfg.modality_dropout)
        self.last_present = {n: mk[:, 0] for n, mk in zip(names, masks, strict=True)}
        task_tok = torch.stack([cast(TaskHead, self.heads[t]).token for t in tasks])[None].expand(b, -1, -1)
        extra = [p for p in self.prompt.values()]
        if self.personal.prompt is not None:
            extra.append(self.personal.prompt)
        prompts = [p[None].expand(b, -1, -1) for p in extra]
        x = torch.cat([task_tok, *prompts, *toks], dim=1)  # [B, S, d]
        n_task, n_prompt = len(tasks), sum(p.shape[1] for p in prompts)
        key_ok = torch.cat([torch.zeros(b, n_task, dtype=torch.bool), torch.ones(b, n_prompt, dtype=torch.bool),
                            *masks], dim=1)  # [B, S]
        s = x.shape[1]
        mask = (key_ok[:, None, :] | torch.eye(s, dtype=torch.bool)[None])[:, None]  # [B, 1, S, S]
        for blk in self.blocks:
            x = blk(x, mask)
        x = self.ln_f(x[:, :n_task])  # [B, T, d]
        out = {t: self.heads[t](x[:, i]) for i, t in enumerate(tasks)}
        for i, t in enumerate(tasks):  # personal residual classifiers (agents.personalize)
            if t in self.personal.heads:
                out[t] = out[t] + self.personal.heads[t](x[:, i])
        return out

    def sample_has_input(self) -> torch.Tensor:
        """[B] bool: which samples of the last forward had at least one modality token."""
        if not self.last_present:
            return torch.zeros(0, dtype=torch.bool)
        return torch.stack(list(self.last_present.values()), dim=1).any(dim=1)

    def moe_aux_loss(self) -> torch.Tensor:
        losses = [blk.ff.aux_loss for blk in self.blocks if isinstance(blk.ff, MoE)]
        return torch.stack(losses).mean() if losses else torch.zeros(())

    def experts_activated(self, tasks: Sequence[str]) -> dict[str, float]:
        """Per task, the mean number of distinct experts its task token used per layer in the last forward."""
        moes = [blk.ff for blk in self.blocks if isinstance(blk.ff, MoE)]
        if not moes:
            return {}
        out = {}
        for i, t in enumerate(tasks):
            used = [len(torch.unique(m.last_choice[:, i])) for m in moes if m.last_choice is not None]
            out[t] = float(sum(used) / len(used)) if used else 0.0
        return out

    def num_parameters(self, trainable_only: bool = False) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)


def _batch_size(batch: Mapping[str, Any]) -> int:
    for v in batch.get("present", {}).values():
        return int(torch.as_tensor(v).reshape(-1).shape[0])
    for v in batch.get("labels", {}).values():
        return int(v.shape[0])
    raise EmptyFrameError("the batch has no presence masks: expected the layout of bridge.dataset.collate_frames")


def _audio_hz(batch: Mapping[str, Any], default: int) -> int:
    """The batch's audio rate (an int, or a [B] tensor whose entries must agree); the model rate if absent."""
    hz = batch.get("audio_hz")
    if hz is None:
        return default
    t = torch.as_tensor(hz).reshape(-1)
    if t.numel() > 1 and not bool((t == t[0]).all()):
        raise EmptyFrameError(f"one batch mixes audio rates {sorted(set(t.tolist()))}; batch per device")
    return int(t[0])


def _mask(batch: Mapping[str, Any], m: str, b: int) -> torch.Tensor:
    p = batch.get("present", {}).get(m)
    if p is None:
        return torch.zeros(b, dtype=torch.bool)
    return torch.as_tensor(p).reshape(b).bool()


def _modality_dropout(masks: list[torch.Tensor], p: float) -> list[torch.Tensor]:
    """Drop each present modality of each sample with probability ``p``, keeping at least one per sample."""
    pres = torch.stack([mk[:, 0] for mk in masks], dim=1)  # [B, M]
    keep = pres & (torch.rand(pres.shape) >= p)
    lost = pres.any(dim=1) & ~keep.any(dim=1)
    if lost.any():  # give back one random present modality
        score = torch.rand(pres.shape).masked_fill(~pres, -1.0)
        pick = F.one_hot(score.argmax(dim=1), pres.shape[1]).bool()
        keep = torch.where(lost[:, None], pick, keep)
    return [mk & keep[:, i:i + 1] for i, mk in enumerate(masks)]
