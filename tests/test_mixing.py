"""Mixup and CutMix as a batch transform: lambda drawn from Beta(alpha, alpha), the images and
labels mixed as the papers say, the same under the same seed; and a method plugin installed
outside the repository trains on mixed batches through the shared trainer."""


import pytest
import torch
import torch.nn.functional as F
from scipy import stats

from ltbench import registry
from ltbench.method import Batch, Draw
from ltbench.mixing import mix_batch, mixed_loss
from ltbench.testing import CHECKS, _one_step, toy_data, toy_spec, toy_trainer

from test_plugins import installed_method


def numbered(n=32, side=8, views=1):
    """Image i is the constant i and has label i, so a mixed pixel says which images made it."""
    images = torch.arange(n, dtype=torch.float).view(n, 1, 1, 1).expand(n, 3, side, side)
    return Batch([images.clone() for _ in range(views)], torch.arange(n))


def mixed(seed, mix="mixup", alpha=1.0, **kwargs):
    torch.manual_seed(seed)
    batch = numbered(**kwargs)
    mix_batch(batch, Draw(mix=mix, mix_alpha=alpha))
    return batch


def test_mixup_blends_each_image_with_its_partner_by_lambda_in_every_view():
    batch = mixed(0, views=2)
    lam, own, partner = batch.lam, batch.labels, batch.labels_b
    assert 0 <= lam <= 1 and torch.equal(own, torch.arange(32))
    assert torch.equal(partner.sort().values, own)  # a permutation of the batch
    expected = (lam * own + (1 - lam) * partner).float().view(-1, 1, 1, 1).expand(32, 3, 8, 8)
    for view in batch.views:
        assert torch.allclose(view, expected, atol=1e-5)


def test_cutmix_pastes_one_box_of_the_partner_and_lambda_is_the_share_left():
    batch = mixed(3, mix="cutmix", side=16)
    view, own, partner = batch.views[0], batch.labels, batch.labels_b
    pasted = (view != own.view(-1, 1, 1, 1).float())[:, 0]  # where an image shows another's pixels
    keep = own != partner
    box = pasted[keep][0]
    rows, cols = box.any(1).nonzero().flatten(), box.any(0).nonzero().flatten()
    area = (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
    assert box.sum() == area  # one rectangle
    assert (pasted[keep] == box).all()  # the same box in every image
    assert torch.equal(view[:, 0][:, box], partner.float().view(-1, 1).expand(-1, int(area)))
    assert batch.lam == pytest.approx(1 - float(area) / 256)


@pytest.mark.parametrize("mix", ["mixup", "cutmix"])
def test_a_seed_gives_the_same_mix_and_another_seed_another(mix):
    a, b, c = mixed(5, mix, side=16), mixed(5, mix, side=16), mixed(6, mix, side=16)
    assert a.lam == b.lam and torch.equal(a.labels_b, b.labels_b) and torch.equal(a.views[0], b.views[0])
    assert a.lam != c.lam and not torch.equal(a.labels_b, c.labels_b)


@pytest.mark.parametrize("alpha", [0.2, 1.0])
def test_lambda_is_drawn_from_beta_alpha_alpha(alpha):
    torch.manual_seed(0)
    lams = []
    for _ in range(400):
        batch = numbered(n=4, side=2)
        mix_batch(batch, Draw(mix="mixup", mix_alpha=alpha))
        lams.append(batch.lam)
    assert stats.kstest(lams, stats.beta(alpha, alpha).cdf).pvalue > 0.01
    assert stats.kstest(lams, stats.beta(alpha * 3, alpha * 3).cdf).pvalue < 0.01  # the test tells them apart


def test_the_mixed_loss_is_cross_entropy_on_the_mixed_targets():
    torch.manual_seed(1)
    logits = torch.randn(6, 4)
    batch = Batch([torch.zeros(6, 3, 2, 2)], torch.tensor([0, 1, 2, 3, 0, 1]), torch.tensor([1, 1, 3, 0, 2, 2]), 0.3)
    soft = 0.3 * F.one_hot(batch.labels, 4) + 0.7 * F.one_hot(batch.labels_b, 4)
    expected = -(soft * logits.log_softmax(1)).sum(1).mean()
    assert torch.allclose(mixed_loss(F.cross_entropy, logits, batch), expected, atol=1e-6)
    batch.labels_b = None  # an unmixed batch: the plain criterion
    assert torch.allclose(mixed_loss(F.cross_entropy, logits, batch), F.cross_entropy(logits, batch.labels))


@pytest.mark.parametrize("fields, message", [({"mix": "blend"}, "Draw.mix must be one of none, mixup, cutmix"),
                                             ({"mix": "mixup", "mix_alpha": 0}, "mix_alpha must be a number > 0")])
def test_a_draw_refuses_an_unknown_mix(fields, message):
    with pytest.raises(ValueError, match=message):
        Draw(**fields)


def test_an_unmixed_draw_leaves_the_batch_alone():
    batch = numbered()
    views = batch.views[0].clone()
    mix_batch(batch, Draw())
    assert torch.equal(batch.views[0], views) and batch.labels_b is None and batch.lam == 1.0


# --- a plugin outside the repository -----------------------------------------------------

PLUGIN = '''
import torch.nn.functional as F
from ltbench.method import Draw, LinearClassifierMethod
from ltbench.mixing import mix_options, mix_settings

class MixedCrossEntropy(LinearClassifierMethod):
    """Cross-entropy on mixed batches, written in its own package (Someone et al. 2030)."""

    name = "mixed_ce"
    hyperparameters = mix_settings("cutmix", 1.0, "Someone et al. 2030, Sec. 2", "Someone et al. 2030, Sec. 2")
    seen = []

    def __init__(self, hp, class_counts, feature_dim):
        super().__init__(hp, class_counts, feature_dim)
        self.draws = {"main": Draw(**mix_options(hp))}

    def loss(self, backbone, batches, progress):
        batch = batches["main"]
        type(self).seen.append((batch.labels.clone(), batch.labels_b, batch.lam))
        logits = self.logits(backbone(batch.views[0])).float()
        return batch.lam * F.cross_entropy(logits, batch.labels) + (1 - batch.lam) * F.cross_entropy(
            logits, batch.labels_b)
'''


@pytest.fixture
def mixing_plugin(tmp_path, monkeypatch):
    with installed_method(tmp_path, monkeypatch, "my_mixing_method", PLUGIN,
                          "mixed_ce = my_mixing_method:MixedCrossEntropy"):
        yield registry.method("mixed_ce")


@pytest.mark.parametrize("mix", ["cutmix", "mixup"])
def test_a_plugin_method_trains_on_mixed_batches(mixing_plugin, mix):
    mixing_plugin.seen.clear()
    trainer = toy_trainer(toy_spec("mixed_ce", **{"mixed_ce.batch_mix": mix}), toy_data())
    assert trainer.method.draws["main"].mix == mix
    loss = _one_step(trainer)
    (labels, partners, lam), = mixing_plugin.seen
    assert partners is not None and 0 <= lam <= 1 and torch.isfinite(torch.tensor(loss))
    assert torch.equal(partners.sort().values, labels.sort().values)


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
def test_a_mixing_plugin_passes_the_conformance_checks(mixing_plugin, check):
    check("mixed_ce")
