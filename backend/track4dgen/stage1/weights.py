"""Weights of the MV-VDM: hub download/cache, conversion into our key names, strict checking,
safetensors save/load.

Sources of the released Animate3D model (DESIGN.md §Stage One, §Weights), fetched with
huggingface_hub into its standard cache (``HF_HUB_OFFLINE=1`` -> cache only):

=============  ==========================================  =====================================
part           hub repo                                    files
=============  ==========================================  =====================================
base           yanqinJiang/mvdream-sd1.5-diffusers         unet/ vae/ text_encoder/ tokenizer/
motion         guoyww/animatediff-motion-adapter-v1-5-2    diffusion_pytorch_model.safetensors
ip_adapter     h94/IP-Adapter                              models/ip-adapter_sd15.safetensors,
                                                           models/image_encoder/
animate3d      yanqinJiang/animate3d                       animate3d_motion_modules.ckpt
=============  ==========================================  =====================================

They are merged in that order into one U-Net state dict (the Animate3D checkpoint overrides the
AnimateDiff motion modules and adds the spatial branch + MV2V adapter), with the only renames in
this one place: AnimateDiff's ``transformer_blocks.0.pos_embed.pe`` moves into both motion
processors (``attn{1,2}.processor.time_pos_embed.pe``), IP-Adapter's ``image_proj.*`` becomes
``encoder_hid_proj.*`` and its numbered ``ip_adapter.{2i+1}.to_{k,v}_ip`` go to the i-th
cross-attention layer (diffusers order: down blocks, up blocks, mid block).  The merged dict must
match the model exactly (no missing, no unexpected key, no shape mismatch) or loading fails with
a per-part report.  ``save_pretrained`` writes our own folder format (all safetensors):

    FOLDER/mvvdm.json  unet.safetensors  vae/  text_encoder/  [tokenizer/]  [image_encoder/]
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping

import torch

from .components import ByteTokenizer, Components, build_tiny_image_encoder
from .config import MVVDMConfig, get_config
from .unet import MVVDM

DOWNLOAD_CMD = "track4dgen weights download"


class WeightsError(Exception):
    """Weights that are missing or do not fit; ``hint`` names the fix (usually the command)."""

    def __init__(self, message: str, hint: str = f"Run `{DOWNLOAD_CMD}` (needs network) or pass a local folder.") -> None:
        super().__init__(message)
        self.hint = hint


@dataclass(frozen=True)
class HubSource:
    part: str
    repo_id: str
    patterns: tuple[str, ...]
    required: tuple[str, ...]  # files that must exist in the snapshot (first match of each group '|')


HUB_SOURCES: tuple[HubSource, ...] = (
    HubSource("base", "yanqinJiang/mvdream-sd1.5-diffusers",
              ("model_index.json", "unet/*", "vae/*", "text_encoder/*", "tokenizer/*"),
              ("unet/diffusion_pytorch_model.safetensors|unet/diffusion_pytorch_model.bin", "vae/config.json",
               "text_encoder/config.json")),
    HubSource("motion", "guoyww/animatediff-motion-adapter-v1-5-2", ("config.json", "diffusion_pytorch_model.safetensors"),
              ("diffusion_pytorch_model.safetensors",)),
    HubSource("ip_adapter", "h94/IP-Adapter", ("models/ip-adapter_sd15.safetensors", "models/image_encoder/*"),
              ("models/ip-adapter_sd15.safetensors|models/ip-adapter_sd15.bin", "models/image_encoder/config.json")),
    HubSource("animate3d", "yanqinJiang/animate3d", ("animate3d_motion_modules.ckpt",), ("animate3d_motion_modules.ckpt",)),
)


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").strip().lower() in ("1", "true", "yes", "on")


def _snapshot_download(repo_id: str, allow_patterns: list[str], local_files_only: bool) -> str:
    """The hub boundary (tests replace this one function)."""
    from huggingface_hub import snapshot_download

    return snapshot_download(repo_id, allow_patterns=allow_patterns, local_files_only=local_files_only)


def _find(folder: Path, alternatives: str) -> Path | None:
    for rel in alternatives.split("|"):
        if (folder / rel).is_file():
            return folder / rel
    return None


def fetch_sources(local_files_only: bool | None = None, sources: Iterable[HubSource] = HUB_SOURCES) -> dict[str, Path]:
    """Snapshot folders of every source (downloads unless offline / ``local_files_only``)."""
    offline = hub_offline() if local_files_only is None else local_files_only
    out: dict[str, Path] = {}
    for src in sources:
        try:
            folder = Path(_snapshot_download(src.repo_id, list(src.patterns), offline))
        except Exception as exc:  # LocalEntryNotFoundError, network errors, ...
            raise WeightsError(
                f"weights for '{src.part}' ({src.repo_id}: {', '.join(r.split('|')[0] for r in src.required)}) are not "
                f"in the Hugging Face cache and could not be downloaded: {type(exc).__name__}: {exc}") from exc
        for req in src.required:
            if _find(folder, req) is None:
                raise WeightsError(f"weights file {req.split('|')[0]} of {src.repo_id} is missing in {folder}")
        out[src.part] = folder
    return out


def weights_status(source: str | Path | None = None, model: str = "animate3d") -> dict:
    """Whether the weights a job needs are on this machine -- offline, reading no tensor.

    What the add-on asks before it renders anything (``track4dgen weights path --json``):
    ``{"ok", "model", "source", "cache", "parts": {part: folder or None}, "missing", "message", "hint"}``.
    """
    from huggingface_hub import constants

    out: dict = {"ok": False, "model": model, "source": str(source or "animate3d"), "cache": str(constants.HF_HUB_CACHE),
                 "parts": {}, "missing": [], "message": "", "hint": ""}
    if source and str(source) not in ("animate3d", "hub"):
        path = Path(str(source)).expanduser()
        missing = [name for name in ("mvvdm.json", "unet.safetensors") if not (path / name).is_file()]
        out["missing"] = missing
        out["ok"] = path.is_dir() and not missing
        if not path.is_dir():
            out["message"] = f"the weights folder {path} does not exist"
        elif missing:
            out["message"] = f"{path} is not a converted weights folder ({', '.join(missing)} missing)"
        else:
            out["message"] = f"weights folder {path}"
        out["hint"] = "" if out["ok"] else (
            f"Choose a folder written by `track4dgen weights convert --out DIR`, or clear it to use `{DOWNLOAD_CMD}`.")
        return out
    if model == "tiny":
        out.update(ok=True, message="the tiny test model needs no weights")
        return out
    for src in HUB_SOURCES:
        try:
            out["parts"][src.part] = str(fetch_sources(local_files_only=True, sources=[src])[src.part])
        except WeightsError:
            out["parts"][src.part] = None
            out["missing"].append(src.part)
    out["ok"] = not out["missing"]
    if out["ok"]:
        out["message"] = "the Animate3D weights are in the Hugging Face cache"
    else:
        out["message"] = f"the Animate3D weights are not on this computer (missing: {', '.join(out['missing'])})"
        out["hint"] = (f"Download them with `{DOWNLOAD_CMD}` (several GB), point to a folder made with "
                       "`track4dgen weights convert`, or use the tiny test model.")
    return out


# ------------------------------------------------------------------------------ state dicts


_WRAPPERS = ("state_dict", "module", "model")  # Lightning / DeepSpeed / plain-torch training saves


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a weights file: safetensors, or a torch pickle (.ckpt/.bin/.pt).

    Pickles are read weights-only, or — when they also hold Python objects — with a reader
    that keeps tensors and never runs the file's code (``pickle_reader``); non-tensor entries
    are dropped.  Unwraps ``{"state_dict"|"module"|"model": ...}`` and a DDP ``module.``
    prefix, flattens IP-Adapter's nested ``{"image_proj": ..., "ip_adapter": ...}``.  Keeps
    the stored dtype (``load_checked`` casts).  Any unreadable file is a ``WeightsError``."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file {path} does not exist")
    fix = f"Re-download it with `{DOWNLOAD_CMD}` (or delete it from the Hugging Face cache first)."
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd = load_file(str(path))
        else:
            from .pickle_reader import load_pickle

            sd = load_pickle(path)
    except Exception as exc:  # truncated downloads, HTML error pages, foreign formats
        raise WeightsError(f"weights file {path} could not be read ({type(exc).__name__}: {str(exc)[:200]})", hint=fix) from exc
    while isinstance(sd, Mapping) and not any(isinstance(v, torch.Tensor) for v in sd.values()):
        inner = next((sd[k] for k in _WRAPPERS if isinstance(sd.get(k), Mapping)), None)
        if inner is None:
            break
        sd = inner
    if not isinstance(sd, Mapping):
        raise WeightsError(f"{path} does not hold a state dict (found {type(sd).__name__})", hint=fix)
    flat: dict[str, torch.Tensor] = {}

    def walk(prefix: str, d: Mapping) -> None:  # IP-Adapter .bin nests {"image_proj": {...}, "ip_adapter": {...}}
        for k, v in d.items():
            if isinstance(v, Mapping):
                walk(f"{prefix}{k}.", v)
            elif isinstance(v, torch.Tensor):
                key = f"{prefix}{k}"
                flat[key[7:] if key.startswith("module.") else key] = v

    walk("", sd)
    if not flat:
        raise WeightsError(f"{path} holds no tensors", hint=fix)
    return flat


# Renames between the reference implementation's own state dict (Animate3D on diffusers 0.28, e.g.
# ``torch.save(unet.state_dict())`` of its inference model) and ours.  diffusers 0.28 wraps the
# IP-Adapter projection in ``MultiIPAdapterImageProjection`` (a list holding one projection); we
# keep the single projection.  Every other key is the same (tests/test_stage1_parity.py).
REFERENCE_RENAMES: tuple[tuple[str, str], ...] = (("encoder_hid_proj.image_projection_layers.0.", "encoder_hid_proj."),)

# The reference builds its U-Net with ``MVUNetMotionModel.from_unet2d``, which leaves the spatial
# attention at that class's default of 8 heads whatever the 2-D config's ``attention_head_dim``
# says (observed on the parity fixtures: 8 heads for attention_head_dim 2).  SD1.5/MVDream has
# attention_head_dim 8, so the released model is unaffected; narrow test configs are not.
REFERENCE_SPATIAL_HEADS = 8

_BLOCK_TYPES = {"CrossAttnDownBlock2D": "CrossAttnDownBlockMotion", "DownBlock2D": "DownBlockMotion",
                "CrossAttnUpBlock2D": "CrossAttnUpBlockMotion", "UpBlock2D": "UpBlockMotion"}


def convert_reference_unet(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A reference (Animate3D) U-Net state dict -> our key names (``REFERENCE_RENAMES`` only)."""
    out: dict[str, torch.Tensor] = {}
    for k, v in sd.items():
        for old, new in REFERENCE_RENAMES:
            if k.startswith(old):
                k = new + k[len(old):]
        out[k] = v
    return out


