"""The image workloads of benchmarks/benchmark.py: conv_ae, vit_mae and vit_jepa, minienc and PyTorch.

Each minienc model is built with a seed (conv_ae from nn parts, the ViT workloads with
minienc.objectives' MAE and IJEPA, exactly as their demos train); its PyTorch twin has the same module and
parameter names, so it loads minienc's state_dict and starts from the same weights. Masks (MAE's
visible patches, I-JEPA's context and target blocks) are drawn once on the host and reused every
step: mask sampling is not what is being timed, and both twins then do exactly the same work.
"""
import numpy as np

import minienc
from minienc import backend, nn
from minienc.objectives.jepa import IJEPA
from minienc.objectives.masked_image import MAE, random_masking
from minienc.objectives.multiblock import MultiBlockMaskSampler
from minienc.optim import Adam, AdamW, param_groups_without_decay

from benchmarks.bench_mlp import train_step

IMAGE, PATCH, GRID = 28, 4, 7          # 28x28 images cut into a 7x7 grid of 4x4 patches


# ----- conv_ae ---------------------------------------------------------------------------------
class ConvAE:
    """Conv 1->16->32 (3x3, stride 2, pad 1: 28 -> 14 -> 7), ReLU, transposed convs back
    (32->16->1, output_padding 1: 7 -> 14 -> 28), sigmoid BCE on the logits, Adam, batch 64."""

    name = "conv_ae"
    batch, lr = 64, 1e-3

    def __init__(self, seed=0, batch=None):
        self.batch = batch or self.batch
        minienc.manual_seed(seed)
        self.model = nn.Sequential(
            nn.Conv2d(1, 16, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),
            nn.ConvTranspose2d(32, 16, 3, stride=2, padding=1, output_padding=1), nn.ReLU(),
            nn.ConvTranspose2d(16, 1, 3, stride=2, padding=1, output_padding=1))
        # the twin starts from these weights (minienc's Sequential names its layers layers.i)
        self.state = {k.removeprefix("layers."): v for k, v in self.model.state_dict().items()}
        self.x = np.random.default_rng(seed).random((self.batch, 1, IMAGE, IMAGE), np.float32)

    def parts(self, device):
        model = self.model.to(device)
        x = minienc.tensor(self.x, device=device)
        return (Adam(model.parameters(), lr=self.lr),
                lambda: minienc.binary_cross_entropy_with_logits(model(x), x), None)

    def torch(self, device):
        import torch
        c = torch.nn
        model = c.Sequential(
            c.Conv2d(1, 16, 3, stride=2, padding=1), c.ReLU(),
            c.Conv2d(16, 32, 3, stride=2, padding=1), c.ReLU(),
            c.ConvTranspose2d(32, 16, 3, stride=2, padding=1, output_padding=1), c.ReLU(),
            c.ConvTranspose2d(16, 1, 3, stride=2, padding=1, output_padding=1))
        model = _torch_twin(model, self.state, device)
        x = torch.from_numpy(self.x).to(device)
        return train_step(torch.optim.Adam(model.parameters(), lr=self.lr),
                           lambda: torch.nn.functional.binary_cross_entropy_with_logits(model(x), x))


