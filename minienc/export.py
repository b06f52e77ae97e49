"""Take a trained encoder elsewhere: `model.safetensors` + `config.json`, the Hugging Face layout.

    save_encoder(vit, "exported/", pooling="mean")   # any MLP, conv, ViT or text encoder
    encoder = load_encoder("exported/")               # rebuilt from config.json, bit-identical

config.json holds the architecture (every layer and its sizes, enough to rebuild the encoder
without the demo's flags), the `notes` given (pooling, input normalisation, the data) and, for a
ViT, the arguments of timm's VisionTransformer that computes the same function. The tensors are
named and laid out as PyTorch's modules name and lay them out, so a PyTorch model of the same
shape loads them with `load_state_dict(strict=True)` (docs/own_data.md has the five lines):

  - Linear (out, in), Conv2d (out, in, kh, kw), LayerNorm and BatchNorm weight, bias,
    running_mean, running_var are PyTorch's already;
  - a Sequential's layers are `layers.0`, `layers.1`, ... in minienc and `0`, `1`, ... in
    torch.nn.Sequential: the export drops the `layers.` (the import puts it back);
  - a ViT's names are timm's (patch_embed.proj, cls_token, pos_embed, blocks.N.norm1,
    blocks.N.attn.qkv, blocks.N.attn.proj, blocks.N.norm2, blocks.N.mlp.fc1/fc2, norm); its patch
    projection is a Linear on (p, p, C) patch vectors in minienc and a Conv2d (D, C, p, p) in
    timm, so that one tensor is transposed on the way out and back.

Loading refuses, by tensor name, a missing or extra tensor, a wrong shape or dtype (nothing is
cast: what loads is what was saved) and any file the safetensors rules refuse
(minienc/safetensors.py). Nothing is unpickled.
"""
import json
import os

from . import __version__, backend, checks
from .checkpoint import atomic_file
from .nn import (AvgPool2d, BatchNorm1d, BatchNorm2d, Conv2d, ConvTranspose2d, Dropout, Flatten,
                 GELU, Identity, LayerNorm, Linear, MaxPool2d, ReLU, Sequential, Sigmoid,
                 SyncBatchNorm, Tanh, TextTransformer, Unflatten, VisionTransformer)
from .nn.vit import PatchEmbed
from .safetensors import SafetensorsError, dtype_code, load_file, save_file

FORMAT, VERSION = "minienc-encoder", 1
WEIGHTS, CONFIG = "model.safetensors", "config.json"


# ----- the architecture as JSON, and back ---------------------------------------------------------

def _mlp_ratio(dim, hidden):
    """The ratio that gives int(dim * ratio) == hidden, as the blocks compute their width."""
    ratio = hidden / dim
    return ratio if int(dim * ratio) == hidden else (hidden + 0.5) / dim


def _pos_embed_kind(vit):
    if vit.pos_embed is None:
        return None
    return "sincos" if "pos_embed" in vars(vit).get("_buffers", {}) else "learned"


def _block_sizes(blocks, dim):
    """num_heads, mlp_ratio, qkv_bias of a list of TransformerBlocks (the defaults without any)."""
    if not blocks:
        return {"num_heads": 1, "mlp_ratio": 4.0, "qkv_bias": True}
    first = blocks[0]
    return {"num_heads": first.attn.num_heads,
            "mlp_ratio": _mlp_ratio(dim, first.mlp.fc1.out_features),
            "qkv_bias": first.attn.qkv.bias is not None}