def config_from_reference(unet: Mapping, adapter: Mapping | None = None, *, name: str = "reference",
                          **fields_: object) -> MVVDMConfig:
    """Our ``MVVDMConfig`` from a reference U-Net config (MVDream ``unet/config.json`` /
    ``UNet2DConditionModel`` kwargs, 2-D block names) and an AnimateDiff adapter config.

    Keys we do not use (``_class_name``, ``flip_sin_to_cos``, ``center_input_sample``, ...) are
    accepted and ignored, as diffusers' ``from_config`` ignores them; the tensors are checked
    strictly when loading.  Values that would build a different network raise ``WeightsError``.
    ``fields_`` set the data layout (``num_views``, ``num_frames``, ``resolution``, ``ip_embed_dim``)."""
    try:
        down = tuple(_BLOCK_TYPES[b] for b in unet["down_block_types"])
        up = tuple(_BLOCK_TYPES[b] for b in unet["up_block_types"])
        kw: dict[str, object] = dict(
            block_out_channels=tuple(unet["block_out_channels"]), down_block_types=down, up_block_types=up,
            layers_per_block=int(unet.get("layers_per_block", 2)), norm_num_groups=int(unet.get("norm_num_groups", 32)),
            cross_attention_dim=int(unet["cross_attention_dim"]), num_attention_heads=REFERENCE_SPATIAL_HEADS,
            in_channels=int(unet.get("in_channels", 4)), camera_dim=int(unet.get("camera_embedding_dim") or 16))
    except KeyError as exc:
        raise WeightsError(f"U-Net config has no usable {exc} entry (block types must be SD-1.5's 2-D blocks)",
                           hint="Pass the MVDream unet/config.json (diffusers format).") from exc
    for key, want in (("use_linear_projection", False), ("norm_eps", 1e-5), ("act_fn", "silu"),
                      ("out_channels", kw["in_channels"])):
        if key in unet and unet[key] is not None and unet[key] != want:
            raise WeightsError(f"U-Net config {key}={unet[key]!r}: this MV-VDM is built with {key}={want!r}",
                               hint="Use the SD-1.5 based MVDream U-Net (yanqinJiang/mvdream-sd1.5-diffusers).")
    if adapter:
        kw["motion_num_attention_heads"] = int(adapter.get("motion_num_attention_heads", 8))
        kw["motion_max_seq_length"] = int(adapter.get("motion_max_seq_length", 32))
        blocks = tuple(adapter.get("block_out_channels", kw["block_out_channels"]))
        if blocks != kw["block_out_channels"]:
            raise WeightsError(f"motion adapter widths {list(blocks)} differ from the U-Net's {list(kw['block_out_channels'])}")
    kw.update(fields_)
    return MVVDMConfig(name=name, **kw)  # type: ignore[arg-type]


