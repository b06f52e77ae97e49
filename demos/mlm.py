"""Masked language modeling (BERT) on real English: the prose of Python's standard-library
docstrings (or any text file). A small transformer learns to fill in hidden words; it is scored
on held-out sentences against always guessing by word frequency, shows its guesses for a few
blanks, and its mean-pooled sentence embeddings retrieve nearest-neighbour sentences.

    python demos/mlm.py                      # built-in corpus, 2,232 steps, a few CPU minutes
    python demos/mlm.py --text book.txt      # any UTF-8 text file

Writes <out>/config.json, loss.png, metrics.jsonl, checkpoint.npz, samples.txt and results.json;
--resume continues a stopped run.
"""
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import minienc  # noqa: E402
from minienc import backend  # noqa: E402
from common import (DemoParser, add_run_flags, fit, run_options, start_run, total_steps,  # noqa: E402
                    write_config)
from minienc.data import BatchIterator, Tokenizer, load_corpus, split_corpus  # noqa: E402
from minienc.objectives import MaskedLanguageModel, mask_tokens  # noqa: E402
from minienc.objectives.masked_language import IGNORE_INDEX  # noqa: E402
from minienc.optim import AdamW, WarmupCosine  # noqa: E402
from minienc.train import Trainer  # noqa: E402


def parse_args():
    parser = DemoParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--text", default=None, help="a UTF-8 text file (default: the built-in corpus)")
    parser.add_argument("--steps", type=int, default=2232, help="optimizer steps")
    parser.add_argument("--epochs", type=int, default=None, help="passes over the corpus instead of --steps")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--weight-decay", type=float, default=0.01)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--depth", type=int, default=2)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--dropout", type=float, default=0.1)
    parser.add_argument("--max-len", type=int, default=32, help="tokens per sentence, [CLS]/[SEP] included")
    parser.add_argument("--min-freq", type=int, default=2, help="rarer words become [UNK]")
    add_run_flags(parser)
    return parser.parse_args()


def predict(mlm, masking, batch_size=256):
    """Logits at the masked positions, (N, M, V) on the host, in batches without a graph."""
    out = []
    with minienc.no_grad():
        mlm.eval()
        for i in range(0, len(masking.inputs), batch_size):
            inputs, positions = (backend.to_device(a[i:i + batch_size], mlm.device)
                                 for a in (masking.inputs, masking.positions))
            out.append(backend.to_host(mlm.logits(inputs, positions).data))
        mlm.train()
    return np.concatenate(out)


def blank_masking(tok, ids, seed):
    """Fill-in-the-blank masking of host ids: BERT's choice of 15% of the words, all shown as
    [MASK], from a seeded host generator (the same blanks on every run and device)."""
    return mask_tokens(ids, tok.special_ids, tok.mask_id, len(tok), mask_fraction=1.0,
                       random_fraction=0.0, rng=np.random.default_rng(seed))


def masked_accuracy(mlm, tok, ids, unigram, passes=5, seed=0):
    """Top-1 / top-5 accuracy of the model and of the unigram guess (the training set's most
    frequent words) over `passes` random fill-in-the-blank maskings of held-out sentences."""
    frequent = np.argsort(-unigram)[:5]
    hits = {"model top-1": 0, "model top-5": 0, "unigram top-1": 0, "unigram top-5": 0}
    total = 0
    for p in range(passes):
        masking = blank_masking(tok, ids, seed + p)
        logits = predict(mlm, masking)
        used = masking.targets != IGNORE_INDEX
        truth = masking.targets[used]
        top5 = np.argsort(-logits[used], axis=-1)[:, :5]
        hits["model top-1"] += int((top5[:, 0] == truth).sum())
        hits["model top-5"] += int((top5 == truth[:, None]).any(1).sum())
        hits["unigram top-1"] += int((truth == frequent[0]).sum())
        hits["unigram top-5"] += int(np.isin(truth, frequent).sum())
        total += len(truth)
    return {k: v / total for k, v in hits.items()}, total


def fill_in_examples(mlm, tok, ids, count=5, seed=1):
    lines = []
    masking = blank_masking(tok, ids[:count], seed)
    logits = predict(mlm, masking)
    for row in range(count):
        slots = [(int(pos), j) for j, pos in enumerate(masking.positions[row])
                 if masking.targets[row, j] != IGNORE_INDEX]
        words = [tok.itos[i] for i in masking.inputs[row] if i not in (tok.pad_id, tok.cls_id, tok.sep_id)]
        blanks = {pos: k for k, (pos, _) in enumerate(sorted(slots))}
        text = " ".join(f"__{blanks[i + 1] + 1}__" if i + 1 in blanks else w for i, w in enumerate(words))
        lines.append(f"  {text}")
        for pos, j in sorted(slots):
            probs = np.exp(logits[row, j] - logits[row, j].max())
            probs /= probs.sum()
            top = np.argsort(-probs)[:3]
            guesses = ", ".join(f"{tok.itos[t]} ({probs[t]:.0%})" for t in top)
            lines.append(f"     __{blanks[pos] + 1}__ = {tok.itos[masking.targets[row, j]]!r:14} guesses: {guesses}")
    return lines


