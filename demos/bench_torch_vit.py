"""PyTorch twins of minienc's ViT pieces for demos/benchmark.py (PyTorch is never a minienc
dependency; this module is imported only when the benchmark runs its PyTorch side).

Module and parameter names match minienc's (blocks.0.attn.qkv.weight, patch_embed.proj.bias,
mask_token, pos_embed, ...), so each twin loads minienc's state_dict as it is. The math matches
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

    class Head(nn.Module):
        """What MAE's decoder and I-JEPA's predictor share: embed, mask token, blocks, norm."""

        def __init__(self, enc_dim, dim, depth, heads):
            super().__init__()
            self.embed = nn.Linear(enc_dim, dim)
            self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
            self.register_buffer("pos_embed", sincos(dim))
            self.blocks = nn.ModuleList([Block(dim, heads) for _ in range(depth)])
            self.norm = nn.LayerNorm(dim, eps=1e-6)

        def run(self, x):
            for block in self.blocks:
                x = block(x)
            return self.norm(x)

    class MaeDecoder(Head):
        def __init__(self, enc_dim, dim, depth, heads, patch_pixels=16):
            super().__init__(enc_dim, dim, depth, heads)
            self.pred = nn.Linear(dim, patch_pixels)

        def forward(self, latent, restore):
            b, k, _ = latent.shape
            hidden = self.mask_token.expand(b, restore.shape[1] - k, -1)
            x = gather(torch.cat([self.embed(latent), hidden], dim=1), restore)
            return self.pred(self.run(x + self.pos_embed))

    class JepaPredictor(Head):
        def __init__(self, enc_dim, dim, depth, heads):
            super().__init__(enc_dim, dim, depth, heads)
            self.proj = nn.Linear(dim, enc_dim)

        def forward(self, context, context_idx, target_idx):
            pos = self.pos_embed[0]
            t, b, kt = target_idx.shape
            ctx = (self.embed(context) + pos[context_idx]).repeat(t, 1, 1)
            queries = self.mask_token + pos[target_idx.reshape(t * b, kt)]
            x = self.run(torch.cat([ctx, queries], dim=1))
            return self.proj(x[:, -kt:])

    return types.SimpleNamespace(ViT=ViT, MaeDecoder=MaeDecoder, JepaPredictor=JepaPredictor,
                                 patchify=patchify, gather=gather)
