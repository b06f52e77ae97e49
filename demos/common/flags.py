"""The demos' flags: DemoParser (a flag's value that cannot work is refused when the flags are
read), image_parser (the flags every image demo takes) and the flags of the recipes several demos
share. demos/common/__init__.py re-exports all of it, so a demo imports only common."""
import argparse

from minienc import backend, checks
from minienc import data as D
from minienc.objectives.reconstruction import LIKELIHOODS, check_sigma


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """--help with each flag's default, unless its help already says it or there is none:
    `--device  cpu or cuda (default: MINIENC_DEVICE or cpu)`, not that and `(default: None)`."""

    def _get_help_string(self, action):
        if action.default is None or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


class DemoParser(argparse.ArgumentParser):
    """argparse for the demos: a flag's value that cannot work (--steps 0, --data foo, --device
    cuda without CuPy) is refused when the flags are read, in one line that names the flag (exit
    status 2), not deep inside the run as a traceback; so is any other usage error. --help gives
    each flag's default (DefaultsHelpFormatter) unless a demo asks for another formatter."""

    POSITIVE = ("steps", "epochs", "batch_size")

    def __init__(self, *args, formatter_class=DefaultsHelpFormatter, **kwargs):
        super().__init__(*args, formatter_class=formatter_class, **kwargs)

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (--help lists the flags)\n")

    def parse_args(self, args=None, namespace=None):
        parsed = super().parse_args(args, namespace)
        for name in self.POSITIVE:
            value = getattr(parsed, name, None)
            if value is not None and value < 1:
                self.error(f"argument --{name.replace('_', '-')}: must be at least 1, got {value}")
        if getattr(parsed, "data", None) is not None:
            try:
                D.parse_data_spec(parsed.data)
            except ValueError as error:
                self.error(f"argument --data: {error}")
        if getattr(parsed, "device", None) is not None:
            try:
                backend.check_device(parsed.device)
                if parsed.device == "cuda" and not backend.cuda_available():
                    backend.cupy()    # says what to install when CuPy is missing
                    raise RuntimeError("CuPy sees no GPU here")
            except (ValueError, RuntimeError) as error:
                self.error(f"argument --device: {error}")
        return parsed


def checked(convert, rule):
    """An argparse type: the flag's text converted, then checked by `rule` (one of
    minienc.checks's, called as rule(owner, name, value)), so a value the recipe cannot use is
    refused when the flags are read, as "argument --crop: must be in (0, 1], got 0.0", and not
    as the traceback of the augmentation, layer or schedule the recipe builds from it."""
    def parse(text):
        value = convert(text)
        try:
            return rule("flag", "value", value)
        except ValueError as error:   # "flag: value must ...": the words after owner and name
            raise argparse.ArgumentTypeError(str(error).split(": ", 1)[1].split(" ", 1)[1]) from None
    parse.__name__ = convert.__name__   # argparse's "invalid int value: 'x'" for bad text
    return parse


POSITIVE_INT = checked(int, checks.positive_int)
COUNT = checked(int, checks.non_negative_int)
NON_NEGATIVE = checked(float, checks.non_negative)
FRACTION = checked(float, lambda owner, name, value: checks.in_range(owner, name, value, 0.0, 1.0,
                                                                       include_low=False))


def image_parser(description, steps=1000, latent_dim=None, batch_size=128, lr=1e-3, data="digits",
                 epochs=None):
    """The flags every image demo takes (defaults per demo): --steps (or --epochs) --latent-dim
    --batch-size --lr --data --max-train --max-test --draws --eval-every, and add_run_flags'.
    A demo may define one of them again (its own --steps, say): the later definition wins."""
    parser = DemoParser(description=description.strip().split("\n\n")[0],
                        conflict_handler="resolve")
    parser.add_argument("--steps", type=int, default=steps,
                        help="optimizer steps (the learning-rate schedule spans them)")
    parser.add_argument("--epochs", type=int, default=epochs,
                        help="passes over the train images instead of --steps")
    if latent_dim is not None:
        parser.add_argument("--latent-dim", type=POSITIVE_INT, default=latent_dim)
    parser.add_argument("--batch-size", type=int, default=batch_size)
    parser.add_argument("--lr", type=NON_NEGATIVE, default=lr)
    parser.add_argument("--data", default=data, help=D.DATA_HELP)
    parser.add_argument("--image-size", type=int, default=None,
                        help="the side --data folder:PATH pictures are resized and cropped to (32)")
    parser.add_argument("--max-train", type=int, default=None,
                        help="keep a seeded, stratified subset of this many train images")
    parser.add_argument("--max-test", type=int, default=None, help="... and of test images")
    parser.add_argument("--draws", type=int, default=100, help="few-shot probe draws")
    parser.add_argument("--eval-every", type=int, default=0,
                        help="steps between held-out evaluations while training (k-NN, 5-shot, "
                             "RankMe, embedding std, drawn into evaluation.png); 0: none")
    return add_run_flags(parser)


def add_run_flags(parser):
    """The flags every demo takes, images or not: --device --seed --out --resume --overwrite
    --threads --distributed."""
    parser.add_argument("--device", default=None, help="cpu or cuda (default: MINIENC_DEVICE or cpu)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="output folder (default: runs/<demo name>)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --out from its checkpoint")
    parser.add_argument("--overwrite", action="store_true",
                        help="start again over the run in --out")
    add_threads_flag(parser)
    add_distributed_flag(parser)
    return parser


def add_threads_flag(parser):
    parser.add_argument("--threads", type=int, default=None,
                        help="host threads for BLAS and minienc's elementwise work (default: "
                             "chosen at start-up by a quick probe, see minienc.tuning)")


def add_recipe_flags(parser, temperature=None):
    parser.add_argument("--hidden", type=POSITIVE_INT, default=256, help="projection head width")
    parser.add_argument("--crop", type=FRACTION, default=0.5, help="smallest crop area")
    parser.add_argument("--noise", type=NON_NEGATIVE, default=0.05, help="Gaussian noise std")
    parser.add_argument("--weight-decay", type=NON_NEGATIVE, default=1e-6)
    parser.add_argument("--warmup-steps", type=COUNT, default=50)
    if temperature is not None:
        parser.add_argument("--temperature", type=checked(float, checks.temperature),
                            default=temperature)
    return parser


def add_reconstruction_flags(parser):
    parser.add_argument("--arch", choices=("mlp", "conv"), default="mlp")
    parser.add_argument("--likelihood", choices=LIKELIHOODS, default="bernoulli",
                        help="decoder: bernoulli (BCE on logits) or gaussian (squared error / 2 sigma^2)")
    parser.add_argument("--sigma", type=checked(float, lambda owner, _, value: check_sigma(owner, value)),
                        default=1.0, help="the gaussian decoder's fixed std")
    return parser


def joint_embedding_parser(description):
    """image_parser and the two-view recipe's flags at SimCLR's budget (1,500 steps of 256
    images, LARS at base lr 1.0), and --monitor-every for the collapse gauges."""
    parser = add_recipe_flags(image_parser(description, steps=1500, latent_dim=64, batch_size=256,
                                           lr=1.0))
    parser.add_argument("--monitor-every", type=POSITIVE_INT, default=100,
                        help="steps between RankMe / embedding-std checks (collapse: both fall)")
    return parser


def add_distributed_flag(parser):
    parser.add_argument("--distributed", action="store_true",
                        help="data parallel over the processes of an MPI launcher, e.g. mpiexec "
                             "-n 2 python demos/simclr.py --distributed (--batch-size stays the "
                             "global batch, split between the processes)")