def embed_all(mlm, ids, batch_size=256):
    with minienc.no_grad():
        mlm.eval()
        out = [backend.to_host(mlm.embed(backend.to_device(ids[i:i + batch_size], mlm.device)).data)
               for i in range(0, len(ids), batch_size)]
        mlm.train()
    return np.concatenate(out)


def neighbour_examples(mlm, train_sentences, train_ids, test_sentences, test_ids, queries=(0, 1, 2, 3)):
    """Cosine neighbours after centring: mean-pooled vectors share one large common direction
    (every cosine near 1), so the training set's mean vector is removed first."""
    z_train, z_test = embed_all(mlm, train_ids), embed_all(mlm, test_ids[list(queries)])
    center = z_train.mean(axis=0)
    z_train, z_test = ((z - center) / np.linalg.norm(z - center, axis=1, keepdims=True)
                       for z in (z_train, z_test))
    lines = []
    for q, z in zip(queries, z_test):
        sims = z_train @ z
        lines.append(f"  query: {test_sentences[q]}")
        for i in np.argsort(-sims)[:2]:
            lines.append(f"    {sims[i]:.2f}  {train_sentences[i]}")
    return lines


def main():
    args = parse_args()
    start_run(args)   # seed, device, --out (refused if it holds a run, unless --resume/--overwrite)
    device = args.device

    train_sentences, test_sentences = split_corpus(load_corpus(args.text), seed=args.seed)
    tok = Tokenizer.fit(train_sentences, min_freq=args.min_freq)
    train_ids = tok.encode_batch(train_sentences, args.max_len, add_sep=True)
    test_ids = tok.encode_batch(test_sentences, args.max_len, add_sep=True)
    unigram = np.bincount(train_ids.ravel(), minlength=len(tok)).astype(np.float64)
    unigram[list(tok.special_ids)] = 0     # only words are ever masked
    print(f"corpus: {len(train_sentences)} train / {len(test_sentences)} held-out sentences, "
          f"{tok}, device {device}")
    write_config(args, corpus=dict(train=len(train_sentences), test=len(test_sentences),
                                   vocab=len(tok)))

    mlm = MaskedLanguageModel(len(tok), max_len=args.max_len, dim=args.dim, depth=args.depth,
                              num_heads=args.heads, pad_id=tok.pad_id, dropout=args.dropout,
                              special_ids=tok.special_ids, mask_id=tok.mask_id)   # BERT's masking
    print(f"model: {mlm.num_parameters():,} parameters ({mlm.encoder.token_embedding.weight.size:,} "
          f"in the token embedding, shared with the output layer)")
    loader = BatchIterator(train_ids, batch_size=args.batch_size, shuffle=True, drop_last=True,
                           seed=args.seed)

    steps = total_steps(args, loader)
    optimizer = AdamW(mlm.param_groups(args.weight_decay), lr=args.lr)
    lr = WarmupCosine(args.lr, steps, warmup_steps=steps // 20)
    trainer = Trainer(mlm, optimizer, **run_options(args, schedules={"lr": lr}, log_every=25))
    fit(args, trainer, loader, steps)   # each step masks the batch's ids as BERT does

    scores, count = masked_accuracy(mlm, tok, test_ids, unigram, seed=args.seed)
    print(f"\nmasked-word accuracy on {len(test_sentences)} held-out sentences ({count} blanks over 5 maskings)")
    print(f"  {'':14}{'top-1':>8}{'top-5':>8}")
    for who in ("model", "unigram"):
        label = "MLM" if who == "model" else "word frequency"
        print(f"  {label:14}{scores[who + ' top-1']:8.1%}{scores[who + ' top-5']:8.1%}")

    samples = ["held-out sentences, blanks filled in (truth, then the top-3 guesses):",
               *fill_in_examples(mlm, tok, test_ids, seed=args.seed + 100), "",
               "nearest training sentences to held-out ones (cosine of centred mean-pooled embeddings):",
               *neighbour_examples(mlm, train_sentences, train_ids, test_sentences, test_ids)]
    print("\n" + "\n".join(samples))
    with open(os.path.join(args.out, "samples.txt"), "w") as f:
        f.write("\n".join(samples) + "\n")
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump({"blanks": count, **scores, "vocab": len(tok), "parameters": mlm.num_parameters()}, f, indent=1)


if __name__ == "__main__":
    main()