_STRUCTURE = ("block_out_channels", "down_block_types", "up_block_types", "layers_per_block", "norm_num_groups",
              "cross_attention_dim", "in_channels", "camera_dim")


def check_unet_config(config: MVVDMConfig, path: Path) -> None:
    """The base U-Net's ``config.json`` (MVDream, diffusers format) must describe our network.

    Keys we do not use are accepted and ignored (as the reference's ``from_config`` does); the
    structural ones must agree with ``config`` — the tensors are then checked strictly."""
    try:
        raw = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise WeightsError(f"{path} is not a readable JSON config ({exc})", hint=f"Re-download it with `{DOWNLOAD_CMD}`.") from exc
    try:
        theirs = config_from_reference(raw)
    except WeightsError as exc:
        raise WeightsError(f"{path}: {exc}", hint=exc.hint) from exc
    diff = [(k, getattr(theirs, k), getattr(config, k)) for k in _STRUCTURE if getattr(theirs, k) != getattr(config, k)]
    if diff:
        lines = ", ".join(f"{k}: file {a!r} vs model {b!r}" for k, a, b in diff)
        raise WeightsError(f"{path} describes a different U-Net ({lines})",
                           hint="Use yanqinJiang/mvdream-sd1.5-diffusers for the animate3d model, or pass the matching config.")


