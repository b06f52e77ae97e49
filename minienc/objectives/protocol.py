"""One protocol for every objective: each is an answer to "what signal trains the encoder?"

    objective = SimCLR(encoder, head, augment=two_views)   # or MAE(...), VAE(...), BYOL(...)
    opt = AdamW(objective.param_groups(weight_decay=0.05), lr=1e-3)
    for step, batch in enumerate(loader):
        terms = objective.loss(batch)        # {"loss": scalar Tensor, other terms to log}
        opt.zero_grad()
        terms["loss"].backward()
        opt.step()
        objective.after_step(step / steps)   # EMA targets, centres, queues
    features = objective.embed(images)       # the representation a probe evaluates

or, with progress, checkpoints and evaluation beside the same step: Trainer(objective, opt).

- `loss(batch)`: the objective makes its own training signal from the raw batch (its noise,
  views, masks) and returns a dict with "loss" (what backward starts from) and any other scalar
  terms worth logging. `batch` is what the data loader yields: images (B, C, H, W) for the image
  objectives, token ids (B, T) for masked language modeling; an objective that reads labels
  (triplet loss with class labels) takes (images, labels).
- `embed(x)`: the representation that is evaluated (probes, k-NN, RankMe), never the head.
  `embed_module()` names the module it runs (its output pooled or cut, never more), which a
  checkpoint records (minienc/checkpoint.py) so that an export takes out that one.
- `param_groups(weight_decay)`: what the optimizer trains -- weights with `weight_decay`,
  biases and norm parameters without -- and never a target network (EMA copies hold
  requires_grad=False parameters and are left out).
- `after_step(progress)`: called once after every optimizer step with the progress of the step
  just taken, step / steps for step = 0, 1, ..., steps - 1 (so the first is 0, as BYOL's and
  DINO's momentum schedules count); objectives with a momentum target, a centre or a queue
  move them here. Objectives without such state inherit the no-op. A number the LOSS reads
  (a VAE's KL weight, DINO's teacher temperature) is a plain attribute instead, which a loop
  sets before the step -- the Trainer's `schedules` set any attribute of the objective they
  name -- so it is exact for the step that uses it and on resume.

The objectives on augmented views (SimCLR, MoCo, triplet, BYOL, SimSiam, VICReg, Barlow
Twins, DINO) derive from `ViewObjective`: `loss(images)` draws the views with the objective's
own `augment` and hands them to `loss_of_views(*views)`, which is the objective's formula (and
what a test calls on views it holds fixed).

The functional losses (`nt_xent`, `sigreg`, `vicreg_loss`, ...) stay beneath as the formulas.
"""
from ..nn.module import Module
from ..optim.optimizer import param_groups_without_decay


def head_width(owner, head, what):
    """The out_features of `head`'s last layer (a Sequential's last, or the head itself): the
    width of what the head gives, named when the head does not say."""
    layers = getattr(head, "layers", None)
    last = layers[-1] if layers else head
    if not isinstance(getattr(last, "out_features", None), int):
        raise TypeError(f"{owner}: the head must end in a layer with out_features ({what}), "
                        f"got {type(head).__name__}")
    return last.out_features


class Objective(Module):
    """The base of every objective (see the module docstring)."""

    def loss(self, batch):
        raise NotImplementedError(f"{type(self).__name__}.loss(batch) is not written")

    def embed(self, x):
        """The evaluated representation: the encoder's output, unless an objective says other."""
        return self.encoder(x)

    def embed_module(self):
        """The module whose output `embed` is (pooled or cut at most): the encoder, unless an
        objective embeds with another (an EMA target, a teacher); None where there is none to
        name (a checkpoint then records none, and an export is told which by hand)."""
        return getattr(self, "encoder", None)

    def param_groups(self, weight_decay=0.0):
        """The trained parameters in two groups (weights decayed, biases and norms not); a
        target network's parameters (requires_grad=False) are never among them."""
        groups = param_groups_without_decay(self, weight_decay)
        for group in groups:
            group["params"] = [p for p in group["params"] if p.requires_grad]
        return [g for g in groups if g["params"]]

    def after_step(self, progress):
        """Nothing to move after an optimizer step."""

    def forward(self, x):
        return self.embed(x)


class ViewObjective(Objective):
    """An objective on augmented views of each image: `augment` (a callable images -> one view,
    drawn twice: view 1, then view 2) makes them, `loss_of_views` is the formula on them."""

    augment = None

    def views(self, images):
        if self.augment is None:
            raise ValueError(f"{type(self).__name__}.loss(images) draws its views with `augment`, "
                             f"but none was given: pass augment= (or call loss_of_views on views)")
        return [self.augment(images), self.augment(images)]

    def loss(self, images):
        return self.loss_of_views(*self.views(images))

    def loss_of_views(self, *views):
        raise NotImplementedError(f"{type(self).__name__}.loss_of_views(*views) is not written")
