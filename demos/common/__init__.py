"""What every demo shares, so that a demo imports only `common` (and minienc): the same flags,
the same set-up, the same run options and the same evaluation report -- and the recipes that
several demos share (two views; two views without negatives; autoencoders). The training itself
stays in each demo, in view:

    args = add_recipe_flags(image_parser(__doc__, steps=1500, latent_dim=64)).parse_args()
    data = setup(args)                   # seed, device, dataset, output folder, config.json
    objective = SimCLR(encoder, head, augment)
    loader, steps = two_view_batches(args, data, "SimCLR", objective)   # views.png, the batches
    optimizer = recipe_lars(args, objective)   # LARS at base lr * batch / 256
    trainer = Trainer(objective, optimizer, **recipe_options(args, data, objective, loader, steps))
    fit(args, trainer, loader, steps)    # --resume continues the run, --overwrite restarts it
    finish(args, data, "SimCLR", encoder, random_encoder)   # figures, the table, results.json

A run's folder is its record: config.json (flags, seed, versions, device), metrics.jsonl,
checkpoint.npz, the figures and results.json. A folder that holds a run is never reused unless
asked: --resume continues it from its checkpoint (a finished one is evaluated again, with the
same numbers), --overwrite starts it again. Ctrl-C or SIGTERM stops after the current step
and saves.

The package, by idea (a demo imports the names re-exported below from `common` itself, and the
helpers of one family of demos as modules: `from common import jepa_figures as figures`):

    flags.py         the demos' flags: DemoParser, image_parser and the recipes' flags
    runs.py          a run: set-up, config.json, fit with --resume, the report, --distributed
    recipes.py       the recipes several demos share: two views, autoencoders, joint embeddings
    jepa_runs.py     JEPA beside MAE: held-out curves in CPU time, MAE's runs (jepa, jepa_study)
    jepa_figures.py  the JEPA demos' pictures (jepa, jepa_study, lejepa)
    claims_lab.py    the claims' controlled comparisons, one function per claim (claims)
"""
import os
import sys

# the checkout's root, so that `import minienc` finds this checkout's library without an install
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))

from .flags import (DemoParser, add_distributed_flag, add_reconstruction_flags,  # noqa: E402,F401
                    add_recipe_flags, add_run_flags, add_threads_flag, image_parser,
                    joint_embedding_parser)
from .recipes import (build_reconstruction, collapse_gauges, mlp_encoder,  # noqa: E402,F401
                      recipe_lars, recipe_lr, recipe_options, reconstruction_batches,
                      reconstruction_options, save_gauges, say_loss, two_view_augment,
                      two_view_batches)
from .runs import (RESUME_MAY_CHANGE, RUN_FILES, demo_name, display_batch, finish,  # noqa: E402,F401
                   fit, old_run_files, report, run_options, save_grid, setup,
                   setup_distributed, start_process, start_run, total_steps, versions,
                   write_config)