def convert_motion_adapter(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """AnimateDiff MotionAdapter keys -> ours: ``pos_embed.pe`` moves into both processors."""
    out: dict[str, torch.Tensor] = {}
    for k, v in sd.items():
        m = re.match(r"(.*\.transformer_blocks\.\d+)\.pos_embed\.pe$", k)
        if m:
            for a in ("attn1", "attn2"):
                out[f"{m.group(1)}.{a}.processor.time_pos_embed.pe"] = v
        elif k.startswith("conv_in."):
            continue  # PIA-style adapters only; our U-Net keeps the base conv_in
        else:
            out[k] = v
    return out


def cross_attention_layers(model: MVVDM) -> list[str]:
    """Names of the spatial cross-attention layers in diffusers' attn_processors order
    (down blocks, up blocks, mid block) — the order IP-Adapter numbers them."""
    names = [n for n, _ in model.named_modules() if n.endswith(".attn2") and ".motion_modules." not in n]
    rank = {"down_blocks": 0, "up_blocks": 1, "mid_block": 2}
    return sorted(names, key=lambda n: (rank[n.split(".")[0]], [int(p) if p.isdigit() else 0 for p in n.split(".")[1:]]))


def convert_ip_adapter(sd: Mapping[str, torch.Tensor], model: MVVDM) -> dict[str, torch.Tensor]:
    """IP-Adapter (``image_proj.*``, ``ip_adapter.N.to_{k,v}_ip.weight``) keys -> ours."""
    layers = cross_attention_layers(model)
    out: dict[str, torch.Tensor] = {}
    for k, v in sd.items():
        if k.startswith("image_proj."):
            rest = k[len("image_proj."):].replace("proj.", "image_embeds.", 1)
            out[f"encoder_hid_proj.{rest}"] = v
            continue
        m = re.match(r"ip_adapter\.(\d+)\.(to_[kv]_ip)\.weight$", k)
        if not m:
            out[k] = v  # reported as unexpected
            continue
        idx = (int(m.group(1)) - 1) // 2
        if idx >= len(layers):
            raise WeightsError(f"IP-Adapter key {k} refers to cross-attention layer {idx}, the model has {len(layers)}")
        out[f"{layers[idx]}.processor.{m.group(2)}.0.weight"] = v
    return out


def _part_of(key: str) -> str:
    if "_i2v." in key:
        return "MV2V adapter (i2v)"
    if "_ip." in key or key.startswith("encoder_hid_proj."):
        return "IP-Adapter"
    if ".motion_modules." in f".{key}":
        return "motion spatial branch" if ".processor." in key else "motion modules"
    if key.startswith("camera_embedding."):
        return "camera embedding"
    return "base U-Net"


@dataclass
class KeyReport:
    """Result of matching a state dict against a model, grouped by part for humans."""

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple, tuple]] = field(default_factory=list)
    loaded: int = 0

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def format(self, limit: int = 8) -> str:
        lines = [f"{self.loaded} keys matched; {len(self.missing)} missing, {len(self.unexpected)} unexpected, "
                 f"{len(self.mismatched)} with wrong shape"]
        for title, keys in (("missing", self.missing), ("unexpected", self.unexpected)):
            if keys:
                by_part = Counter(_part_of(k) for k in keys)
                lines.append(f"{title}: " + ", ".join(f"{n} in {p}" for p, n in by_part.most_common()))
                lines += [f"  {k}" for k in keys[:limit]] + ([f"  ... {len(keys) - limit} more"] if len(keys) > limit else [])
        for k, got, want in self.mismatched[:limit]:
            lines.append(f"shape mismatch: {k}: file {list(got)} vs model {list(want)}")
        return "\n".join(lines)


