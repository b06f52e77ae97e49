"""The image workloads of demos/benchmark.py: conv_ae, vit_mae and vit_jepa, minienc and PyTorch.

Each minienc model is built from nn parts with a seed; its PyTorch twin has the same module and
parameter names, so it loads minienc's state_dict and starts from the same weights. Masks (MAE's
visible patches, I-JEPA's context and target blocks) are drawn once on the host and reused every
step: mask sampling is not what is being timed, and both twins then do exactly the same work.
"""
import copy

import numpy as np

import minienc
from minienc import nn
from minienc.optim import EMA, Adam, AdamW

from bench_mlp import train_step

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

    def minienc(self, device):
        model = self.model.to(device)
        x = minienc.tensor(self.x, device=device)
        return train_step(Adam(model.parameters(), lr=self.lr),
                             lambda: minienc.binary_cross_entropy_with_logits(model(x), x))

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
class MaeDecoder(nn.Module):
    """MAE's light decoder: embed the visible tokens to `dim`, put a shared mask token at every
    hidden position, add position embeddings, `depth` blocks, predict each patch's pixels."""

    def __init__(self, enc_dim=128, dim=64, depth=2, heads=4, patch_pixels=PATCH * PATCH):
        self.embed = nn.Linear(enc_dim, dim)
        self.mask_token = nn.init.trunc_normal(nn.init.empty((1, 1, dim)), std=0.02)
        self.register_buffer("pos_embed", nn.get_2d_sincos_pos_embed(dim, GRID)[None])
        self.blocks = [nn.TransformerBlock(dim, heads) for _ in range(depth)]
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pred = nn.Linear(dim, patch_pixels)
        nn.init_transformer_weights(self, style="xavier")

    def forward(self, latent, restore):
        """latent (B, K, enc_dim) of the visible patches; restore (B, N) puts the sequence
        [visible..., hidden...] back in raster order. -> (B, N, patch_pixels)."""
        b, k, _ = latent.shape
        n = restore.shape[1]
        hidden = self.mask_token.broadcast_to(b, n - k, self.mask_token.shape[-1])
        x = nn.gather_tokens(minienc.concatenate([self.embed(latent), hidden], axis=1), restore)
        x = x + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return self.pred(self.norm(x))


class VitMAE:
    """MAE: ViT 28x28, patch 4, dim 128, depth 4, 4 heads, MLP x4 on the 25% visible patches;
    decoder dim 64, depth 2; MSE on the hidden patches' pixels; AdamW; batch 64."""

    name = "vit_mae"
    batch, lr, weight_decay, mask_ratio = 64, 1e-3, 0.05, 0.75

    def __init__(self, seed=0, batch=None):
        self.batch = batch or self.batch
        minienc.manual_seed(seed)
        self.encoder = nn.VisionTransformer(IMAGE, PATCH, 1, 128, 4, 4, weight_init="xavier")
        self.decoder = MaeDecoder()
        self.state = {"encoder": self.encoder.state_dict(), "decoder": self.decoder.state_dict()}
        rs = np.random.default_rng(seed)
        self.images = rs.random((self.batch, 1, IMAGE, IMAGE), np.float32)
        n = GRID * GRID
        keep = int(n * (1 - self.mask_ratio))
        order = np.argsort(rs.random((self.batch, n)), axis=1)      # MAE's per-sample shuffle
        self.visible, self.hidden = order[:, :keep], order[:, keep:]
        self.restore = np.argsort(order, axis=1)

    def minienc(self, device):
        enc, dec = self.encoder.to(device), self.decoder.to(device)
        images = minienc.tensor(self.images, device=device)
        xp = images.xp
        visible, hidden, restore = (xp.asarray(a) for a in (self.visible, self.hidden, self.restore))
        target = nn.gather_tokens(nn.patchify(images, PATCH), hidden)
        opt = AdamW(enc.parameters() + dec.parameters(), lr=self.lr,
                    weight_decay=self.weight_decay)

        def loss():
            pred = dec(enc(images, visible), restore)
            return minienc.mse_loss(nn.gather_tokens(pred, hidden), target)
        return train_step(opt, loss)

    def torch(self, device):
        import torch
        t = _torch_parts()
        enc = _torch_twin(t.ViT(128, 4, 4), self.state["encoder"], device)
        dec = _torch_twin(t.MaeDecoder(128, 64, 2, 4), self.state["decoder"], device)
        images = torch.from_numpy(self.images).to(device)
        visible, hidden, restore = (torch.from_numpy(a).to(device)
                                    for a in (self.visible, self.hidden, self.restore))
        target = t.gather(t.patchify(images), hidden)
        opt = torch.optim.AdamW(list(enc.parameters()) + list(dec.parameters()), lr=self.lr,
                                weight_decay=self.weight_decay)

        def loss():
            pred = dec(enc(images, visible), restore)
            return torch.nn.functional.mse_loss(t.gather(pred, hidden), target)
        return train_step(opt, loss)