# type -> (its constructor arguments read back from a built layer)
ARCHITECTURES = {
    Linear: lambda m: {"in_features": m.in_features, "out_features": m.out_features,
                       "bias": m.bias is not None},
    Conv2d: lambda m: {"in_channels": m.in_channels, "out_channels": m.out_channels,
                       "kernel_size": list(m.kernel_size), "stride": list(m.stride),
                       "padding": list(m.padding), "bias": m.bias is not None},
    ConvTranspose2d: lambda m: {**ARCHITECTURES[Conv2d](m), "output_padding": list(m.output_padding)},
    BatchNorm1d: lambda m: {"num_features": m.num_features, "eps": m.eps, "momentum": m.momentum,
                            "affine": m.weight is not None},
    LayerNorm: lambda m: {"dim": m.dim, "eps": m.eps, "affine": m.weight is not None},
    Flatten: lambda m: {"start_axis": m.start_axis},
    Unflatten: lambda m: {"shape": list(m.shape)},
    Dropout: lambda m: {"p": m.p},
    MaxPool2d: lambda m: {"kernel_size": m.kernel_size, "stride": m.stride, "padding": m.padding},
    VisionTransformer: lambda m: {
        "image_size": list(m.patch_embed.image_size), "patch_size": m.patch_embed.patch_size,
        "in_channels": m.patch_embed.in_channels, "dim": m.dim, "depth": len(m.blocks),
        **_block_sizes(m.blocks, m.dim), "cls_token": m.cls_token is not None,
        "pos_embed": _pos_embed_kind(m)},
    TextTransformer: lambda m: {
        "vocab_size": m.vocab_size, "max_len": m.max_len, "dim": m.dim, "depth": len(m.blocks),
        **{k: v for k, v in _block_sizes(m.blocks, m.dim).items() if k != "qkv_bias"},
        "pad_id": m.pad_id},
}
ARCHITECTURES.update({BatchNorm2d: ARCHITECTURES[BatchNorm1d], SyncBatchNorm: ARCHITECTURES[BatchNorm1d],
                      AvgPool2d: ARCHITECTURES[MaxPool2d]})
ARCHITECTURES.update({t: lambda m: {} for t in (ReLU, GELU, Tanh, Sigmoid, Identity)})
BY_NAME = {t.__name__: t for t in ARCHITECTURES}


def describe(module, where="encoder"):
    """The architecture of `module` as JSON-ready data: {"type": name, **constructor arguments},
    a Sequential (an MLPEncoder, a ConvEncoder, ...) as {"type": "Sequential", "layers": [...]}."""
    if isinstance(module, Sequential):
        return {"type": "Sequential",
                "layers": [describe(m, f"{where}.layers.{i}") for i, m in enumerate(module.layers)]}
    kind = type(module)
    if kind not in ARCHITECTURES:
        raise TypeError(f"export: cannot describe {kind.__name__} at {where}: an exported encoder "
                        f"is built from {', '.join(sorted(BY_NAME))} and Sequentials of them")
    return {"type": kind.__name__, **ARCHITECTURES[kind](module)}


def build(architecture):
    """The Module that `describe` described, freshly initialised (the caller loads weights),
    without moving minienc's random streams."""
    state = backend.get_rng_state()
    try:
        return _build(architecture)
    finally:
        backend.set_rng_state(state)


def _build(spec):
    if not isinstance(spec, dict) or not isinstance(spec.get("type"), str):
        raise ValueError(f"export: an architecture entry must be {{'type': ..., ...}}, got {spec!r}")
    arguments = {k: v for k, v in spec.items() if k != "type"}
    if spec["type"] == "Sequential":
        if set(arguments) != {"layers"} or not isinstance(arguments["layers"], list):
            raise ValueError(f"export: a Sequential entry must be {{'type': 'Sequential', 'layers': "
                             f"[...]}}, got {spec!r}")
        return Sequential(*[_build(layer) for layer in arguments["layers"]])
    if spec["type"] not in BY_NAME:
        raise ValueError(f"export: unknown layer type {spec['type']!r} in the architecture "
                         f"(known: Sequential, {', '.join(sorted(BY_NAME))})")
    try:
        return BY_NAME[spec["type"]](**arguments)
    except TypeError as exc:   # an argument missing or unknown: the constructor's own words
        raise ValueError(f"export: cannot build {spec!r}: {exc}") from None


# ----- names and layouts: minienc's <-> PyTorch's ---------------------------------------------------

