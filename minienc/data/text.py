"""Real English text that exists offline on every machine, and a word-level tokenizer.

The built-in corpus is the prose in the docstrings of Python's own standard library: every
module, class and function docstring of the stdlib's .py files, read with `ast` (nothing is
imported or executed), in sorted file order, cleaned of code examples and markup, split into
sentences and de-duplicated. It is real, human-written English about programming (about 20,000
sentences on CPython 3.11); it differs slightly between Python versions, so results are
comparable on one interpreter. `load_text(path)` reads any UTF-8 file the same way (`--text FILE`).

    sentences = load_corpus()                       # or load_corpus("book.txt")
    train, test = split_corpus(sentences)
    tok = Tokenizer.fit(train, min_freq=3)
    sentences, labels, modules = builtin_corpus_by_module(10)   # a real label: the source module
    ids = tok.encode_batch(train, max_len=32)       # int64 (N, 32), [CLS] first, [PAD] after the end
"""
import ast
import collections
import functools
import os
import re
import sysconfig

import numpy

from .. import checks

# ----- cleaning and sentence splitting ------------------------------------------------------------

_SKIP_DIRS = {"test", "tests", "idlelib", "lib2to3", "site-packages", "dist-packages", "__pycache__",
              "turtledemo", "ensurepip", "pydoc_data", "tkinter", "__phello__", "venv"}
# a sentence ends at . ! or ? followed by space and a capital letter, quote or bracket
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'(\[])")
_MARKUP = [
    (re.compile(r":[a-z]+:`~?([^`]*)`"), r"\1"),       # reST roles :func:`name` -> name
    (re.compile(r"`+([^`]*)`+"), r"\1"),                 # ``literal`` and `x` -> x
    (re.compile(r"\*\*?([^*]+)\*\*?"), r"\1"),           # *emphasis*
    (re.compile(r"\s+"), " "),
]
_ABBREVIATIONS = re.compile(r"\b(e\.g|i\.e|etc|vs|cf|Mr|Dr|No)\.\s", re.IGNORECASE)


def _docstring_paragraphs(text):
    """Blocks of plain prose in a docstring: drop doctest lines, indented code, directives and field lists."""
    para = []
    for line in text.splitlines():
        stripped = line.strip()
        code_like = (stripped.startswith((">>>", "...", "..", ":", "-", "*", "+", "|", "#", "$", "%"))
                     or line.startswith((" ", "\t")) or stripped.endswith("::"))
        if not stripped or code_like:
            if para:
                yield " ".join(para)
            para = []
            continue
        para.append(stripped)
    if para:
        yield " ".join(para)


_CODE_CHARS = re.compile(r"[=\[\]{}<>_/\\@#|$%^~*+]|\(\)|\w\.\w|\d{3,}")
_PLAIN_WORD = re.compile(r"[(\"']?[A-Za-z][a-z]*(?:'[a-z]+)?[)\"']?[,;:.!?)]*")


def _is_prose(sentence):
    """Keep sentences that read as English: a capital first, a full stop last, 4-40 words,
    at least 90% of them plain words (no code, paths, calls or parameter lists)."""
    words = sentence.split()
    if not 4 <= len(words) <= 40 or not sentence[0].isupper() or sentence[-1] not in ".!?":
        return False
    if _CODE_CHARS.search(sentence.replace("e.g.", "").replace("i.e.", "")):
        return False
    return sum(bool(_PLAIN_WORD.fullmatch(w)) for w in words) >= 0.9 * len(words)


def split_sentences(text, prose_only=True):
    """Split running text (one paragraph; line breaks count as spaces) into sentences: markup
    removed, then a light rule-based split at . ! ? followed by a capital, with common
    abbreviations protected. With `prose_only`, keep only English-looking sentences."""
    for pattern, repl in _MARKUP:
        text = pattern.sub(repl, text)
    text = _ABBREVIATIONS.sub(lambda m: m.group(0).replace(".", "\0"), text.strip())
    out = []
    for sentence in _SENTENCE_END.split(text):
        sentence = sentence.replace("\0", ".").strip()
        if sentence and (not prose_only or _is_prose(sentence)):
            out.append(sentence)
    return out


