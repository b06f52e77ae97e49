"""Masked language modeling: BERT's pre-training objective (Devlin et al. 2019, "BERT: Pre-training
of Deep Bidirectional Transformers for Language Understanding"; official code:
google-research/bert, create_pretraining_data.py and run_pretraining.py).

Choose positions. In each sequence of token ids, the candidates are the tokens that are neither
special ([PAD], [UNK], [CLS], [SEP], [MASK]) nor padding; of its n candidates exactly

    k = min(max_predictions, max(1, round(0.15 n)))          (k = 0 when n = 0)

are chosen uniformly at random, as create_pretraining_data.py does (a fixed count per sequence,
not an independent 15% coin per token as Hugging Face's DataCollatorForLanguageModeling: the
same expected rate, with less variance, and a known maximum so the predictions fit a fixed
(B, max_predictions) array). Each chosen token is then corrupted independently:

    80%  replaced by [MASK]
    10%  replaced by a random non-special token (uniform over the vocabulary's words)
    10%  left unchanged

so the model cannot tell which visible tokens it will be asked about and must keep a good
representation of every token. Its label is the ORIGINAL token; unchosen positions are ignored.

Predict. A TextTransformer encoder gives h_i for every position; the MLM head maps each chosen
position's h_i through dense -> GELU -> LayerNorm to u_i and scores every word w by its TIED
input embedding, logits_iw = u_i . E_w + b_w (one output bias per word). The loss is the
softmax cross-entropy averaged over the chosen positions of the whole batch:

    L = -(1 / sum_b k_b) sum_b sum_{i chosen in b} log softmax(logits_i)[original token at i]

As in run_pretraining.py, the head runs only at the chosen positions (gathered to a fixed
(B, max_predictions) array, the unused slots ignored), not at all B * L positions.
"""
from collections import namedtuple

from .. import backend, checks, ops
from ..nn.encoders import TextTransformer, check_text_transformer
from ..nn.layers import GELU, Linear
from ..nn.module import Module
from ..nn.norm import LayerNorm
from ..nn.transformer import init_transformer_weights
from ..nn.vit import gather_tokens
from ..nn import init
from ..engine import as_array
from .protocol import Objective

IGNORE_INDEX = -100

TokenMasking = namedtuple("TokenMasking", ["inputs", "labels", "positions", "targets"])
TokenMasking.__doc__ = """What mask_tokens returns (device int64 arrays):
    inputs    (B, L)  the corrupted ids the encoder sees
    labels    (B, L)  the original id at each chosen position, ignore_index elsewhere
    positions (B, M)  the chosen positions, left-packed; unused slots hold 0
    targets   (B, M)  labels gathered at positions (ignore_index in unused slots)"""


def max_predictions_for(length, mask_prob=0.15):
    """The most positions mask_tokens can choose in a sequence of `length`: round(p * length), at
    least 1 (Python's round, half to even, like the array rounding below)."""
    return max(1, int(round(mask_prob * length)))


def mask_tokens(ids, special_ids, mask_id, vocab_size, mask_prob=0.15, mask_fraction=0.8,
                random_fraction=0.1, max_predictions=None, ignore_index=IGNORE_INDEX, rng=None):
    """BERT's masking of a batch of token ids (B, L) (see the module docstring); returns a
    TokenMasking. special_ids: every id that is never chosen nor drawn as a random replacement
    (the tokenizer's specials, padding included). mask_fraction / random_fraction: how the chosen
    tokens are corrupted (0.8 / 0.1, the rest unchanged; 1.0 / 0.0 hides every chosen token, as
    a fill-in-the-blank test wants). All on the ids' device from `rng` (default: minienc's seeded
    generator of that device), with no host sync."""
    data = as_array(ids)
    if data.ndim != 2 or data.dtype.kind not in "iu":
        raise ValueError(f"mask_tokens: ids must be integers (B, L), got {data.dtype} {tuple(data.shape)}")
    if not (0.0 < mask_prob <= 1.0 and mask_fraction >= 0.0 and random_fraction >= 0.0
            and mask_fraction + random_fraction <= 1.0):
        raise ValueError(f"mask_tokens: need 0 < mask_prob <= 1 and mask_fraction + random_fraction "
                         f"<= 1, got {mask_prob}, {mask_fraction}, {random_fraction}")
    xp = backend.get_xp(data)
    rng = rng if rng is not None else backend.rng(backend.device_of(data))
    batch, length = data.shape
    special = sorted(({int(i) for i in special_ids} | {int(mask_id)}) & set(range(vocab_size)))
    num_words = vocab_size - len(special)
    if num_words < 1:
        raise ValueError(f"mask_tokens: a vocabulary of {vocab_size} ids has no non-special token")
    most = max_predictions if max_predictions is not None else max_predictions_for(length, mask_prob)

    candidate = xp.ones(data.shape, dtype=bool)
    for sid in special:
        candidate &= data != sid
    n = candidate.sum(axis=1)
    count = xp.minimum(xp.maximum(xp.rint(n * mask_prob), 1), min(most, length)).astype(n.dtype)
    count = xp.where(n > 0, xp.minimum(count, n), 0)
    # candidates in random order first (non-candidates get noise 2 > any uniform draw)
    noise = xp.where(candidate, rng.random((batch, length), dtype=xp.float32), xp.float32(2.0))
    order = xp.argsort(noise, axis=1)[:, :most]
    used = xp.arange(order.shape[1]) < count[:, None]                        # (B, M)
    positions = xp.where(used, order, 0)
    chosen = xp.zeros((batch, length), dtype=bool)
    chosen[xp.arange(batch)[:, None], order] = used                           # order has no repeats

    u = rng.random((batch, length), dtype=xp.float32)
    to_mask = chosen & (u < mask_fraction)
    to_random = chosen & (u >= mask_fraction) & (u < mask_fraction + random_fraction)
    # a uniform word: draw an index among the num_words words, then step over each special id
    random_ids = xp.minimum(rng.random((batch, length), dtype=xp.float32) * num_words,
                            num_words - 1).astype(data.dtype)
    for sid in special:                                         # ascending
        random_ids += random_ids >= sid
    inputs = xp.where(to_mask, data.dtype.type(mask_id), xp.where(to_random, random_ids, data))
    labels = xp.where(chosen, data, data.dtype.type(ignore_index))
    targets = xp.where(used, xp.take_along_axis(data, order, axis=1), data.dtype.type(ignore_index))
    return TokenMasking(inputs, labels, positions, targets)