def exported_names(module):
    """{minienc state_dict name: exported name}: every Sequential's `layers.` dropped."""
    renamed = {"": ""}   # module prefix -> exported prefix
    for prefix, m in module._named_modules():
        for name, _ in m.named_children():
            short = name[len("layers."):] if isinstance(m, Sequential) and name.startswith("layers.") else name
            renamed[f"{prefix}{name}."] = f"{renamed[prefix]}{short}."
    names = [n for n, _ in module.named_parameters()] + [n for n, _ in module.named_buffers()]
    out = {}
    for key in names:
        owner = max((p for p in renamed if key.startswith(p)), key=len)
        out[key] = renamed[owner] + key[len(owner):]
    return out


def _patch_projections(module):
    """state_dict names of the patch projections (Linear on (p, p, C) vectors), with their C."""
    return {f"{prefix}proj.weight": m.in_channels for prefix, m in module._named_modules()
            if isinstance(m, PatchEmbed)}


def to_pytorch_layout(weight, channels):
    """A patch projection (D, p*p*C) on (p, p, C) patch vectors -> the Conv2d weight (D, C, p, p)."""
    d, size = weight.shape
    p = int(round((size // channels) ** 0.5))
    return weight.reshape(d, p, p, channels).transpose(0, 3, 1, 2).copy()


def from_pytorch_layout(weight):
    """The inverse of to_pytorch_layout: (D, C, p, p) -> (D, p*p*C)."""
    d, c, p, _ = weight.shape
    return weight.transpose(0, 2, 3, 1).reshape(d, p * p * c).copy()


def exported_tensors(module):
    """{exported name: host array in PyTorch's layout} of `module`'s parameters and buffers."""
    state, names, patches = module.state_dict(), exported_names(module), _patch_projections(module)
    return {names[k]: to_pytorch_layout(v, patches[k]) if k in patches else v for k, v in state.items()}


# ----- saving and loading -------------------------------------------------------------------------

def timm_arguments(architecture, pooling="mean"):
    """The keyword arguments of timm's VisionTransformer that compute what minienc's ViT does
    (forward_features = every token after the final norm; forward = its `pooling`), or None for
    other encoders."""
    if architecture.get("type") != "VisionTransformer":
        return None
    a = architecture
    return {"img_size": a["image_size"], "patch_size": a["patch_size"], "in_chans": a["in_channels"],
            "embed_dim": a["dim"], "depth": a["depth"], "num_heads": a["num_heads"],
            "mlp_ratio": a["mlp_ratio"], "qkv_bias": a["qkv_bias"], "class_token": a["cls_token"],
            "no_embed_class": True,          # positions are added to the patches, not the CLS token
            "pos_embed": "learn" if a["pos_embed"] else "none",   # sin-cos: loaded, then frozen
            "act_layer": "gelu_tanh",        # minienc's GELU is the tanh approximation
            "global_pool": "avg" if pooling == "mean" else ("token" if pooling == "cls" else ""),
            "fc_norm": False,                # the final norm before pooling, as minienc
            "num_classes": 0}                # no head: forward gives the embedding


FLOAT_DTYPES = ("float16", "float32", "float64")   # the floating types safetensors holds
POOLINGS = ("mean", "cls", "none")   # how the tokens become one embedding (timm's avg, token, none)


def save_encoder(encoder, folder, **notes):
    """Write `encoder` (a Module: MLP, conv, ViT, text transformer, a Sequential of layers) into
    `folder` as model.safetensors + config.json. `notes` (JSON-ready: pooling="mean", how the
    inputs were normalised, the data) go into config.json; pooling also sets the timm arguments.
    Returns the folder.

    Everything is checked before anything is written: notes that JSON cannot hold (a NumPy
    number, a set, NaN), a tensor that is not finite (a diverged run), and a folder whose
    config.json is not an exported encoder's (a run folder's record, which would be overwritten)."""
    if not hasattr(encoder, "state_dict"):
        raise TypeError(f"save_encoder: expected the encoder Module, got {type(encoder).__name__} "
                        f"(for an objective's embed, pass the encoder it runs)")
    if "pooling" in notes:
        checks.one_of("save_encoder", "pooling", notes["pooling"], POOLINGS)
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise FileExistsError(f"save_encoder: {folder} exists and is not a folder")
    _refuse_a_foreign_config(os.path.join(folder, CONFIG))
    architecture = describe(encoder)
    tensors = exported_tensors(encoder)
    for name, value in tensors.items():
        if backend.is_floating(value.dtype) and not backend.numpy.isfinite(value).all():
            raise ValueError(f"save_encoder: tensor {name!r} {list(value.shape)} holds "
                             f"{int((~backend.numpy.isfinite(value)).sum())} NaN or inf values "
                             f"(a diverged run?): nothing written")
    floating = [p.dtype for p in encoder.parameters() if backend.is_floating(p.dtype)]
    config = {"format": FORMAT, "format_version": VERSION, "minienc_version": __version__,
              "architecture": architecture, "dtype": str(floating[0]) if floating else "float32",
              "notes": notes,
              "tensors": {name: [dtype_code(a.dtype), list(a.shape)] for name, a in tensors.items()}}
    timm = timm_arguments(architecture, notes.get("pooling", "mean"))
    if timm is not None:
        config["timm"] = timm
    try:   # the text first: weights written beside a config.json that then fails would not load
        text = json.dumps(config, indent=1, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"save_encoder: the notes must be JSON (strings, finite numbers, lists, "
                         f"dicts): {exc}; nothing written") from None
    os.makedirs(folder, exist_ok=True)
    save_file(tensors, os.path.join(folder, WEIGHTS), metadata={"format": "pt", "producer": f"minienc {__version__}"})
    with atomic_file(os.path.join(folder, CONFIG), "w", ".json") as f:
        f.write(text)
    return folder


def _refuse_a_foreign_config(path):
    """An existing config.json is replaced only when it is an exported encoder's."""
    if not os.path.exists(path):
        return
    try:
        with open(path) as f:
            ours = json.load(f).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        ours = False
    if not ours:
        raise FileExistsError(f"save_encoder: {path} exists and is not an exported encoder's "
                              f"config (a run's record?); refusing to overwrite it: export into "
                              f"another folder")


def read_config(folder):
    path = os.path.join(folder, CONFIG)
    with open(path) as f:
        try:
            config = json.load(f)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not JSON ({exc})") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise ValueError(f"{path}: not a minienc encoder's config (format {FORMAT!r})")
    if config.get("format_version") != VERSION:
        raise ValueError(f"{path}: format version {config.get('format_version')!r}; this minienc "
                         f"reads version {VERSION}")
    if not isinstance(config.get("architecture"), dict):
        raise ValueError(f"{path}: no architecture (a {{'type': ...}} object), got "
                         f"{config.get('architecture')!r}")
    if config.get("dtype", "float32") not in FLOAT_DTYPES:
        raise ValueError(f"{path}: dtype must be one of {FLOAT_DTYPES}, got {config.get('dtype')!r}")
    return config


def load_encoder(folder, device=None):
    """The encoder `save_encoder` wrote into `folder`: rebuilt from config.json, its tensors
    checked against it by name, shape and dtype, loaded bit-identical, in eval mode, on `device`
    (default: minienc's default device)."""
    config = read_config(folder)
    encoder = build(config["architecture"])
    if config.get("dtype", "float32") != "float32":
        encoder.astype(config["dtype"])
    path = os.path.join(folder, WEIGHTS)
    tensors, _ = load_file(path)
    expected = exported_tensors(encoder)    # the rebuilt encoder's names, shapes and dtypes
    missing, extra = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
    if missing or extra:
        raise SafetensorsError(f"{path}: does not hold the encoder of {CONFIG}: missing tensors "
                               f"{missing}, unexpected tensors {extra}")
    for name, target in expected.items():
        value = tensors[name]
        if value.shape != target.shape or value.dtype != target.dtype:
            raise SafetensorsError(f"{path}: tensor {name!r} is {value.dtype} {list(value.shape)} "
                                   f"but the encoder of {CONFIG} has {target.dtype} "
                                   f"{list(target.shape)} there")
    patches = _patch_projections(encoder)
    state = {key: tensors[name] for key, name in exported_names(encoder).items()}
    state.update((key, from_pytorch_layout(state[key])) for key in patches)
    encoder.load_state_dict(state, strict=True)
    if device is not None:
        encoder.to(device)
    return encoder.eval()
