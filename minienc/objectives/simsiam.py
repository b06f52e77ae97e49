"""SimSiam: BYOL without the moving-average target; the stop-gradient alone prevents collapse.

Chen & He 2021, "Exploring Simple Siamese Representation Learning" (CVPR); the released code is
facebookresearch/simsiam (simsiam/builder.py, main_simsiam.py).

One network (encoder f + projector g) sees both views; a predictor h (an MLP with a bottleneck)
maps one branch onto the other:

    z1 = g(f(x1)),  z2 = g(f(x2)),  p1 = h(z1),  p2 = h(z2)
    D(p, z) = -cos(p, stopgrad(z))                          (z is a constant for backward)
    L = D(p1, z2) / 2 + D(p2, z1) / 2,     averaged over the batch; in [-1, 1]

The projector is 3 layers, Linear-BN-ReLU twice and a Linear followed by batch norm without
affine (2048 wide in the paper); the predictor Linear-BN-ReLU-Linear with a 4x narrower hidden
layer (2048 -> 512 -> 2048). SGD with lr 0.05 * batch / 256 in the paper, the predictor's lr
kept constant (its --fix-pred-lr).

What stops collapse: the stop-gradient. Without it (`stop_gradient=False`) the gradient also
pulls z towards p through the encoder, and the loss falls to its minimum -1 at once (the
paper's figure 2): on digits within ~100 steps, the projection then maps every image to nearly
one direction (RankMe 1.2 in eval mode; in training the output batch norm keeps spreading the
batch) and the encoder loses dimensions. `python demos/simsiam.py --no-stop-gradient` shows it.
The paper reads SimSiam as an alternation (an EM-like step on the targets, a step on the
network), which the stop-gradient implements.
"""
from .. import checks
from ..nn import BatchNorm1d, Sequential
from .byol import mean_cosine_similarity
from .contrastive import check_head, projection_head
from .protocol import ViewObjective


def negative_cosine(predictions, targets):
    """D(p, z) = -mean_b cos(p_b, z_b) (pass z detached for SimSiam's stop-gradient)."""
    return -mean_cosine_similarity(predictions, targets)


def simsiam_loss(p1, p2, z1, z2, stop_gradient=True):
    """D(p1, z2) / 2 + D(p2, z1) / 2, the targets z detached when `stop_gradient`."""
    if stop_gradient:
        z1, z2 = z1.detach(), z2.detach()
    return 0.5 * (negative_cosine(p1, z2) + negative_cosine(p2, z1))


def simsiam_projector(in_features, hidden_features=256, out_features=256, num_layers=3):
    """Linear (no bias) - BN - ReLU per hidden layer, a last Linear, and batch norm without affine
    on the output (as the released builder)."""
    check_head("simsiam_projector", in_features, hidden_features, out_features, num_layers)
    head = projection_head(in_features, hidden_features, out_features, num_layers,
                           batch_norm=True, last_bias=False)
    return Sequential(*head.layers, BatchNorm1d(out_features, affine=False))


def simsiam_predictor(features=256, bottleneck=64):
    """The bottleneck MLP h: Linear (no bias) - BN - ReLU - Linear, features -> bottleneck ->
    features."""
    checks.positive_int("simsiam_predictor", "features", features)
    checks.positive_int("simsiam_predictor", "bottleneck", bottleneck)
    return projection_head(features, bottleneck, features, num_layers=2, batch_norm=True)


class SimSiam(ViewObjective):
    """Encoder + projector + predictor, one set of weights for both branches.

    model = SimSiam(encoder, simsiam_projector(64, 256, 256), simsiam_predictor(256, 64), augment)
    terms = model.loss(images)
    model.stop_gradient = False          # the ablation: collapse
    """

    def __init__(self, encoder, projector, predictor, augment=None, stop_gradient=True):
        checks.callable_or_none("SimSiam", "augment", augment)
        self.encoder, self.projector, self.predictor = encoder, projector, predictor
        self.augment, self.stop_gradient = augment, bool(stop_gradient)

    def loss_of_views(self, view1, view2):
        # each view its own forward pass, as the released code
        z1 = self.projector(self.encoder(view1))
        z2 = self.projector(self.encoder(view2))
        p1, p2 = self.predictor(z1), self.predictor(z2)
        return {"loss": simsiam_loss(p1, p2, z1, z2, self.stop_gradient)}
