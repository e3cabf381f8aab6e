"""The pretrained networks behind the paper's metrics, re-implemented so their public
checkpoints load unchanged (torchvision/timm/open_clip are not needed).

=================  =========================================  =========================================
network            public checkpoint (what the loaders take)   used by
=================  =========================================  =========================================
DINO ViT-B/16      ``dino_vitbase16_pretrain.pth`` (facebook-  I2V subject consistency (``video.py``)
                   research/dino) or HF ``facebook/dino-vitb16``
CLIP ViT-L/14      HF ``openai/clip-vit-large-patch14``        aesthetic quality, CLIP-O/F/C
LAION aesthetic    ``sa_0_4_vit_l_14_linear.pth`` (LAION-AI/   aesthetic quality
head               aesthetic-predictor, a 768->1 linear)
AMT-S              ``amt-s.pth`` (MCG-NKU/AMT; VBench's        motion smoothness
                   ``pretrained/amt_model/amt-s.pth``)
RAFT               ``raft-things.pth`` (princeton-vl/RAFT)     dynamic degree
=================  =========================================  =========================================

Every loader takes a local file/folder or a Hugging Face id (``repo_id`` or
``repo_id::filename``) and raises ``WeightsNotFound`` naming the file and how to get it when it is
absent. Module and parameter names follow the original code so ``load_state_dict`` is strict.
Tests build the same architectures with random weights (and small widths where a config allows).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence, TypeVar

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..tracking.convblocks import ResidualBlock
from ..tracking.convblocks import norm_layer as _norm

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class WeightsNotFound(FileNotFoundError):
    """A metric's checkpoint is missing; the message names the file and where to get it."""


# ---------------------------------------------------------------------------------------------
# weight resolution


def resolve_weight_file(source: str | Path, default_filenames: Sequence[str], what: str, how_to_get: str) -> Path:
    """Local file, a folder holding one of ``default_filenames``, or a HF id (``repo::file``)."""
    path = Path(str(source)).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        for name in default_filenames:
            if (path / name).is_file():
                return path / name
        raise WeightsNotFound(f"{what}: none of {list(default_filenames)} is in folder {path}. {how_to_get}")
    text = str(source)
    if "::" in text:
        repo_id, _, filename = text.partition("::")
    elif text.count("/") == 1 and not text.startswith((".", "/", "~")) and "." not in Path(text).name:
        repo_id, filename = text, ""
    else:
        raise WeightsNotFound(f"{what}: weight file {text} does not exist. {how_to_get}")
    names = [filename] if filename else list(default_filenames)
    from huggingface_hub import hf_hub_download

    errors = []
    for name in names:
        try:
            return Path(hf_hub_download(repo_id, name))
        except Exception as exc:  # offline, missing repo/file, no auth: all mean "not available"
            errors.append(f"{name}: {type(exc).__name__}")
    raise WeightsNotFound(
        f"{what}: could not get {names} from the Hugging Face Hub repo {repo_id} ({'; '.join(errors)}). {how_to_get}"
    )


