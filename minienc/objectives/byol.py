"""BYOL: an online network predicts a slowly moving target network's projection of another view.

Grill et al. 2020, "Bootstrap Your Own Latent: A New Approach to Self-Supervised Learning"
(NeurIPS); the released code is google-deepmind/deepmind-research, byol/ (byol_experiment.py,
utils/helpers.py, utils/schedules.py).

Online network (trained): encoder f_theta, projector g_theta, predictor q_theta. Target network
(not trained): encoder f_xi and projector g_xi, no predictor. For two views v, v' of an image:

    p  = q_theta(g_theta(f_theta(v)))        the online prediction
    z' = g_xi(f_xi(v'))                      the target projection, a constant (stop-gradient)
    l(v, v') = || p / ||p|| - z' / ||z'|| ||^2 = 2 - 2 cos(p, z')
    L = mean over the batch of l(v, v') + l(v', v)     (both directions summed, as the released
                                                        code and the paper's L + L~; in [0, 8])

Only theta descends L. After every optimizer step the target follows the online network by an
exponential moving average, with tau rising from tau_base to 1 along a cosine over the K steps:

    xi <- tau xi + (1 - tau) theta,     tau_k = 1 - (1 - tau_base) (cos(pi k / K) + 1) / 2

tau_base = 0.996 in the paper (its 1,000-epoch run); the released configs lower it for shorter
runs (0.99 for 300 and 100 epochs, 0.97 for 40). The projector and predictor are the same MLP,
Linear-BN-ReLU-Linear (4096 hidden, 256 out; the last Linear without bias). Batch norm is kept
in the target too, in training mode (batch statistics), as in the released code.

What stops collapse: nothing in L. A constant output would make l = 0, but the target is not
trained towards it: it is an average of past online networks, and the predictor, which only the
online branch has, must keep fitting a moving target. The dynamics avoid collapse, as for
I-JEPA (objectives/jepa.py). minienc.eval's RankMe and embedding std show whether they do.
"""
from .. import checks, ops
from ..engine import no_grad
from ..nn import Sequential
from ..optim.ema import EMA
from ..optim.schedules import cosine
from .contrastive import _check_embeddings, check_head, projection_head
from .protocol import ViewObjective


def mean_cosine_similarity(predictions, targets):
    """mean_b cos(p_b, z_b) of two (B, D) batches (the rows L2-normalised first)."""
    _check_embeddings("cosine similarity", predictions, targets)
    return (ops.normalize(predictions) * ops.normalize(targets)).sum(axis=1).mean()


def byol_loss(predictions, targets):
    """One direction of BYOL's regression loss: mean_b ||p_b/||p_b|| - z_b/||z_b|| ||^2, which is
    2 - 2 mean_b cos(p_b, z_b). `targets` should carry no graph (the target network's output)."""
    return 2.0 - 2.0 * mean_cosine_similarity(predictions, targets)


def byol_mlp(in_features, hidden_features=256, out_features=64):
    """BYOL's projector and predictor: Linear-BN-ReLU-Linear, the last Linear without bias.
    (The paper's hidden Linear has a bias; batch norm's shift makes it redundant.)"""
    check_head("byol_mlp", in_features, hidden_features, out_features, 2)
    return projection_head(in_features, hidden_features, out_features, num_layers=2,
                           batch_norm=True, last_bias=False)


class BYOL(ViewObjective):
    """Online encoder + projector + predictor, and the EMA target encoder + projector.

    byol = BYOL(encoder, byol_mlp(64, 256, 64), byol_mlp(64, 256, 64), augment, momentum=0.99)
    opt = LARS(byol.param_groups(1e-6), lr=1.0)      # online network and predictor only
    terms = byol.loss(images)                        # L of two augmented views
    byol.after_step(step / steps)                    # the target follows, tau_k on its cosine

    The target is a child module (`target_network`): its parameters are in state_dict (a
    checkpoint resumes it exactly) and move with `to()`, but have requires_grad=False and are
    never in `param_groups`. `embed` is the online encoder, the representation BYOL keeps.
    """

    def __init__(self, encoder, projector, predictor, augment=None, momentum=0.996):
        checks.in_range("BYOL", "momentum", momentum, 0.0, 1.0)
        checks.callable_or_none("BYOL", "augment", augment)
        self.online_network = Sequential(encoder, projector)
        self.predictor, self.augment, self.momentum = predictor, augment, momentum
        self._ema = EMA(self.online_network)   # a frozen deep copy of encoder + projector
        self.target_network = self._ema.target

    @property
    def encoder(self):
        return self.online_network[0]

    def loss_of_views(self, view1, view2):
        # each view its own forward pass (batch norm sees one view), as the released code
        p1 = self.predictor(self.online_network(view1))
        p2 = self.predictor(self.online_network(view2))
        with no_grad():   # no graph: no gradient can reach the target network
            z1, z2 = self.target_network(view1), self.target_network(view2)
        return {"loss": byol_loss(p1, z2) + byol_loss(p2, z1)}

    def after_step(self, progress):
        """xi <- tau xi + (1 - tau) theta, tau = 1 - (1 - tau_base) (cos(pi k / K) + 1) / 2."""
        self._ema.update(cosine(progress, self.momentum, 1.0, 1.0))