def _dedupe(sentences):
    return list(dict.fromkeys(sentences))   # keeps first occurrences, in order


# ----- corpora ------------------------------------------------------------------------------------

def _stdlib_files():
    root = sysconfig.get_paths()["stdlib"]
    files = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS)   # sorted: a fixed walk order
        files += [os.path.join(folder, n) for n in sorted(names) if n.endswith(".py")]
    return root, files


def _module_name(root, path):
    """The top-level stdlib module or package a file belongs to: email/mime/text.py -> "email"."""
    first = os.path.relpath(path, root).split(os.sep)[0]
    return first[:-3] if first.endswith(".py") else first


@functools.lru_cache(maxsize=1)
def _builtin_sentences():
    """(sentence, module) pairs: each sentence once, with the module of its first appearance."""
    root, files = _stdlib_files()
    found = {}
    for path in files:
        try:
            with open(path, encoding="utf-8") as f:
                tree = ast.parse(f.read())
        except (SyntaxError, UnicodeDecodeError, ValueError, OSError):
            continue   # a stdlib file this interpreter cannot parse adds nothing
        module = _module_name(root, path)
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                for para in _docstring_paragraphs(doc or ""):
                    for sentence in split_sentences(para):
                        found.setdefault(sentence, module)   # keeps first occurrences, in order
    if len(found) < 1000:
        raise RuntimeError(f"builtin corpus: found only {len(found)} sentences in the standard "
                           f"library's sources under {root} (is this a stripped Python without .py "
                           f"files?); pass a text file instead (--text FILE)")
    return tuple(found.items())


def builtin_corpus():
    """Sentences of real English prose from the standard library's docstrings (a cached list)."""
    return [sentence for sentence, _ in _builtin_sentences()]


def builtin_corpus_by_module(modules=10, per_module=None):
    """A real label for the built-in corpus: (sentences, labels, names) for the sentences of the
    `modules` standard-library modules or packages with the most sentences (the label is the
    index of the sentence's module in `names`, most sentences first). `per_module` keeps at
    most that many sentences of each (the first ones, in file order), to balance the classes."""
    checks.positive_int("builtin_corpus_by_module", "modules", modules)
    if per_module is not None:
        checks.positive_int("builtin_corpus_by_module", "per_module", per_module)
    pairs = _builtin_sentences()
    counts = collections.Counter(module for _, module in pairs)
    names = [name for name, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:modules]]
    index = {name: i for i, name in enumerate(names)}
    kept, taken = [], collections.Counter()
    for sentence, module in pairs:
        if module in index and (per_module is None or taken[module] < per_module):
            kept.append((sentence, index[module]))
            taken[module] += 1
    return [s for s, _ in kept], numpy.array([y for _, y in kept], dtype=numpy.int64), names