def load_state_dict_file(path: Path) -> dict[str, torch.Tensor]:
    """Read a .safetensors or torch checkpoint and unwrap ``state_dict``/``model``/``module.``."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        sd = load_file(str(path))
    else:
        sd = torch.load(str(path), map_location="cpu", weights_only=True)
    for key in ("state_dict", "model", "teacher"):
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
    return {k.removeprefix("module.").removeprefix("backbone."): v for k, v in sd.items()}


_M = TypeVar("_M", bound=nn.Module)


def _load_strict(
    build: Callable[[], _M], source: str | Path, filenames: Sequence[str], what: str, how_to_get: str,
    device: str | torch.device,
) -> _M:
    """Checkpoints whose keys already match our module names: find the file (before building the
    network, so a missing file fails fast), load strictly, move to ``device`` in eval mode."""
    path = resolve_weight_file(source, filenames, what, how_to_get)
    model = build()
    model.load_state_dict(load_state_dict_file(path), strict=True)
    return model.to(device).eval()


# ---------------------------------------------------------------------------------------------
# image preprocessing (torchvision-free)


def resize_shorter(x: torch.Tensor, size: int, mode: str = "bicubic", antialias: bool = False) -> torch.Tensor:
    """Resize [B,C,H,W] so the shorter side is ``size`` (torchvision's Resize(int) on tensors).

    ``antialias=False`` by default because VBench's tensor transforms pass ``antialias=False``.
    """
    h, w = x.shape[-2:]
    nh, nw = (size, max(1, int(size * w / h))) if h <= w else (max(1, int(size * h / w)), size)
    if (nh, nw) == (h, w):
        return x
    return F.interpolate(x, size=(nh, nw), mode=mode, align_corners=False, antialias=antialias)


def center_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    h, w = x.shape[-2:]
    top, left = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
    return x[..., top : top + size, left : left + size]


def normalize(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return (x - m) / s


# ---------------------------------------------------------------------------------------------
# DINO ViT (facebookresearch/dino vision_transformer.py names)


@dataclass
class ViTConfig:
    image_size: int = 224
    patch_size: int = 16
    dim: int = 768
    depth: int = 12
    heads: int = 12
    mlp_ratio: float = 4.0
    eps: float = 1e-6


class _Attention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class _Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class _Block(nn.Module):
    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.dim, eps=cfg.eps)
        self.attn = _Attention(cfg.dim, cfg.heads)
        self.norm2 = nn.LayerNorm(cfg.dim, eps=cfg.eps)
        self.mlp = _Mlp(cfg.dim, int(cfg.dim * cfg.mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class _PatchEmbed(nn.Module):
    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, cfg.dim, cfg.patch_size, cfg.patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class DinoViT(nn.Module):
    """DINO's ViT; ``forward`` returns the final-norm CLS token [B, dim] (the DINO feature).

    Input: ImageNet-normalised images [B,3,H,W]; other sizes than 224 interpolate the position
    embedding bicubically, as DINO does.
    """

    def __init__(self, cfg: ViTConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg = cfg or ViTConfig()
        n = (cfg.image_size // cfg.patch_size) ** 2
        self.patch_embed = _PatchEmbed(cfg)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.dim))
        self.pos_embed = nn.Parameter(torch.randn(1, n + 1, cfg.dim) * 0.02)
        self.blocks = nn.ModuleList([_Block(cfg) for _ in range(cfg.depth)])
        self.norm = nn.LayerNorm(cfg.dim, eps=cfg.eps)
        nn.init.normal_(self.cls_token, std=0.02)

    def _pos(self, h: int, w: int) -> torch.Tensor:
        gh, gw = h // self.cfg.patch_size, w // self.cfg.patch_size
        n0 = self.pos_embed.shape[1] - 1
        if gh * gw == n0 and gh == gw:
            return self.pos_embed
        s = int(math.sqrt(n0))
        grid = self.pos_embed[:, 1:].reshape(1, s, s, -1).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, size=(gh, gw), mode="bicubic", align_corners=False)
        return torch.cat([self.pos_embed[:, :1], grid.flatten(2).transpose(1, 2)], 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.patch_embed(x)
        tokens = torch.cat([self.cls_token.expand(len(x), -1, -1), tokens], 1) + self._pos(*x.shape[-2:])
        for blk in self.blocks:
            tokens = blk(tokens)
        return self.norm(tokens)[:, 0]


def convert_hf_vit(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """transformers ``ViTModel`` names -> DINO's names.

    Handles the hub files' layout (``encoder.layer.N.attention.attention.query``, what
    ``facebook/dino-vitb16`` stores) and transformers >= 5's in-memory layout
    (``layers.N.attention.q_proj``); DINO-named dicts pass through unchanged.
    """
    sd = {k.removeprefix("vit."): v for k, v in sd.items()}
    if "cls_token" in sd:
        return sd
    out = {
        "cls_token": sd["embeddings.cls_token"],
        "pos_embed": sd["embeddings.position_embeddings"],
        "patch_embed.proj.weight": sd["embeddings.patch_embeddings.projection.weight"],
        "patch_embed.proj.bias": sd["embeddings.patch_embeddings.projection.bias"],
        "norm.weight": sd["layernorm.weight"],
        "norm.bias": sd["layernorm.bias"],
    }
    old = {"q": "attention.attention.query", "k": "attention.attention.key", "v": "attention.attention.value",
           "o": "attention.output.dense", "fc1": "intermediate.dense", "fc2": "output.dense"}
    new = {"q": "attention.q_proj", "k": "attention.k_proj", "v": "attention.v_proj",
           "o": "attention.o_proj", "fc1": "mlp.fc1", "fc2": "mlp.fc2"}
    i = 0
    while True:
        if f"encoder.layer.{i}.attention.attention.query.weight" in sd:
            p, names = f"encoder.layer.{i}.", old
        elif f"layers.{i}.attention.q_proj.weight" in sd:
            p, names = f"layers.{i}.", new
        else:
            break
        q = f"blocks.{i}."
        for t in ("weight", "bias"):
            out[q + f"attn.qkv.{t}"] = torch.cat([sd[p + f"{names[n]}.{t}"] for n in ("q", "k", "v")])
            out[q + f"attn.proj.{t}"] = sd[p + f"{names['o']}.{t}"]
            out[q + f"norm1.{t}"] = sd[p + f"layernorm_before.{t}"]
            out[q + f"norm2.{t}"] = sd[p + f"layernorm_after.{t}"]
            out[q + f"mlp.fc1.{t}"] = sd[p + f"{names['fc1']}.{t}"]
            out[q + f"mlp.fc2.{t}"] = sd[p + f"{names['fc2']}.{t}"]
        i += 1
    return out


DINO_HOW = ("Download dino_vitbase16_pretrain.pth from https://dl.fbaipublicfiles.com/dino/dino_vitbase16_pretrain/"
            "dino_vitbase16_pretrain.pth (or use the HF id facebook/dino-vitb16) and pass its path with --dino.")


def load_dino(source: str | Path = "facebook/dino-vitb16", device: str | torch.device = "cpu") -> DinoViT:
    path = resolve_weight_file(source, ["dino_vitbase16_pretrain.pth", "model.safetensors", "pytorch_model.bin"], "DINO ViT-B/16", DINO_HOW)
    model = DinoViT(ViTConfig())
    sd = convert_hf_vit(load_state_dict_file(path))
    sd = {k: v for k, v in sd.items() if not k.startswith(("head.", "pooler."))}
    model.load_state_dict(sd, strict=True)
    return model.to(device).eval()


def dino_preprocess(frames: torch.Tensor) -> torch.Tensor:
    """[B,3,H,W] in [0,1] -> 256 bicubic (shorter side) -> centre crop 224 -> ImageNet norm."""
    return normalize(center_crop(resize_shorter(frames, 256), 224), IMAGENET_MEAN, IMAGENET_STD)


# ---------------------------------------------------------------------------------------------
# CLIP ViT-L/14 (transformers) + LAION aesthetic head


class ClipEncoder(nn.Module):
    """CLIP image/text embeddings (unit-normalised) around a transformers ``CLIPModel``.

    ``tokenizer(list[str]) -> LongTensor [B, L]`` is injected: the real one is the checkpoint's
    ``CLIPTokenizer`` (``load_clip`` sets it); tests pass a tiny character tokenizer.
    """

    def __init__(self, model: nn.Module, tokenizer: Callable[[list[str]], torch.Tensor] | None = None) -> None:
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.image_size = int(model.config.vision_config.image_size)

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """[B,3,H,W] in [0,1] -> shorter side 224 bicubic -> centre crop -> CLIP norm."""
        s = self.image_size
        return normalize(center_crop(resize_shorter(images, s), s), CLIP_MEAN, CLIP_STD)

    @staticmethod
    def _features(out) -> torch.Tensor:
        # transformers >= 5 may return a model output instead of a tensor
        return out if isinstance(out, torch.Tensor) else out.pooler_output

    @torch.no_grad()
    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        x = self.preprocess(images.float())
        return F.normalize(self._features(self.model.get_image_features(pixel_values=x)).float(), dim=-1)

    @torch.no_grad()
    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        if self.tokenizer is None:
            raise ValueError("this CLIP encoder has no tokenizer; load it with load_clip() or pass tokenizer=")
        ids = self.tokenizer(list(texts)).to(next(self.model.parameters()).device)
        return F.normalize(self._features(self.model.get_text_features(input_ids=ids)).float(), dim=-1)


CLIP_HOW = ("Download the Hugging Face model openai/clip-vit-large-patch14 (huggingface-cli download "
            "openai/clip-vit-large-patch14) or pass a local folder with its config.json and weights via --clip.")


def load_clip(source: str | Path = "openai/clip-vit-large-patch14", device: str | torch.device = "cpu") -> ClipEncoder:
    from transformers import CLIPModel, CLIPTokenizer

    try:
        model = CLIPModel.from_pretrained(str(source))
    except (OSError, ValueError) as exc:
        raise WeightsNotFound(f"CLIP: cannot load {source} ({type(exc).__name__}: {str(exc)[:200]}). {CLIP_HOW}") from exc
    try:
        tok = CLIPTokenizer.from_pretrained(str(source))
    except (OSError, ValueError, TypeError):
        tok = None  # image-only use still works; encode_texts says what is missing

    def tokenize(texts: list[str]) -> torch.Tensor:
        if tok is None:
            raise WeightsNotFound(f"CLIP: {source} has no tokenizer files (vocab.json, merges.txt); text metrics need them. {CLIP_HOW}")
        return tok(texts, padding="max_length", truncation=True, max_length=int(model.config.text_config.max_position_embeddings),
                   return_tensors="pt")["input_ids"]

    return ClipEncoder(model.to(device).eval(), tokenize)


class AestheticHead(nn.Module):
    """LAION aesthetic predictor v1: a linear layer on the unit CLIP ViT-L/14 image embedding."""

    def __init__(self, dim: int = 768) -> None:
        super().__init__()
        self.linear = nn.Linear(dim, 1)

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        return self.linear(emb).squeeze(-1)


AESTHETIC_HOW = ("Download sa_0_4_vit_l_14_linear.pth from https://github.com/LAION-AI/aesthetic-predictor "
                 "(raw file) and pass its path with --aesthetic.")


def load_aesthetic(source: str | Path, device: str | torch.device = "cpu") -> AestheticHead:
    path = resolve_weight_file(source, ["sa_0_4_vit_l_14_linear.pth"], "LAION aesthetic head", AESTHETIC_HOW)
    sd = load_state_dict_file(path)
    head = AestheticHead(int(sd["weight"].shape[1]))
    head.linear.load_state_dict(sd, strict=True)
    return head.to(device).eval()


# ---------------------------------------------------------------------------------------------
# shared flow helpers (RAFT conventions)


def coords_grid(batch: int, h: int, w: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """[B,2,H,W] pixel coordinates, channel 0 = x."""
    ys, xs = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij")
    return torch.stack([xs, ys]).float()[None].repeat(batch, 1, 1, 1)


def bilinear_sampler(img: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """Sample img [N,C,H,W] at pixel coords [N,h,w,2] (x, y), zeros outside (RAFT)."""
    h, w = img.shape[-2:]
    x, y = coords.split(1, dim=-1)
    # a 1-pixel pyramid level (inputs of 64 px) divides by zero in the original; max(., 1) keeps
    # it finite and changes nothing for larger levels
    grid = torch.cat([2 * x / max(w - 1, 1) - 1, 2 * y / max(h - 1, 1) - 1], -1)
    return F.grid_sample(img, grid, align_corners=True)


def backward_warp(img: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Warp img [B,C,H,W] by flow [B,2,H,W] (pixels), border padding (AMT's ``warp``)."""
    b, _, h, w = flow.shape
    xs = torch.linspace(-1.0, 1.0, w, device=flow.device).view(1, 1, 1, w).expand(b, -1, h, -1)
    ys = torch.linspace(-1.0, 1.0, h, device=flow.device).view(1, 1, h, 1).expand(b, -1, -1, w)
    grid = torch.cat([xs, ys], 1).to(img)
    f = torch.cat([flow[:, :1] / ((w - 1.0) / 2.0), flow[:, 1:2] / ((h - 1.0) / 2.0)], 1)
    return F.grid_sample(img, (grid + f).permute(0, 2, 3, 1), mode="bilinear", padding_mode="border", align_corners=True)


