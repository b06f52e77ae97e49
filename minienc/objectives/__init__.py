"""Encoder objectives, one file per family, each opening with the math it implements:
reconstruction (AE, denoising AE, VAE), contrastive (triplet, InfoNCE/SimCLR, MoCo),
masked (MLM, MAE) and jepa (I-JEPA)."""
from .masked import MAE, mae_loss, patch_targets, random_masking  # noqa: F401
from .contrastive import (MoCo, SimCLR, batch_triplet_loss, info_nce, info_nce_logits,  # noqa: F401
                          mine_batch_all, mine_batch_hard, mine_semi_hard, nt_xent,
                          pairwise_distances, projection_head, triplet_loss, view_triplet_loss)
