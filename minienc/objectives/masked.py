"""Masked modeling: predict what was hidden from what is left.

Two families, one file each, each opening with its math:
  masked_image.py      MAE (He et al. 2022): random_masking, patch_targets, mae_loss, MAE
  masked_language.py   BERT's masked language model (Devlin et al. 2019): mask_tokens,
                       mlm_loss, MLMHead, MaskedLanguageModel
This module gathers both names, so `from minienc.objectives.masked import MAE, random_masking`
works whichever file a name lives in.
"""
from .masked_image import MAE, mae_loss, patch_targets, random_masking  # noqa: F401
from .masked_language import (IGNORE_INDEX, MaskedLanguageModel, MLMHead, TokenMasking,  # noqa: F401
                              mask_tokens, max_predictions_for, mlm_loss)