# ----- vit_jepa --------------------------------------------------------------------------------
class JepaPredictor(nn.Module):
    """I-JEPA's narrow predictor: the context tokens (embedded to `dim`) and one mask token per
    target position, each with its position embedding, through `depth` blocks; the outputs at
    the target positions are projected back to the encoder's width."""

    def __init__(self, enc_dim=128, dim=64, depth=2, heads=4):
        self.embed = nn.Linear(enc_dim, dim)
        self.mask_token = nn.init.trunc_normal(nn.init.empty((1, 1, dim)), std=0.02)
        self.register_buffer("pos_embed", nn.get_2d_sincos_pos_embed(dim, GRID)[None])
        self.blocks = [nn.TransformerBlock(dim, heads) for _ in range(depth)]
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.proj = nn.Linear(dim, enc_dim)
        nn.init_transformer_weights(self)

    def forward(self, context, context_idx, target_idx):
        """context (B, Kc, enc_dim) at context_idx (B, Kc); target_idx (T, B, Kt), one block per
        row. -> (T*B, Kt, enc_dim): the context is repeated for each of the T target blocks."""
        pos = self.pos_embed[0]
        t, b, kt = target_idx.shape
        ctx = self.embed(context) + pos[context_idx]
        ctx = minienc.concatenate([ctx] * t, axis=0)
        queries = self.mask_token + pos[target_idx.reshape(t * b, kt)]
        x = minienc.concatenate([ctx, queries], axis=1)
        for block in self.blocks:
            x = block(x)
        return self.proj(self.norm(x)[:, -kt:])


def jepa_blocks(rs, batch, targets=4, side=3):
    """Per sample, `targets` random side x side blocks of the grid (T, B, side^2), and the
    context: the patches in none of them, cut to the batch's shortest so it stacks (B, Kc)."""
    target_idx = np.empty((targets, batch, side * side), dtype=np.int64)
    contexts = []
    for i in range(batch):
        covered = np.zeros((GRID, GRID), dtype=bool)
        for j in range(targets):
            r, c = rs.integers(0, GRID - side + 1, size=2)
            covered[r:r + side, c:c + side] = True
            rows, cols = np.mgrid[r:r + side, c:c + side]
            target_idx[j, i] = (rows * GRID + cols).ravel()
        contexts.append(rs.permutation(np.flatnonzero(~covered.ravel())))
    kc = min(len(c) for c in contexts)
    return target_idx, np.stack([np.sort(c[:kc]) for c in contexts])


class VitJEPA:
    """I-JEPA: the vit_mae encoder as context encoder and its EMA (momentum 0.996) as target
    encoder; predictor dim 64, depth 2; 4 target blocks of 3x3 patches; smooth-L1 against the
    layer-normed target features; AdamW; batch 64."""

    name = "vit_jepa"
    batch, lr, weight_decay, momentum = 64, 1e-3, 0.05, 0.996

    def __init__(self, seed=0, batch=None):
        self.batch = batch or self.batch
        minienc.manual_seed(seed)
        self.encoder = nn.VisionTransformer(IMAGE, PATCH, 1, 128, 4, 4)
        self.predictor = JepaPredictor()
        self.state = {"encoder": self.encoder.state_dict(),
                      "predictor": self.predictor.state_dict()}
        rs = np.random.default_rng(seed)
        self.images = rs.random((self.batch, 1, IMAGE, IMAGE), np.float32)
        self.target_idx, self.context_idx = jepa_blocks(rs, self.batch)

    def minienc(self, device):
        enc, pred = self.encoder.to(device), self.predictor.to(device)
        ema = EMA(enc, target=copy.deepcopy(enc))
        for p in ema.target.parameters():
            p.requires_grad = False
        images = minienc.tensor(self.images, device=device)
        xp = images.xp
        ctx_idx, tgt_idx = xp.asarray(self.context_idx), xp.asarray(self.target_idx)
        t, b, kt = tgt_idx.shape
        opt = AdamW(enc.parameters() + pred.parameters(), lr=self.lr,
                    weight_decay=self.weight_decay)

        def loss():
            with minienc.no_grad():
                h = minienc.layer_norm(ema.target(images))               # (B, N, D)
                rows = xp.arange(b)[None, :, None]
                target = h[rows, tgt_idx].reshape(t * b, kt, h.shape[-1])
            out = pred(enc(images, ctx_idx), ctx_idx, tgt_idx)
            return minienc.smooth_l1_loss(out, target)
        return train_step(opt, loss, after=lambda: ema.update(self.momentum))

    def torch(self, device):
        import torch
        t = _torch_parts()
        enc = _torch_twin(t.ViT(128, 4, 4), self.state["encoder"], device)
        target_enc = copy.deepcopy(enc).requires_grad_(False)
        pred = _torch_twin(t.JepaPredictor(128, 64, 2, 4), self.state["predictor"], device)
        images = torch.from_numpy(self.images).to(device)
        ctx_idx = torch.from_numpy(self.context_idx).to(device)
        tgt_idx = torch.from_numpy(self.target_idx).to(device)
        nt, b, kt = tgt_idx.shape
        opt = torch.optim.AdamW(list(enc.parameters()) + list(pred.parameters()), lr=self.lr,
                                weight_decay=self.weight_decay)
        online, averaged = list(enc.parameters()), list(target_enc.parameters())
        f = torch.nn.functional

        def loss():
            with torch.no_grad():
                h = target_enc(images)
                h = f.layer_norm(h, h.shape[-1:])
                rows = torch.arange(b, device=images.device)[None, :, None]
                target = h[rows, tgt_idx].reshape(nt * b, kt, h.shape[-1])
            out = pred(enc(images, ctx_idx), ctx_idx, tgt_idx)
            return f.smooth_l1_loss(out, target)

        def ema_update():
            with torch.no_grad():
                torch._foreach_mul_(averaged, self.momentum)
                torch._foreach_add_(averaged, online, alpha=1 - self.momentum)
        return train_step(opt, loss, after=ema_update)


# ----- shared ----------------------------------------------------------------------------------
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
        from bench_torch_vit import parts
        _parts = parts()
    return _parts


WORKLOADS = (ConvAE, VitMAE, VitJEPA)