def check_keys(model_shapes: Mapping[str, tuple], sd_shapes: Mapping[str, tuple]) -> KeyReport:
    rep = KeyReport()
    rep.missing = sorted(k for k in model_shapes if k not in sd_shapes)
    rep.unexpected = sorted(k for k in sd_shapes if k not in model_shapes)
    for k in model_shapes:
        if k in sd_shapes:
            if tuple(sd_shapes[k]) != tuple(model_shapes[k]):
                rep.mismatched.append((k, tuple(sd_shapes[k]), tuple(model_shapes[k])))
            else:
                rep.loaded += 1
    return rep


def load_checked(model: MVVDM, sd: Mapping[str, torch.Tensor], strict: bool = True, source: str = "state dict",
                 dtype: torch.dtype | None = None) -> KeyReport:
    """Load by name after a full key/shape check; strict -> any problem raises WeightsError.

    Floating tensors are cast to ``dtype`` (default: the model's own), so parts stored in
    different precisions (fp16 hub files next to fp32 ones) never leave a mixed-dtype model."""
    own = model.state_dict()
    model_shapes = {k: tuple(v.shape) for k, v in own.items()}
    rep = check_keys(model_shapes, {k: tuple(v.shape) for k, v in sd.items()})
    if rep.mismatched or (strict and not rep.ok):
        raise WeightsError(f"{source} does not fit the MV-VDM:\n{rep.format()}",
                           hint=f"Re-download with `{DOWNLOAD_CMD}` or check the model config.")
    meta = any(p.is_meta for p in model.parameters())
    sub = {k: (v.to(dtype or own[k].dtype) if v.is_floating_point() else v) for k, v in sd.items() if k in model_shapes}
    model.load_state_dict(sub, strict=False, assign=meta)
    return rep


