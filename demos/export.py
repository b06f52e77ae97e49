"""Take a trained encoder out of a demo's run: model.safetensors + config.json (minienc.export),
which minienc.export.load_encoder reads back bit-identical and PyTorch loads by name
(docs/own_data.md has the five lines).

    python demos/jepa.py --data folder:~/photos --image-size 32 --patch-size 4
    python demos/export.py runs/jepa/checkpoint.npz --out exported/
    python demos/export.py runs/byol --encoder objective/target_network.layers.0 --out exported/

The checkpoint holds each model's tensors by name, not its architecture; the encoder is rebuilt
from them and from the run's config.json beside the checkpoint (image shape, --heads):
  - a ViT where a prefix holds patch_embed.proj.weight: depth, widths, CLS token and whether
    its positions are the fixed sin-cos table all show in the tensors;
  - a Sequential of Linear / BatchNorm / Conv2d layers (the MLP and conv encoders): the layers
    between them, which hold no tensors, are ReLU (the demos' activation), or a Flatten where
    images meet the first Linear; a conv's stride and padding are ConvEncoder's (2 and 1), and
    the sizes are checked against the next Linear.
Which encoder: --encoder MODEL/PREFIX, else the one the checkpoint records: the module the
objective's embed(x) runs (Objective.embed_module, written by minienc.checkpoint), which is what
the demo evaluates. A checkpoint that records none (written before minienc recorded it, or of a
run trained with a step function) is refused, naming its models: say which with --encoder.
config.json's notes say how the demo pooled and normalised its inputs.
"""
import argparse
import json
import math
import os
import re
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numpy as np  # noqa: E402

from minienc import nn  # noqa: E402
from minienc.checkpoint import read_checkpoint  # noqa: E402
from minienc.data import load_dataset  # noqa: E402
from minienc.export import save_encoder  # noqa: E402

RELU, FLATTEN = {"type": "ReLU"}, {"type": "Flatten", "start_axis": 1}


def read_run(path):
    """(the checkpoint's path, its models' states {model: {key: array}}, the encoders it records
    {model: prefix}, the run's config.json)."""
    checkpoint = os.path.join(path, "checkpoint.npz") if os.path.isdir(path) else path
    try:
        meta, arrays = read_checkpoint(checkpoint)
    except (OSError, ValueError) as error:   # missing, truncated, not a checkpoint (CheckpointError)
        sys.exit(f"export: {error}")
    states = {}
    for key, array in arrays.items():
        kind, _, rest = key.partition("/")
        if kind == "model":
            model, _, name = rest.partition("/")
            states.setdefault(model, {})[name] = array
    config_path = os.path.join(os.path.dirname(os.path.abspath(checkpoint)), "config.json")
    try:
        with open(config_path) as f:
            config = json.load(f)
        config["flags"].get
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        sys.exit(f"export: the run's record {config_path} (its flags and image shape, beside the "
                 f"checkpoint) cannot be read ({type(error).__name__}: {error})")
    if not isinstance(config.get("data"), dict) or "image_shape" not in config["data"]:
        sys.exit(f"export: {config_path} records no image shape (a text run?): this script "
                 f"rebuilds image encoders; save any encoder from Python with "
                 f"minienc.export.save_encoder(model.encoder, folder)")
    return checkpoint, states, meta.get("encoders", {}), config


def choose_encoder(states, recorded, wanted=None):
    """(model, prefix, its tensors with the prefix removed): `wanted` (MODEL/PREFIX) if given,
    else the one encoder the checkpoint records ({model: prefix})."""
    def models():
        return ", ".join(f"{m} ({', '.join(sorted({k.split('.')[0] for k in s}))})"
                         for m, s in states.items())

    if wanted:
        model, _, prefix = wanted.partition("/")
        prefix = prefix + "." if prefix and not prefix.endswith(".") else prefix
    elif len(recorded) == 1:
        (model, prefix), = recorded.items()
    elif recorded:
        names = ", ".join(f"{m}/{p.rstrip('.')}" for m, p in recorded.items())
        sys.exit(f"export: the checkpoint records the encoders of several objectives, {names}: "
                 f"name one with --encoder MODEL/PREFIX")
    else:
        sys.exit(f"export: the checkpoint does not record which module is the encoder (it was "
                 f"written before minienc recorded it, or trained with a step function): name it "
                 f"with --encoder MODEL/PREFIX; the checkpoint's models: {models()}")
    found = {k[len(prefix):]: v for k, v in states.get(model, {}).items() if k.startswith(prefix)}
    if not found:
        sys.exit(f"export: no tensors under {model}/{prefix.rstrip('.')!r}; the checkpoint's "
                 f"models: {models()}")
    return model, prefix, found


# ----- rebuilding the architecture from the tensors -------------------------------------------------