def resize(x: torch.Tensor, scale_factor: float) -> torch.Tensor:
    return F.interpolate(x, scale_factor=scale_factor, mode="bilinear", align_corners=False)


class InputPadder:
    """Replicate-pad [B,C,H,W] images to a multiple of ``divisor`` (centred) and undo it."""

    def __init__(self, shape: Sequence[int], divisor: int) -> None:
        h, w = shape[-2:]
        ph = (((h // divisor) + 1) * divisor - h) % divisor
        pw = (((w // divisor) + 1) * divisor - w) % divisor
        self.pads = [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2]

    def pad(self, *xs: torch.Tensor) -> list[torch.Tensor]:
        return [F.pad(x, self.pads, mode="replicate") for x in xs]

    def unpad(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        l, r, t, b = self.pads
        return x[..., t : h - b, l : w - r]


class BottleneckBlock(nn.Module):
    def __init__(self, cin: int, cout: int, norm: str, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout // 4, 1)
        self.conv2 = nn.Conv2d(cout // 4, cout // 4, 3, padding=1, stride=stride)
        self.conv3 = nn.Conv2d(cout // 4, cout, 1)
        self.relu = nn.ReLU(inplace=True)
        self.norm1, self.norm2, self.norm3 = _norm(norm, cout // 4), _norm(norm, cout // 4), _norm(norm, cout)
        self.downsample = None
        if stride != 1:
            self.norm4 = _norm(norm, cout)
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride), self.norm4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu(self.norm1(self.conv1(x)))
        y = self.relu(self.norm2(self.conv2(y)))
        y = self.relu(self.norm3(self.conv3(y)))
        if self.downsample is not None:
            x = self.downsample(x)
        return self.relu(x + y)


class FeatureEncoder(nn.Module):
    """RAFT's BasicEncoder (ResidualBlock) or AMT's SmallEncoder (BottleneckBlock): 1/8 resolution."""

    def __init__(self, output_dim: int, norm: str, widths: Sequence[int], block: type[nn.Module]) -> None:
        super().__init__()
        self.norm1 = _norm(norm, widths[0])
        self.conv1 = nn.Conv2d(3, widths[0], 7, stride=2, padding=3)
        self.relu1 = nn.ReLU(inplace=True)
        layers, cin = [], widths[0]
        for i, w in enumerate(widths[1:]):
            layers.append(nn.Sequential(block(cin, w, norm, stride=1 if i == 0 else 2), block(w, w, norm, 1)))
            cin = w
        self.layer1, self.layer2, self.layer3 = layers
        self.conv2 = nn.Conv2d(cin, output_dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu1(self.norm1(self.conv1(x)))
        return self.conv2(self.layer3(self.layer2(self.layer1(x))))


# ---------------------------------------------------------------------------------------------
# RAFT (princeton-vl/RAFT core/raft.py names; the full, non-"small" model)


class CorrBlock:
    """All-pairs correlation pyramid with radius-r lookups (RAFT)."""

    def __init__(self, fmap1: torch.Tensor, fmap2: torch.Tensor, num_levels: int = 4, radius: int = 4) -> None:
        self.num_levels, self.radius = num_levels, radius
        b, d, h, w = fmap1.shape
        corr = torch.matmul(fmap1.view(b, d, h * w).transpose(1, 2), fmap2.view(b, d, h * w)) / math.sqrt(d)
        corr = corr.reshape(b * h * w, 1, h, w)
        self.pyramid = [corr]
        for _ in range(num_levels - 1):
            corr = F.avg_pool2d(corr, 2, stride=2)
            self.pyramid.append(corr)

    def __call__(self, coords: torch.Tensor) -> torch.Tensor:
        r = self.radius
        coords = coords.permute(0, 2, 3, 1)
        b, h, w, _ = coords.shape
        d = torch.linspace(-r, r, 2 * r + 1, device=coords.device)
        # RAFT stacks meshgrid(dy, dx) and adds it to (x, y); kept as is so trained weights fit
        delta = torch.stack(torch.meshgrid(d, d, indexing="ij"), -1).view(1, 2 * r + 1, 2 * r + 1, 2)
        out = []
        for i, corr in enumerate(self.pyramid):
            centroid = coords.reshape(b * h * w, 1, 1, 2) / 2**i
            out.append(bilinear_sampler(corr, centroid + delta).view(b, h, w, -1))
        return torch.cat(out, -1).permute(0, 3, 1, 2).contiguous().float()


class _MotionEncoder(nn.Module):
    def __init__(self, corr_levels: int, radius: int) -> None:
        super().__init__()
        planes = corr_levels * (2 * radius + 1) ** 2
        self.convc1 = nn.Conv2d(planes, 256, 1)
        self.convc2 = nn.Conv2d(256, 192, 3, padding=1)
        self.convf1 = nn.Conv2d(2, 128, 7, padding=3)
        self.convf2 = nn.Conv2d(128, 64, 3, padding=1)
        self.conv = nn.Conv2d(64 + 192, 128 - 2, 3, padding=1)

    def forward(self, flow: torch.Tensor, corr: torch.Tensor) -> torch.Tensor:
        cor = F.relu(self.convc2(F.relu(self.convc1(corr))))
        flo = F.relu(self.convf2(F.relu(self.convf1(flow))))
        return torch.cat([F.relu(self.conv(torch.cat([cor, flo], 1))), flow], 1)


class _SepConvGRU(nn.Module):
    def __init__(self, hidden: int = 128, inp: int = 256) -> None:
        super().__init__()
        for s, k, p in (("1", (1, 5), (0, 2)), ("2", (5, 1), (2, 0))):
            for g in "zrq":
                setattr(self, f"conv{g}{s}", nn.Conv2d(hidden + inp, hidden, k, padding=p))

    def forward(self, h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        for s in "12":
            hx = torch.cat([h, x], 1)
            z = torch.sigmoid(getattr(self, f"convz{s}")(hx))
            r = torch.sigmoid(getattr(self, f"convr{s}")(hx))
            q = torch.tanh(getattr(self, f"convq{s}")(torch.cat([r * h, x], 1)))
            h = (1 - z) * h + z * q
        return h


class _FlowHead(nn.Module):
    def __init__(self, cin: int = 128, hidden: int = 256) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, hidden, 3, padding=1)
        self.conv2 = nn.Conv2d(hidden, 2, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(F.relu(self.conv1(x)))


class _UpdateBlock(nn.Module):
    def __init__(self, corr_levels: int, radius: int, hidden: int = 128) -> None:
        super().__init__()
        self.encoder = _MotionEncoder(corr_levels, radius)
        self.gru = _SepConvGRU(hidden, 128 + hidden)
        self.flow_head = _FlowHead(hidden, 256)
        self.mask = nn.Sequential(nn.Conv2d(hidden, 256, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(256, 64 * 9, 1))

    def forward(self, net, inp, corr, flow):
        net = self.gru(net, torch.cat([inp, self.encoder(flow, corr)], 1))
        return net, 0.25 * self.mask(net), self.flow_head(net)


class RAFT(nn.Module):
    """RAFT optical flow. ``forward(img1, img2)`` takes [B,3,H,W] in 0..255 (H, W multiples of 8)
    and returns the full-resolution flow [B,2,H,W] from img1 to img2 after ``iters`` updates."""

    def __init__(self, corr_levels: int = 4, corr_radius: int = 4) -> None:
        super().__init__()
        self.hidden_dim = self.context_dim = 128
        self.corr_levels, self.corr_radius = corr_levels, corr_radius
        self.fnet = FeatureEncoder(256, "instance", [64, 64, 96, 128], ResidualBlock)
        self.cnet = FeatureEncoder(256, "batch", [64, 64, 96, 128], ResidualBlock)
        self.update_block = _UpdateBlock(corr_levels, corr_radius, self.hidden_dim)

    @staticmethod
    def upsample_flow(flow: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        n, _, h, w = flow.shape
        mask = torch.softmax(mask.view(n, 1, 9, 8, 8, h, w), dim=2)
        up = F.unfold(8 * flow, [3, 3], padding=1).view(n, 2, 9, 1, 1, h, w)
        up = torch.sum(mask * up, dim=2).permute(0, 1, 4, 2, 5, 3)
        return up.reshape(n, 2, 8 * h, 8 * w)

    def forward(self, image1: torch.Tensor, image2: torch.Tensor, iters: int = 20) -> torch.Tensor:
        image1 = 2 * (image1 / 255.0) - 1.0
        image2 = 2 * (image2 / 255.0) - 1.0
        fmaps = self.fnet(torch.cat([image1, image2])).float()
        fmap1, fmap2 = fmaps.chunk(2)
        corr_fn = CorrBlock(fmap1, fmap2, self.corr_levels, self.corr_radius)
        net, inp = torch.split(self.cnet(image1), [self.hidden_dim, self.context_dim], dim=1)
        net, inp = torch.tanh(net), torch.relu(inp)
        b, _, h, w = image1.shape
        coords0 = coords_grid(b, h // 8, w // 8, image1.device)
        coords1 = coords0.clone()
        flow_up = None
        for _ in range(iters):
            corr = corr_fn(coords1)
            net, up_mask, delta = self.update_block(net, inp, corr, coords1 - coords0)
            coords1 = coords1 + delta
        flow_up = self.upsample_flow(coords1 - coords0, up_mask)
        return flow_up


RAFT_HOW = ("Download raft-things.pth (princeton-vl/RAFT models.zip, or VBench's pretrained/raft_model/models/"
            "raft-things.pth) and pass its path with --raft.")


def load_raft(source: str | Path, device: str | torch.device = "cpu") -> RAFT:
    return _load_strict(RAFT, source, ["raft-things.pth"], "RAFT", RAFT_HOW, device)


# ---------------------------------------------------------------------------------------------
# AMT-S (MCG-NKU/AMT networks/AMT-S.py names)


def _convrelu(cin: int, cout: int, k: int = 3, s: int = 1, p: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, s, p), nn.PReLU(cout))


class _AmtResBlock(nn.Module):
    """IFRNet's residual block: the last ``side`` channels get an extra conv in between."""

    def __init__(self, ch: int, side: int) -> None:
        super().__init__()
        self.side = side
        self.conv1 = nn.Sequential(nn.Conv2d(ch, ch, 3, 1, 1), nn.PReLU(ch))
        self.conv2 = nn.Sequential(nn.Conv2d(side, side, 3, 1, 1), nn.PReLU(side))
        self.conv3 = nn.Sequential(nn.Conv2d(ch, ch, 3, 1, 1), nn.PReLU(ch))
        self.conv4 = nn.Sequential(nn.Conv2d(side, side, 3, 1, 1), nn.PReLU(side))
        self.conv5 = nn.Conv2d(ch, ch, 3, 1, 1)
        self.prelu = nn.PReLU(ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(x)
        out = self.conv3(torch.cat([out[:, : -self.side], self.conv2(out[:, -self.side :])], 1))
        out = self.conv5(torch.cat([out[:, : -self.side], self.conv4(out[:, -self.side :])], 1))
        return self.prelu(x + out)


class _AmtPyramid(nn.Module):
    def __init__(self, channels: Sequence[int]) -> None:
        super().__init__()
        prev = 3
        self.n = len(channels)
        for i, ch in enumerate(channels, 1):
            self.add_module(f"pyramid{i}", nn.Sequential(_convrelu(prev, ch, 3, 2, 1), _convrelu(ch, ch, 3, 1, 1)))
            prev = ch

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        fs = []
        for i in range(1, self.n + 1):
            x = getattr(self, f"pyramid{i}")(x)
            fs.append(x)
        return fs


class _InitDecoder(nn.Module):
    def __init__(self, cin: int, cout: int, skip: int) -> None:
        super().__init__()
        self.convblock = nn.Sequential(_convrelu(cin * 2 + 1, cin * 2), _AmtResBlock(cin * 2, skip), nn.ConvTranspose2d(cin * 2, cout + 4, 4, 2, 1))

    def forward(self, f0, f1, embt):
        h, w = f0.shape[2:]
        out = self.convblock(torch.cat([f0, f1, embt.repeat(1, 1, h, w)], 1))
        flow0, flow1 = torch.chunk(out[:, :4], 2, 1)
        return flow0, flow1, out[:, 4:]


class _IntermediateDecoder(nn.Module):
    def __init__(self, cin: int, cout: int, skip: int) -> None:
        super().__init__()
        self.convblock = nn.Sequential(_convrelu(cin * 3 + 4, cin * 3), _AmtResBlock(cin * 3, skip), nn.ConvTranspose2d(cin * 3, cout + 4, 4, 2, 1))

    def forward(self, ft, f0, f1, flow0_in, flow1_in):
        out = self.convblock(torch.cat([ft, backward_warp(f0, flow0_in), backward_warp(f1, flow1_in), flow0_in, flow1_in], 1))
        flow0, flow1 = torch.chunk(out[:, :4], 2, 1)
        flow0 = flow0 + 2.0 * resize(flow0_in, 2.0)
        flow1 = flow1 + 2.0 * resize(flow1_in, 2.0)
        return flow0, flow1, out[:, 4:]


class _MultiFlowDecoder(nn.Module):
    def __init__(self, cin: int, skip: int, num_flows: int) -> None:
        super().__init__()
        self.num_flows = num_flows
        self.convblock = nn.Sequential(_convrelu(cin * 3 + 4, cin * 3), _AmtResBlock(cin * 3, skip), nn.ConvTranspose2d(cin * 3, 8 * num_flows, 4, 2, 1))

    def forward(self, ft, f0, f1, flow0, flow1):
        n = self.num_flows
        out = self.convblock(torch.cat([ft, backward_warp(f0, flow0), backward_warp(f1, flow1), flow0, flow1], 1))
        d0, d1, mask, img_res = torch.split(out, [2 * n, 2 * n, n, 3 * n], 1)
        flow0 = d0 + 2.0 * resize(flow0, 2.0).repeat(1, n, 1, 1)
        flow1 = d1 + 2.0 * resize(flow1, 2.0).repeat(1, n, 1, 1)
        return flow0, flow1, torch.sigmoid(mask), img_res


class _SmallUpdateBlock(nn.Module):
    def __init__(self, cdim: int, hidden: int, flow_dim: int, corr_dim: int, fc_dim: int, corr_levels: int, radius: int, scale_factor: int | None) -> None:
        super().__init__()
        planes = corr_levels * (2 * radius + 1) ** 2
        self.scale_factor = scale_factor
        self.convc1 = nn.Conv2d(2 * planes, corr_dim, 1)
        self.convf1 = nn.Conv2d(4, flow_dim * 2, 7, padding=3)
        self.convf2 = nn.Conv2d(flow_dim * 2, flow_dim, 3, padding=1)
        self.conv = nn.Conv2d(corr_dim + flow_dim, fc_dim, 3, padding=1)
        self.gru = nn.Sequential(nn.Conv2d(fc_dim + 4 + cdim, hidden, 3, padding=1), nn.LeakyReLU(0.1, inplace=True), nn.Conv2d(hidden, hidden, 3, padding=1))
        self.feat_head = nn.Sequential(nn.Conv2d(hidden, hidden, 3, padding=1), nn.LeakyReLU(0.1, inplace=True), nn.Conv2d(hidden, cdim, 3, padding=1))
        self.flow_head = nn.Sequential(nn.Conv2d(hidden, hidden, 3, padding=1), nn.LeakyReLU(0.1, inplace=True), nn.Conv2d(hidden, 4, 3, padding=1))
        self.lrelu = nn.LeakyReLU(0.1, inplace=True)

    def forward(self, net, flow, corr):
        if self.scale_factor is not None:
            net = resize(net, 1 / self.scale_factor)
        cor = self.lrelu(self.convc1(corr))
        flo = self.lrelu(self.convf2(self.lrelu(self.convf1(flow))))
        inp = torch.cat([self.lrelu(self.conv(torch.cat([cor, flo], 1))), flow, net], 1)
        out = self.gru(inp)
        delta_net, delta_flow = self.feat_head(out), self.flow_head(out)
        if self.scale_factor is not None:
            delta_net = resize(delta_net, self.scale_factor)
            delta_flow = self.scale_factor * resize(delta_flow, self.scale_factor)
        return delta_net, delta_flow


class BidirCorrBlock:
    """AMT's bidirectional correlation pyramid: img0->img1 and its transpose, looked up together."""

    def __init__(self, fmap0: torch.Tensor, fmap1: torch.Tensor, num_levels: int = 4, radius: int = 4) -> None:
        self.num_levels, self.radius = num_levels, radius
        b, d, h, w = fmap0.shape
        corr = (torch.matmul(fmap0.view(b, d, h * w).transpose(1, 2), fmap1.view(b, d, h * w)) / math.sqrt(d)).view(b, h, w, 1, h, w)
        corr_t = corr.permute(0, 4, 5, 3, 1, 2).reshape(b * h * w, 1, h, w)
        corr = corr.reshape(b * h * w, 1, h, w)
        self.pyr, self.pyr_t = [corr], [corr_t]
        for _ in range(num_levels - 1):
            corr, corr_t = F.avg_pool2d(corr, 2, 2), F.avg_pool2d(corr_t, 2, 2)
            self.pyr.append(corr)
            self.pyr_t.append(corr_t)

    def __call__(self, coords0: torch.Tensor, coords1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        r = self.radius
        c0, c1 = coords0.permute(0, 2, 3, 1), coords1.permute(0, 2, 3, 1)
        b, h, w, _ = c0.shape
        d = torch.linspace(-r, r, 2 * r + 1, device=c0.device)
        delta = torch.stack(torch.meshgrid(d, d, indexing="ij"), -1).view(1, 2 * r + 1, 2 * r + 1, 2)
        out, out_t = [], []
        for i in range(self.num_levels):
            out.append(bilinear_sampler(self.pyr[i], c0.reshape(b * h * w, 1, 1, 2) / 2**i + delta).view(b, h, w, -1))
            out_t.append(bilinear_sampler(self.pyr_t[i], c1.reshape(b * h * w, 1, 1, 2) / 2**i + delta).view(b, h, w, -1))
        return (torch.cat(out, -1).permute(0, 3, 1, 2).contiguous().float(),
                torch.cat(out_t, -1).permute(0, 3, 1, 2).contiguous().float())


def multi_flow_combine(comb_block: nn.Module, img0, img1, flow0, flow1, mask, img_res, mean):
    """Warp both frames with each of the K flow pairs, blend by mask, add residual, fuse (AMT)."""
    b, c, h, w = flow0.shape
    n = c // 2
    flow0 = flow0.reshape(b * n, 2, h, w)
    flow1 = flow1.reshape(b * n, 2, h, w)
    mask = mask.reshape(b * n, 1, h, w)
    img_res = img_res.reshape(b * n, 3, h, w)
    img0 = torch.stack([img0] * n, 1).reshape(-1, 3, h, w)
    img1 = torch.stack([img1] * n, 1).reshape(-1, 3, h, w)
    mean = torch.stack([mean] * n, 1).reshape(-1, 1, 1, 1)
    warps = mask * backward_warp(img0, flow0) + (1 - mask) * backward_warp(img1, flow1) + mean + img_res
    warps = warps.reshape(b, n, 3, h, w)
    return warps.mean(1) + comb_block(warps.view(b, -1, h, w))


class AMTS(nn.Module):
    """AMT-S frame interpolator. ``forward(img0, img1, embt)``: [B,3,H,W] in [0,1] (H, W
    multiples of 16), embt [B,1,1,1] time in (0,1) -> the interpolated frame in [0,1]."""

    def __init__(self, corr_radius: int = 3, corr_lvls: int = 4, num_flows: int = 3,
                 channels: Sequence[int] = (20, 32, 44, 56), skip_channels: int = 20) -> None:
        super().__init__()
        self.radius, self.corr_levels, self.num_flows = corr_radius, corr_lvls, num_flows
        self.feat_encoder = FeatureEncoder(84, "instance", [32, 32, 64, 96], BottleneckBlock)
        self.encoder = _AmtPyramid(channels)
        c = channels
        self.decoder4 = _InitDecoder(c[3], c[2], skip_channels)
        self.decoder3 = _IntermediateDecoder(c[2], c[1], skip_channels)
        self.decoder2 = _IntermediateDecoder(c[1], c[0], skip_channels)
        self.decoder1 = _MultiFlowDecoder(c[0], skip_channels, num_flows)
        upd = lambda cdim, s=None: _SmallUpdateBlock(cdim, 76, 20, 64, 68, corr_lvls, corr_radius, s)  # noqa: E731
        self.update4, self.update3, self.update2 = upd(c[2]), upd(c[1], 2), upd(c[0], 4)
        self.comb_block = nn.Sequential(nn.Conv2d(3 * num_flows, 6 * num_flows, 3, 1, 1), nn.PReLU(6 * num_flows), nn.Conv2d(6 * num_flows, 3, 3, 1, 1))

    def _corr_lookup(self, corr_fn, coord, flow0, flow1, embt, downsample: int = 1):
        # flows are t->0 and t->1; under linear motion 0->1 = flow_t1 / t and 1->0 = flow_t0 / (1-t)
        if downsample != 1:
            inv = 1 / downsample
            flow0, flow1 = inv * resize(flow0, inv), inv * resize(flow1, inv)
        corr0, corr1 = corr_fn(coord + flow1 / embt, coord + flow0 / (1.0 - embt))
        return torch.cat([corr0, corr1], 1), torch.cat([flow0, flow1], 1)

    def _update(self, block, ft, flow0, flow1, corr, flow):
        d_ft, d_flow = block(ft, flow, corr)
        d0, d1 = torch.chunk(d_flow, 2, 1)
        return ft + d_ft, flow0 + d0, flow1 + d1

    def forward(self, img0: torch.Tensor, img1: torch.Tensor, embt: torch.Tensor) -> torch.Tensor:
        mean = torch.cat([img0, img1], 2).mean((1, 2, 3), keepdim=True)
        img0, img1 = img0 - mean, img1 - mean
        b, _, h, w = img0.shape
        coord = coords_grid(b, h // 8, w // 8, img0.device)
        fmap0, fmap1 = self.feat_encoder(torch.cat([img0, img1])).chunk(2)
        corr_fn = BidirCorrBlock(fmap0, fmap1, radius=self.radius, num_levels=self.corr_levels)
        f0 = self.encoder(img0)
        f1 = self.encoder(img1)

        flow0, flow1, ft = self.decoder4(f0[3], f1[3], embt)
        corr, flow = self._corr_lookup(corr_fn, coord, flow0, flow1, embt, 1)
        ft, flow0, flow1 = self._update(self.update4, ft, flow0, flow1, corr, flow)

        flow0, flow1, ft = self.decoder3(ft, f0[2], f1[2], flow0, flow1)
        corr, flow = self._corr_lookup(corr_fn, coord, flow0, flow1, embt, 2)
        ft, flow0, flow1 = self._update(self.update3, ft, flow0, flow1, corr, flow)

        flow0, flow1, ft = self.decoder2(ft, f0[1], f1[1], flow0, flow1)
        corr, flow = self._corr_lookup(corr_fn, coord, flow0, flow1, embt, 4)
        ft, flow0, flow1 = self._update(self.update2, ft, flow0, flow1, corr, flow)

        flow0, flow1, mask, img_res = self.decoder1(ft, f0[0], f1[0], flow0, flow1)
        pred = multi_flow_combine(self.comb_block, img0, img1, flow0, flow1, mask, img_res, mean)
        return torch.clamp(pred, 0, 1)


AMT_HOW = ("Download amt-s.pth (MCG-NKU/AMT release, also VBench's pretrained/amt_model/amt-s.pth; "
           "HF id lalala125/AMT::amt-s.pth) and pass its path with --amt.")


def load_amt_s(source: str | Path, device: str | torch.device = "cpu") -> AMTS:
    return _load_strict(AMTS, source, ["amt-s.pth"], "AMT-S", AMT_HOW, device)