def assemble_unet_state_dict(model: MVVDM, folders: Mapping[str, Path]) -> dict[str, torch.Tensor]:
    """Merge base U-Net + motion adapter + IP-Adapter + Animate3D checkpoint into our names."""
    base = folders["base"]
    sd: dict[str, torch.Tensor] = {}
    unet_file = _find(base, "unet/diffusion_pytorch_model.safetensors|unet/diffusion_pytorch_model.bin")
    if unet_file is None:
        raise WeightsError(f"base U-Net weights (unet/diffusion_pytorch_model.safetensors) are missing in {base}")
    if (base / "unet" / "config.json").is_file():
        check_unet_config(model.config, base / "unet" / "config.json")
    sd.update(read_state_dict(unet_file))
    sd.update(convert_motion_adapter(read_state_dict(folders["motion"] / "diffusion_pytorch_model.safetensors")))
    if model.config.use_ip_adapter:
        ip_file = _find(folders["ip_adapter"], "models/ip-adapter_sd15.safetensors|models/ip-adapter_sd15.bin")
        if ip_file is None:
            raise WeightsError(f"IP-Adapter weights models/ip-adapter_sd15.safetensors are missing in {folders['ip_adapter']}")
        sd.update(convert_ip_adapter(read_state_dict(ip_file), model))
    sd.update(convert_reference_unet(read_state_dict(folders["animate3d"] / "animate3d_motion_modules.ckpt")))
    return sd


# ------------------------------------------------------------------------------ components


def _load_vae(folder: Path, dtype=None):
    from diffusers import AutoencoderKL

    return AutoencoderKL.from_pretrained(str(folder), torch_dtype=dtype)


def _load_text(folder: Path, dtype=None):
    from transformers import CLIPTextModel

    return CLIPTextModel.from_pretrained(str(folder), dtype=dtype) if dtype else CLIPTextModel.from_pretrained(str(folder))


def _load_tokenizer(folder: Path | None, config: MVVDMConfig):
    if folder is not None and folder.is_dir():
        from transformers import CLIPTokenizer

        return CLIPTokenizer.from_pretrained(str(folder))
    if config.text_config is not None:  # tiny: byte tokenizer, nothing to load
        return ByteTokenizer(config.text_max_length)
    raise WeightsError(f"tokenizer folder {folder} is missing")


def _load_image_encoder(folder: Path | None, config: MVVDMConfig, dtype=None):
    if not config.use_ip_adapter:
        return None
    if folder is not None and folder.is_dir():
        from transformers import CLIPVisionModelWithProjection

        return CLIPVisionModelWithProjection.from_pretrained(str(folder))
    if config.text_config is not None:
        return build_tiny_image_encoder(config)
    raise WeightsError(f"IP-Adapter image encoder folder {folder} is missing")


def _build_meta(config: MVVDMConfig) -> MVVDM:
    with torch.device("meta"):
        return MVVDM(config)