def load_text(path, prose_only=False):
    """Sentences of any UTF-8 text file, cleaned and split like the built-in corpus. Blank lines
    separate paragraphs; `prose_only` applies the built-in corpus's English filter too."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except UnicodeDecodeError as exc:
        raise ValueError(f"load_text: {path} is not UTF-8 text ({exc})") from None
    sentences = []
    for para in re.split(r"\n\s*\n", text):   # blank lines end paragraphs; wrapped lines join
        sentences += split_sentences(para, prose_only=prose_only)
    sentences = _dedupe(sentences)
    if not sentences:
        raise ValueError(f"load_text: found no sentences in {path}")
    return sentences


def load_corpus(path=None):
    """The built-in corpus (path None or "builtin") or the sentences of a UTF-8 file."""
    return builtin_corpus() if path in (None, "builtin") else load_text(path)


def split_corpus(sentences, test_fraction=0.1, seed=0):
    """A seeded random split of sentences into (train, test) lists."""
    checks.in_range("split_corpus", "test_fraction", test_fraction, 0.0, 1.0, include_high=False)
    order = numpy.random.default_rng(seed).permutation(len(sentences))
    cut = len(sentences) - int(round(test_fraction * len(sentences)))
    return [sentences[i] for i in order[:cut]], [sentences[i] for i in order[cut:]]


# ----- tokenizer ----------------------------------------------------------------------------------

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
# after lower-casing: a special token, a word (letters/digits, inner apostrophes), or any one
# other character. Lower-casing comes first so that tokenizing decoded text gives the same tokens.
_TOKEN = re.compile(r"\[(?:pad|unk|cls|sep|mask)\]|[^\W_]+(?:'[^\W_]+)*|[^\s\w]|_")


def tokenize(text):
    """Lower-cased word-level tokens: words and single punctuation marks; special tokens written
    in the text ([MASK], in any case) stay whole and come back upper-case."""
    tokens = _TOKEN.findall(text.lower())
    return [t.upper() if t.startswith("[") and len(t) > 1 else t for t in tokens]


class Tokenizer:
    """Word-level tokenizer over a fixed vocabulary: the special tokens (ids 0-4, [PAD] = 0), then
    the words seen at least `min_freq` times, most frequent first (ties alphabetical).
    Words outside the vocabulary encode to [UNK]."""

    def __init__(self, words):
        words = [w for w in words if w not in SPECIAL_TOKENS]
        self.itos = list(SPECIAL_TOKENS) + words
        self.stoi = {w: i for i, w in enumerate(self.itos)}
        if len(self.stoi) != len(self.itos):
            raise ValueError("Tokenizer: the vocabulary lists a word twice")
        self.pad_id, self.unk_id, self.cls_id, self.sep_id, self.mask_id = range(len(SPECIAL_TOKENS))
        self.special_ids = tuple(range(len(SPECIAL_TOKENS)))

    @classmethod
    def fit(cls, sentences, min_freq=2, max_size=None):
        """Build the vocabulary from `sentences`: words with count >= min_freq, at most
        `max_size` entries in all (specials included)."""
        checks.positive_int("Tokenizer.fit", "min_freq", min_freq)
        if max_size is not None and not (checks.is_int(max_size) and max_size >= len(SPECIAL_TOKENS)):
            raise ValueError(f"Tokenizer.fit: max_size must be an integer >= {len(SPECIAL_TOKENS)} "
                             f"(the special tokens), got {max_size!r}")
        counts = collections.Counter(t for s in sentences for t in tokenize(s) if t not in SPECIAL_TOKENS)
        words = sorted((w for w, c in counts.items() if c >= min_freq), key=lambda w: (-counts[w], w))
        if max_size is not None:
            words = words[:max(0, max_size - len(SPECIAL_TOKENS))]
        return cls(words)

    def __len__(self):
        return len(self.itos)

    vocab_size = property(__len__)

    def encode(self, text):
        """A list of token ids (no [CLS]/[PAD]; see encode_batch)."""
        return [self.stoi.get(t, self.unk_id) for t in tokenize(text)]

    def decode(self, ids, skip_pad=True):
        """Tokens joined by single spaces ([PAD] dropped unless skip_pad=False)."""
        ids = [int(i) for i in ids]
        for i in ids:
            if not 0 <= i < len(self.itos):
                raise IndexError(f"Tokenizer.decode: id {i} is outside the vocabulary of {len(self.itos)}")
        return " ".join(self.itos[i] for i in ids if not (skip_pad and i == self.pad_id))

    def encode_batch(self, sentences, max_len, add_cls=True, add_sep=False):
        """int64 array (N, max_len): optional [CLS] first, the tokens (cut to fit), optional [SEP],
        then [PAD]. A host NumPy array; the batch iterator moves it to the device."""
        checks.positive_int("encode_batch", "max_len", max_len)
        out = numpy.full((len(sentences), max_len), self.pad_id, dtype=numpy.int64)
        room = max_len - int(add_cls) - int(add_sep)
        if room < 1:
            raise ValueError(f"encode_batch: max_len {max_len} leaves no room for tokens")
        for row, sentence in enumerate(sentences):
            ids = ([self.cls_id] if add_cls else []) + self.encode(sentence)[:room] + ([self.sep_id] if add_sep else [])
            out[row, :len(ids)] = ids
        return out

    def __repr__(self):
        return f"Tokenizer({len(self)} tokens: {', '.join(self.itos[:12])}, ...)"