def mlm_loss(logits, targets, ignore_index=IGNORE_INDEX):
    """Cross-entropy of logits (..., V) against the original ids (...), averaged over the
    positions whose target is not ignore_index."""
    return ops.cross_entropy(logits, targets, ignore_index=ignore_index)


class MLMHead(Module):
    """BERT's prediction head: u = LayerNorm(GELU(dense(h))), logits = u @ E.T + bias, where E
    (V, dim) is the encoder's token embedding, passed in (tied, not a parameter of the head)."""

    def __init__(self, dim, vocab_size, eps=1e-12):
        checks.positive_int("MLMHead", "dim", dim)
        checks.positive_int("MLMHead", "vocab_size", vocab_size)
        self.dense = Linear(dim, dim)
        self.act = GELU()
        self.norm = LayerNorm(dim, eps=eps)
        init_transformer_weights(self)                      # trunc_normal(0.02), as BERT's
        self.bias = init.zeros(init.empty((vocab_size,)))

    def forward(self, hidden, embedding_weight):
        if tuple(embedding_weight.shape) != (self.bias.shape[0], hidden.shape[-1]):
            raise ValueError(f"MLMHead: embedding {tuple(embedding_weight.shape)} does not match "
                             f"hidden {tuple(hidden.shape)} and {self.bias.shape[0]} output biases")
        return ops.linear(self.norm(self.act(self.dense(hidden))), embedding_weight, self.bias)


class MaskedLanguageModel(Objective):
    """A TextTransformer encoder with BERT's MLM head tied to its token embedding.

        mlm = MaskedLanguageModel(len(tok), special_ids=tok.special_ids, mask_id=tok.mask_id,
                                  max_len=32, dim=128, depth=2)
        terms = mlm.loss(ids)                    # BERT's masking of ids (B, L), then the loss
        logits = mlm.logits(ids, positions)      # (B, M, V); (B, L, V) without positions
        sentence_vectors = mlm.embed(ids)        # (B, dim): mean over non-padding tokens

    special_ids, mask_id: the tokenizer's (never chosen, never drawn as random words);
    mask_prob: the share of each sequence's words chosen (`mask_tokens`).
    """

    def __init__(self, vocab_size, max_len=64, dim=128, depth=2, num_heads=4, mlp_ratio=4.0,
                 pad_id=0, dropout=0.0, ignore_index=IGNORE_INDEX, special_ids=(), mask_id=None,
                 mask_prob=0.15):
        owner = "MaskedLanguageModel"   # every argument checked under its name, the encoder's too
        check_text_transformer(owner, vocab_size, max_len, dim, depth, num_heads, mlp_ratio,
                               pad_id, dropout)
        checks.in_range(owner, "mask_prob", mask_prob, 0.0, 1.0, include_low=False)
        if not checks.is_int(ignore_index):
            raise ValueError(f"{owner}: ignore_index must be an integer, got {ignore_index!r}")
        if not isinstance(special_ids, (tuple, list, set, frozenset)):
            raise ValueError(f"{owner}: special_ids must be a collection of token ids, got {special_ids!r}")
        for i in special_ids:
            checks.token_id(owner, "special_ids", i, vocab_size)
        if mask_id is not None:   # (None: loss_of_masking only, the caller masks)
            checks.token_id(owner, "mask_id", mask_id, vocab_size)
        self.encoder = TextTransformer(vocab_size, max_len, dim, depth, num_heads, mlp_ratio,
                                       pad_id=pad_id, dropout=dropout)
        self.head = MLMHead(dim, vocab_size)
        self.vocab_size, self.pad_id, self.ignore_index = vocab_size, pad_id, ignore_index
        self.special_ids, self.mask_id, self.mask_prob = tuple(special_ids), mask_id, mask_prob

    def loss(self, ids):
        if self.mask_id is None:
            raise ValueError("MaskedLanguageModel.loss(ids) masks the ids itself: give the "
                             "tokenizer's special_ids and mask_id to the constructor")
        masking = mask_tokens(ids, self.special_ids, self.mask_id, self.vocab_size, self.mask_prob)
        return self.loss_of_masking(masking)

    def loss_of_masking(self, masking):
        """The MLM loss of one TokenMasking: cross-entropy at its chosen positions."""
        logits = self.logits(masking.inputs, masking.positions)
        return {"loss": mlm_loss(logits, masking.targets, self.ignore_index)}

    def logits(self, inputs, positions=None):
        hidden = self.encoder(inputs)
        if positions is not None:
            hidden = gather_tokens(hidden, positions)
        return self.head(hidden, self.encoder.token_embedding.weight)

    def embed(self, ids):
        """Sentence embeddings (B, dim): the encoder's outputs averaged over non-padding tokens."""
        data = as_array(ids)
        hidden = self.encoder(ids)
        real = (data != self.pad_id).astype(hidden.dtype)[..., None]
        return (hidden * real).sum(axis=1) / backend.get_xp(real).maximum(real.sum(axis=1), 1.0)