def from_pretrained(name_or_path: str | Path = "animate3d", model: str = "animate3d", dtype: torch.dtype | None = None,
                    local_files_only: bool | None = None, config: MVVDMConfig | None = None) -> Components:
    """Components from our folder format, or assembled from the hub sources (``"animate3d"``).

    The U-Net is built on the meta device and its tensors are assigned from the checked state
    dict, so the 1.5 B-parameter model is never initialised twice."""
    path = Path(str(name_or_path)).expanduser()
    if path.is_dir():
        if not (path / "mvvdm.json").is_file():
            raise WeightsError(f"{path} is not an MV-VDM folder (mvvdm.json missing)",
                               hint=f"Write one with `track4dgen weights convert --out {path}` or `save_pretrained`.")
        cfg = MVVDMConfig.from_dict(json.loads((path / "mvvdm.json").read_text())["config"])
        unet = _build_meta(cfg)
        load_checked(unet, read_state_dict(path / "unet.safetensors"), source=str(path / "unet.safetensors"), dtype=dtype)
        comp = Components(cfg, unet, _load_vae(path / "vae"), _load_text(path / "text_encoder"),
                          _load_tokenizer(path / "tokenizer", cfg), _load_image_encoder(path / "image_encoder", cfg))
    elif str(name_or_path) in ("animate3d", "hub"):
        cfg = config or get_config(model)
        folders = fetch_sources(local_files_only)
        unet = _build_meta(cfg)
        load_checked(unet, assemble_unet_state_dict(unet, folders), source="hub weights (base + motion + IP-Adapter + Animate3D)",
                     dtype=dtype)
        base = folders["base"]
        comp = Components(cfg, unet, _load_vae(base / "vae"), _load_text(base / "text_encoder"),
                          _load_tokenizer(base / "tokenizer", cfg),
                          _load_image_encoder(folders["ip_adapter"] / "models" / "image_encoder", cfg))
    else:
        raise WeightsError(f"weights {str(name_or_path)!r}: no such folder, and not a known hub model",
                           hint=f"Pass a folder written by save_pretrained, or 'animate3d' after `{DOWNLOAD_CMD}`.")
    if dtype is not None:
        comp.to(dtype=dtype)
    return comp.eval()


def save_pretrained(comp: Components, folder: str | Path) -> Path:
    """Write our folder format (safetensors everywhere; shared tensors are cloned)."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "mvvdm.json").write_text(json.dumps({"config": comp.config.to_dict()}, indent=1))
    sd = {k: v.detach().to("cpu").contiguous().clone() for k, v in comp.unet.state_dict().items()}
    save_file(sd, str(folder / "unet.safetensors"))
    comp.vae.save_pretrained(str(folder / "vae"), safe_serialization=True)
    comp.text_encoder.save_pretrained(str(folder / "text_encoder"), safe_serialization=True)
    if not isinstance(comp.tokenizer, ByteTokenizer):
        comp.tokenizer.save_pretrained(str(folder / "tokenizer"))
    if comp.image_encoder is not None:
        comp.image_encoder.save_pretrained(str(folder / "image_encoder"), safe_serialization=True)
    return folder


def safetensors_shapes(path: Path) -> dict[str, tuple]:
    """Key -> shape from a safetensors header without reading the tensors."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}


def verify(name_or_path: str | Path = "animate3d", model: str = "animate3d", local_files_only: bool | None = None) -> KeyReport:
    """Key/shape check of the weights against a meta-built model (reads headers where it can)."""
    path = Path(str(name_or_path)).expanduser()
    if path.is_dir():
        cfg = MVVDMConfig.from_dict(json.loads((path / "mvvdm.json").read_text())["config"])
        unet = _build_meta(cfg)
        shapes = safetensors_shapes(path / "unet.safetensors")
    else:
        cfg = get_config(model)
        unet = _build_meta(cfg)
        folders = fetch_sources(local_files_only)
        shapes = {k: tuple(v.shape) for k, v in assemble_unet_state_dict(unet, folders).items()}
    return check_keys({k: tuple(v.shape) for k, v in unet.state_dict().items()}, shapes)
