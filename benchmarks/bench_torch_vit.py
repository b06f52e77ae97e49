"""PyTorch twins of minienc's ViT, MAE and I-JEPA for benchmarks/benchmark.py (PyTorch is never a minienc
dependency; this module is imported only when the benchmark runs its PyTorch side).

Module and parameter names match minienc's (encoder.blocks.0.attn.qkv.weight, decoder_embed.bias,
predictor.mask_token, ...), so each twin loads minienc's state_dict as it is. The math matches
too: pre-norm blocks, LayerNorm eps 1e-6, one packed qkv projection, GELU's tanh form, patches
laid out (p, p, C) in raster order.
"""
import types


def parts():
    import torch
    from torch import nn
    f = nn.functional

    def patchify(images, p=4):
        b, c, h, w = images.shape
        x = images.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 3, 5, 1)
        return x.reshape(b, (h // p) * (w // p), p * p * c)

    def gather(tokens, idx):
        return tokens[torch.arange(tokens.shape[0], device=tokens.device)[:, None], idx]

    def sincos(dim, grid=7):
        # minienc's table, so the fixed embeddings are equal by construction
        from minienc.nn import get_2d_sincos_pos_embed
        return torch.from_numpy(get_2d_sincos_pos_embed(dim, grid)[None])

    class Attention(nn.Module):
        def __init__(self, dim, heads):
            super().__init__()
            self.heads, self.qkv, self.proj = heads, nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)

        def forward(self, x):
            b, n, d = x.shape
            q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
            out = f.scaled_dot_product_attention(q, k, v)
            return self.proj(out.transpose(1, 2).reshape(b, n, d))

    class Mlp(nn.Module):
        def __init__(self, dim, hidden):
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)

        def forward(self, x):
            return self.fc2(f.gelu(self.fc1(x), approximate="tanh"))

    class Block(nn.Module):
        def __init__(self, dim, heads, ratio=4):
            super().__init__()
            self.norm1, self.attn = nn.LayerNorm(dim, eps=1e-6), Attention(dim, heads)
            self.norm2, self.mlp = nn.LayerNorm(dim, eps=1e-6), Mlp(dim, ratio * dim)

        def forward(self, x):
            x = x + self.attn(self.norm1(x))
            return x + self.mlp(self.norm2(x))

    class PatchEmbed(nn.Module):
        def __init__(self, dim, p=4):
            super().__init__()
            self.proj = nn.Linear(p * p, dim)

    class ViT(nn.Module):
        def __init__(self, dim, depth, heads):
            super().__init__()
            self.patch_embed = PatchEmbed(dim)
            self.blocks = nn.ModuleList([Block(dim, heads) for _ in range(depth)])
            self.norm = nn.LayerNorm(dim, eps=1e-6)
            self.register_buffer("pos_embed", sincos(dim))

        def forward(self, images, idx=None):
            patches = patchify(images)
            pos = self.pos_embed.expand(images.shape[0], -1, -1)
            if idx is not None:
                patches, pos = gather(patches, idx), gather(pos, idx)
            x = self.patch_embed.proj(patches) + pos
            for block in self.blocks:
                x = block(x)
            return self.norm(x)

    def blocks(dim, depth, heads):
        return nn.ModuleList([Block(dim, heads) for _ in range(depth)])

    class MAE(nn.Module):
        """minienc.objectives.MAE: encoder on the visible patches, light decoder, loss on the
        removed patches (per-patch pixel mean, then the mean over removed patches)."""

        def __init__(self, dim, depth, heads, decoder_dim, decoder_depth, decoder_heads, p=4):
            super().__init__()
            self.encoder = ViT(dim, depth, heads)
            self.decoder_embed = nn.Linear(dim, decoder_dim)
            self.decoder_blocks = blocks(decoder_dim, decoder_depth, decoder_heads)
            self.decoder_norm = nn.LayerNorm(decoder_dim, eps=1e-6)
            self.decoder_pred = nn.Linear(decoder_dim, p * p)
            self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_dim))
            self.register_buffer("decoder_pos_embed", sincos(decoder_dim))

        def forward(self, images, ids_keep, ids_restore, mask):
            x = self.decoder_embed(self.encoder(images, ids_keep))
            b, k, d = x.shape
            hidden = self.mask_token.expand(b, ids_restore.shape[1] - k, d)
            x = gather(torch.cat([x, hidden], dim=1), ids_restore) + self.decoder_pos_embed
            for block in self.decoder_blocks:
                x = block(x)
            pred = self.decoder_pred(self.decoder_norm(x))
            per_patch = ((pred - patchify(images)) ** 2).mean(dim=-1)
            return (per_patch * mask).sum() / mask.sum()

    class Predictor(nn.Module):
        """minienc.objectives.jepa.JEPAPredictor: every target block in one pass."""

        def __init__(self, enc_dim, dim, depth, heads):
            super().__init__()
            self.embed, self.proj = nn.Linear(enc_dim, dim), nn.Linear(dim, enc_dim)
            self.blocks, self.norm = blocks(dim, depth, heads), nn.LayerNorm(dim, eps=1e-6)
            self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
            self.register_buffer("pos_embed", sincos(dim)[0])

        def forward(self, context, cidx, tidx):
            b, kc, _ = context.shape
            _, t, kt = tidx.shape
            x = self.embed(context) + self.pos_embed[cidx]
            x = x[:, None].expand(b, t, kc, x.shape[-1]).reshape(b * t, kc, x.shape[-1])
            queries = self.mask_token + self.pos_embed[tidx.reshape(b * t, kt)]
            x = torch.cat([x, queries], dim=1)
            for block in self.blocks:
                x = block(x)
            return self.proj(self.norm(x)[:, kc:]).reshape(b, t, kt, -1)

    class IJEPA(nn.Module):
        """minienc.objectives.IJEPA: context encoder, frozen EMA target encoder, predictor."""

        def __init__(self, dim, depth, heads, predictor_dim, predictor_depth, predictor_heads):
            super().__init__()
            self.context_encoder = ViT(dim, depth, heads)
            self.target_encoder = ViT(dim, depth, heads).requires_grad_(False)
            self.predictor = Predictor(dim, predictor_dim, predictor_depth, predictor_heads)

        def forward(self, images, cidx, tidx):
            with torch.no_grad():
                h = self.target_encoder(images)
                h = f.layer_norm(h, h.shape[-1:])
                b, t, kt = tidx.shape
                targets = gather(h, tidx.reshape(b, t * kt)).reshape(b, t, kt, h.shape[-1])
            pred = self.predictor(self.context_encoder(images, cidx), cidx, tidx)
            return f.smooth_l1_loss(pred, targets)

        @torch.no_grad()
        def update_target(self, m):
            target = list(self.target_encoder.parameters())
            torch._foreach_mul_(target, m)
            torch._foreach_add_(target, list(self.context_encoder.parameters()), alpha=1 - m)

    return types.SimpleNamespace(MAE=MAE, IJEPA=IJEPA)