# ----- vit_mae ---------------------------------------------------------------------------------
class VitMAE:
    """MAE (minienc.objectives.MAE): ViT 28x28, patch 4, dim 128, depth 4, 4 heads, MLP x4 on the
    25% visible patches; decoder dim 64, depth 2; MSE on the removed patches' pixels; AdamW
    (no decay on biases and norms); batch 64."""

    name = "vit_mae"
    batch, lr, weight_decay = 64, 1e-3, 0.05
    config = dict(image_size=IMAGE, patch_size=PATCH, dim=128, depth=4, num_heads=4,
                  decoder_dim=64, decoder_depth=2, decoder_num_heads=4, mask_ratio=0.75)

    def __init__(self, seed=0, batch=None):
        self.batch = batch or self.batch
        minienc.manual_seed(seed)
        self.model = MAE(**self.config)
        self.state = self.model.state_dict()
        self.images = np.random.default_rng(seed).random((self.batch, 1, IMAGE, IMAGE), np.float32)
        self.masking = random_masking(self.batch, GRID * GRID, 0.75, device="cpu")  # host arrays

    def parts(self, device):
        model = self.model.to(device)
        images = minienc.tensor(self.images, device=device)
        masking = [backend.to_device(a, device) for a in self.masking]
        opt = AdamW(param_groups_without_decay(model, self.weight_decay), lr=self.lr)
        return opt, lambda: model.masked_prediction(images, masking)[0], None

    def torch(self, device):
        import torch
        c = self.config
        model = _torch_twin(_torch_parts().MAE(c["dim"], c["depth"], c["num_heads"], c["decoder_dim"],
                                               c["decoder_depth"], c["decoder_num_heads"]),
                            self.state, device)
        images = torch.from_numpy(self.images).to(device)
        masking = [torch.from_numpy(a).to(device) for a in self.masking]
        opt = torch.optim.AdamW(_torch_groups(model.parameters(), self.weight_decay), lr=self.lr)
        return train_step(opt, lambda: model(images, *masking))


# ----- vit_jepa --------------------------------------------------------------------------------
class VitJEPA:
    """I-JEPA (minienc.objectives.IJEPA): the vit_mae encoder as context encoder and its EMA
    (momentum 0.996) as target encoder; predictor dim 64, depth 2; 4 target blocks from the
    multi-block sampler; smooth-L1 against the layer-normed target features; AdamW; batch 64."""

    name = "vit_jepa"
    batch, lr, weight_decay, momentum = 64, 1e-3, 0.05, 0.996

    def __init__(self, seed=0, batch=None):
        self.batch = batch or self.batch
        minienc.manual_seed(seed)
        self.model = IJEPA(nn.VisionTransformer(IMAGE, PATCH, 1, 128, 4, 4), predictor_dim=64,
                           predictor_depth=2, predictor_heads=4)
        self.state = self.model.state_dict()
        rs = np.random.default_rng(seed)
        self.images = rs.random((self.batch, 1, IMAGE, IMAGE), np.float32)
        self.context_idx, self.target_idx = MultiBlockMaskSampler(GRID, num_targets=4)(self.batch, rs)

    def parts(self, device):
        model = self.model.to(device)
        images = minienc.tensor(self.images, device=device)
        ctx, tgt = (backend.to_device(a, device) for a in (self.context_idx, self.target_idx))
        opt = AdamW(model.param_groups(self.weight_decay), lr=self.lr)
        return (opt, lambda: model.loss(images, masks=(ctx, tgt))["loss"],
                lambda: model.update_target(self.momentum))

    def torch(self, device):
        import torch
        model = _torch_twin(_torch_parts().IJEPA(128, 4, 4, 64, 2, 4), self.state, device)
        images = torch.from_numpy(self.images).to(device)
        ctx, tgt = (torch.from_numpy(a).to(device) for a in (self.context_idx, self.target_idx))
        trained = list(model.context_encoder.parameters()) + list(model.predictor.parameters())
        opt = torch.optim.AdamW(_torch_groups(trained, self.weight_decay), lr=self.lr)
        return train_step(opt, lambda: model(images, ctx, tgt),
                          after=lambda: model.update_target(self.momentum))


# ----- shared ----------------------------------------------------------------------------------
def _torch_groups(params, weight_decay):
    """param_groups_without_decay for PyTorch: no decay on biases and norm weights."""
    params = list(params)
    return [{"params": [p for p in params if p.ndim > 1], "weight_decay": weight_decay},
            {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0}]


def _torch_twin(model, state, device):
    """`model` (PyTorch, with minienc's names) loaded with minienc's initial `state` (host arrays)."""
    import torch
    state = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()}
    model.load_state_dict(state, strict=True)
    return model.to(device)


_parts = None


def _torch_parts():
    """The PyTorch twins of the ViT pieces (defined on first use: PyTorch stays optional)."""
    global _parts
    if _parts is None:
        from benchmarks.bench_torch_vit import parts
        _parts = parts()
    return _parts


WORKLOADS = (ConvAE, VitMAE, VitJEPA)
