"""Data: real images and text that ship offline, your own folder of pictures, on-device
augmentations, a batch iterator.

Host-side loading here may use NumPy directly (the one package besides backend.py that does);
the augmentations work on whatever device the images are on."""
from .augment import (Augmentation, BrightnessContrast, Compose, GaussianNoise, MaskingNoise,
                      RandomAffine, RandomCrop, RandomErasing, RandomResizedCrop, SaltAndPepperNoise,
                      affine_sample, contrastive_augment, exact_fraction_mask)
from .augment import MultiCrop  # noqa: F401  (multi-crop views: DINO, SwAV)
from .colour import (ColorJitter, GaussianBlur, RandomGrayscale, RandomHorizontalFlip, Solarize,
                     simclr_augment)
from .datasets import (CIFAR10_CLASSES, DATA_HELP, UNLABELED, ImageDataset, load_cifar10,
                       load_dataset, load_digits, load_digits_canvas, load_mnist, parse_data_spec,
                       read_cifar10_batch, read_idx, stratified_split, stratified_subset, subsample)
from .folder import decode_picture, load_folder  # Pillow is imported only when they run
from .loader import BatchIterator
from .text import (SPECIAL_TOKENS, Tokenizer, builtin_corpus, load_corpus, load_text, split_corpus,
                   split_sentences, tokenize)
