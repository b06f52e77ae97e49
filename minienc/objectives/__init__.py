"""Encoder objectives, one file per family, each opening with the math it implements:
reconstruction (AE, denoising AE, VAE), contrastive (triplet, InfoNCE/SimCLR, MoCo),
masked_image (MAE), masked_language (BERT's MLM), jepa (I-JEPA and MaskedViewsJEPA; the study's
variants in jepa_study), sigreg and lejepa (LeJEPA)."""
from .masked_image import MAE, mae_loss, patch_targets, random_masking  # noqa: F401
from .masked_language import MaskedLanguageModel, MLMHead, mask_tokens, mlm_loss  # noqa: F401
from .reconstruction import (VAE, Autoencoder, DenoisingAutoencoder, build_model,  # noqa: F401
                             corruption, kl_to_standard_normal, reconstruction_loss, reparameterize)
from .contrastive import (MoCo, SimCLR, batch_triplet_loss, info_nce, info_nce_logits,  # noqa: F401
                          mine_batch_all, mine_batch_hard, mine_semi_hard, nt_xent,
                          pairwise_distances, projection_head, triplet_loss, view_triplet_loss)
from .jepa import IJEPA, JEPAPredictor, MaskedViewsJEPA, jepa_loss  # noqa: F401
from .multiblock import MultiBlockMaskSampler, block_size  # noqa: F401
from .sigreg import epps_pulley, random_directions, sigreg  # noqa: F401
from .lejepa import LeJEPA, lejepa_terms  # noqa: F401