def vit_architecture(state, image_shape, heads):
    channels, height, width = image_shape
    dim, patch_size = state["patch_embed.proj.weight"].shape
    p = int(round(math.sqrt(patch_size / channels)))
    depth = len({k.split(".")[1] for k in state if k.startswith("blocks.")})
    pos = state.get("pos_embed")
    kind = None
    if pos is not None:
        table = nn.get_2d_sincos_pos_embed(dim, (height // p, width // p))[None]
        kind = "sincos" if np.array_equal(pos, table) else "learned"
    vit = nn.VisionTransformer(image_size=(height, width), patch_size=p, in_channels=channels,
                               dim=dim, depth=depth, num_heads=heads, cls_token="cls_token" in state,
                               pos_embed=kind, qkv_bias=depth == 0 or "blocks.0.attn.qkv.bias" in state,
                               mlp_ratio=state["blocks.0.mlp.fc1.weight"].shape[0] / dim if depth else 4.0)
    return vit.load_state_dict(state)


def sequential_architecture(state, image_shape, where="encoder"):
    """A Sequential from the tensors of `layers.N...` (nested Sequentials recursively)."""
    groups = {}
    for key in state:
        match = re.match(r"layers\.(\d+)\.(.*)", key)
        if not match:
            sys.exit(f"export: {where}: {key!r} is not a layer of a Sequential or a ViT")
        groups.setdefault(int(match[1]), {})[match[2]] = state[key]
    layers, shape = [], tuple(image_shape)   # shape: what flows into the next layer (no batch)
    for i in range(max(groups) + 1):
        if i not in groups:   # a layer without tensors: a Flatten where images meet a Linear
            weight = _first_weight(groups[i + 1]) if i + 1 in groups else None
            flatten = len(shape) > 1 and weight is not None and weight.ndim == 2
            layers.append(nn.Flatten() if flatten else nn.ReLU())
            shape = (math.prod(shape),) if flatten else shape
            continue
        layer, shape = _layer(groups[i], shape, f"{where}.layers.{i}")
        layers.append(layer)
    return nn.Sequential(*layers)


def _first_weight(tensors):
    """The weight of the first layer these tensors make (inside nested Sequentials too)."""
    if "weight" in tensors or "running_mean" in tensors:
        return tensors.get("weight")
    first = min(int(k.split(".")[1]) for k in tensors if k.startswith("layers."))
    return _first_weight({k[len(f"layers.{first}."):]: v for k, v in tensors.items()
                          if k.startswith(f"layers.{first}.")})


def _layer(tensors, shape, where):
    """(the layer with these tensors, the shape it outputs)."""
    if any(k.startswith("layers.") for k in tensors):
        inner = sequential_architecture(tensors, shape, where)
        return inner, _output_shape(inner, shape)
    weight = tensors.get("weight")
    if "running_mean" in tensors:
        make = nn.BatchNorm1d if len(shape) == 1 else nn.BatchNorm2d
        layer = make(len(tensors["running_mean"]), affine=weight is not None)
    elif weight is not None and weight.ndim == 2:
        layer = nn.Linear(weight.shape[1], weight.shape[0], bias="bias" in tensors)
    elif weight is not None and weight.ndim == 4:
        layer = nn.Conv2d(weight.shape[1], weight.shape[0], weight.shape[2:], stride=2, padding=1,
                          bias="bias" in tensors)
    else:
        sys.exit(f"export: {where}: tensors {sorted(tensors)} are not a Linear, Conv2d or BatchNorm")
    layer.load_state_dict(tensors)
    return layer, _output_shape(layer, shape)


def _output_shape(layer, shape):
    from minienc import tensor
    from minienc.engine import no_grad
    with no_grad():
        try:
            return tuple(layer.eval()(tensor(np.zeros((2,) + tuple(shape), np.float32))).shape[1:])
        except ValueError as exc:
            sys.exit(f"export: the rebuilt layer {layer!r} does not take inputs of shape {shape}: {exc}")


# ----- what the demo did around the encoder ---------------------------------------------------------

def notes_for(config, vit):
    flags, demo = config["flags"], config.get("demo", "")
    notes = {"demo": demo, "data": config.get("data"), "inputs": "images (N, C, H, W) in [0, 1]"}
    if vit:
        notes["pooling"] = "mean"   # every ViT demo averages the patch tokens (CLS left out)
    if demo in ("jepa", "lejepa") and flags.get("standardize", 1):
        data = load_dataset(flags["data"], seed=flags["seed"], max_train=flags.get("max_train"),
                            max_test=flags.get("max_test"), image_size=flags.get("image_size"))
        notes["normalize"] = {"mean": float(data.x_train.mean()), "std": float(data.x_train.std()),
                              "how": "(images - mean) / std before the encoder (the train pixels')"}
    if demo == "vae":
        notes["output"] = (f"the first {flags['latent_dim']} numbers are the posterior mean (the "
                           f"embedding), the rest its log-variance")
    return notes


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="a run's checkpoint.npz, or the run folder holding it")
    parser.add_argument("--out", default="exported", help="the folder to write")
    parser.add_argument("--encoder", default=None,
                        help="MODEL/PREFIX of the encoder's tensors in the checkpoint, e.g. "
                             "objective/target_encoder (default: the one the checkpoint records, "
                             "which the demo evaluates)")
    parser.add_argument("--heads", type=int, default=None,
                        help="a ViT's attention heads (default: the run's --heads, else 4)")
    args = parser.parse_args()
    checkpoint, states, recorded, config = read_run(args.run)
    model, prefix, state = choose_encoder(states, recorded, args.encoder)
    image_shape = config["data"]["image_shape"]
    vit = "patch_embed.proj.weight" in state
    if vit:
        heads = args.heads or config["flags"].get("heads") or 4
        encoder = vit_architecture(state, image_shape, heads)
    else:
        encoder = sequential_architecture(state, image_shape)
    try:
        save_encoder(encoder, args.out, **notes_for(config, vit), checkpoint=checkpoint,
                     tensors_from=f"{model}/{prefix.rstrip('.')}")
    except (FileExistsError, ValueError) as error:   # --out a run's folder, a diverged encoder
        sys.exit(f"export: {error}")
    print(f"exported {model}/{prefix.rstrip('.') or '(the whole model)'} of {checkpoint}: "
          f"{encoder.num_parameters():,} parameters -> "
          f"{os.path.join(args.out, 'model.safetensors')} + config.json")


if __name__ == "__main__":
    main()
