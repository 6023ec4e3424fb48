"""PaCo's loss against a plain-float reading of Cui et al.'s equation and against a transcription of
the original PaCoLoss (dvlab-research/Parametric-Contrastive-Learning PaCo/LT/losses.py); the
momentum encoder and the feature queue (ltbench.momentum) on fixed tensors; the query/key views."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from image_data import data_root, one_thread  # noqa: F401  (module fixtures)
from ltbench.data import paired_augment
from ltbench.method import Draw, View
from ltbench.momentum import FeatureQueue, MomentumEncoder
from ltbench.testing import toy_data, toy_spec, toy_trainer
from ltbench_methods.paco import paco_loss


def fixed_inputs(n=6, queue=5, dim=4, classes=3, seed=0):
    """n anchors (the first n samples), n keys and a queue; centre logits for the anchors."""
    gen = torch.Generator().manual_seed(seed)
    samples = F.normalize(torch.randn(2 * n + queue, dim, generator=gen, dtype=torch.float64), dim=1)
    labels = torch.randint(0, classes, (n,), generator=gen)
    queue_labels = torch.randint(0, classes, (queue,), generator=gen)
    sample_labels = torch.cat([labels, labels, queue_labels])
    centre_logits = 2 * torch.randn(n, classes, generator=gen, dtype=torch.float64)
    return samples[:n], labels, samples, sample_labels, centre_logits


def equation(anchors, labels, samples, sample_labels, centre_logits, alpha, beta, gamma, tau):
    """Cui et al.'s L_i in plain floats: positives are the other samples of y_i (weight alpha) and
    the centre c_y (weight beta); the denominator sums every centre and gamma times every other
    sample; L_i is divided by the weights' sum; the mean over anchors."""
    total = 0.0
    rows = anchors.tolist()
    for i, (a, y) in enumerate(zip(rows, labels.tolist())):
        sims = [sum(u * v for u, v in zip(a, s)) / tau for s in samples.tolist()]
        centres = centre_logits[i].tolist()
        denominator = sum(math.exp(z) for z in centres) + gamma * sum(
            math.exp(s) for j, s in enumerate(sims) if j != i)
        positives = [j for j, label in enumerate(sample_labels.tolist()) if label == y and j != i]
        numerator = beta * math.log(math.exp(centres[y]) / denominator) + alpha * sum(
            math.log(math.exp(sims[j]) / denominator) for j in positives)
        total += -numerator / (beta + alpha * len(positives))
    return total / len(rows)


def original_code(features, labels, sup_logits, alpha, beta, gamma, tau, queue, num_classes):
    """PaCo/LT/losses.py PaCoLoss.forward L29-70, its mask algebra as written (features are
    q, k, queue stacked; the log prior is already in sup_logits; supt 1; base_temperature =
    temperature)."""
    batch_size = (features.shape[0] - queue) // 2
    labels = labels.contiguous().view(-1, 1)
    mask = torch.eq(labels[:batch_size], labels.T).double()
    anchor_dot_contrast = torch.div(torch.matmul(features[:batch_size], features.T), tau)
    anchor_dot_contrast = torch.cat((sup_logits, anchor_dot_contrast), dim=1)
    logits_max, _ = torch.max(anchor_dot_contrast, dim=1, keepdim=True)
    logits = anchor_dot_contrast - logits_max.detach()
    logits_mask = torch.scatter(torch.ones_like(mask), 1, torch.arange(batch_size).view(-1, 1), 0)
    mask = mask * logits_mask
    one_hot_label = F.one_hot(labels[:batch_size].view(-1), num_classes=num_classes).double()
    mask = torch.cat((one_hot_label * beta, mask * alpha), dim=1)
    logits_mask = torch.cat((torch.ones(batch_size, num_classes, dtype=torch.float64), gamma * logits_mask), dim=1)
    exp_logits = torch.exp(logits) * logits_mask
    log_prob = logits - torch.log(exp_logits.sum(1, keepdim=True) + 1e-12)
    mean_log_prob_pos = (mask * log_prob).sum(1) / mask.sum(1)
    return (-mean_log_prob_pos).mean()


WEIGHTS = [(0.01, 1.0, 1.0, 0.05), (0.5, 1.0, 1.0, 0.2), (1.0, 0.3, 0.5, 1.0), (0.05, 2.0, 0.0, 0.1)]


@pytest.mark.parametrize("alpha, beta, gamma, tau", WEIGHTS)
@pytest.mark.parametrize("seed", [0, 1])
def test_paco_loss_is_the_papers_equation(alpha, beta, gamma, tau, seed):
    inputs = fixed_inputs(seed=seed)
    got = paco_loss(*inputs, alpha, beta, gamma, tau)
    assert got.item() == pytest.approx(equation(*inputs, alpha, beta, gamma, tau), rel=1e-9)


@pytest.mark.parametrize("alpha, beta, gamma, tau", WEIGHTS)
def test_paco_loss_is_the_original_codes(alpha, beta, gamma, tau):
    anchors, labels, samples, sample_labels, centre_logits = fixed_inputs(n=5, queue=7, classes=4, seed=3)
    got = paco_loss(anchors, labels, samples, sample_labels, centre_logits, alpha, beta, gamma, tau)
    want = original_code(samples, sample_labels, centre_logits, alpha, beta, gamma, tau, queue=7, num_classes=4)
    # the original adds 1e-12 to a denominator taken after subtracting the largest logit: with
    # gamma 0 that sum can be ~1e-4, a relative shift of ~1e-8
    assert got.item() == pytest.approx(want.item(), rel=1e-7)


def test_the_centre_term_alone_is_cross_entropy_on_the_centre_logits():
    # alpha 0 and gamma 0: only the centres remain, a softmax cross-entropy on them
    anchors, labels, samples, sample_labels, centre_logits = fixed_inputs()
    got = paco_loss(anchors, labels, samples, sample_labels, centre_logits, 0.0, 1.0, 0.0, 0.1)
    assert got.item() == pytest.approx(F.cross_entropy(centre_logits, labels).item(), rel=1e-12)


def test_the_loss_trains_the_anchors_and_centres_not_the_keys():
    anchors, labels, samples, sample_labels, centre_logits = fixed_inputs()
    anchors = anchors.clone().requires_grad_()
    centre_logits = centre_logits.clone().requires_grad_()
    contrast = torch.cat([anchors, samples[len(anchors):]])
    paco_loss(anchors, labels, contrast, sample_labels, centre_logits, 0.01, 1.0, 1.0, 0.05).backward()
    assert anchors.grad.abs().sum() > 0 and centre_logits.grad.abs().sum() > 0


# ---------------------------------------------------------------------- the queue


def test_queue_writes_batches_in_order_from_its_pointer():
    queue = FeatureQueue(size=5, dim=2, num_classes=3)
    first = torch.arange(4, dtype=torch.float).view(2, 2)
    queue.enqueue(first, torch.tensor([0, 1]))
    assert torch.equal(queue.features[:2], first) and queue.labels[:2].tolist() == [0, 1]
    assert int(queue.pointer) == 2
    second = torch.full((2, 2), 9.0)
    queue.enqueue(second, torch.tensor([2, 2]))
    assert torch.equal(queue.features[2:4], second) and queue.labels.tolist()[:4] == [0, 1, 2, 2]
    assert int(queue.pointer) == 4


def test_queue_wraps_around_over_its_oldest_entries():
    queue = FeatureQueue(size=5, dim=1, num_classes=10)
    for start in (0, 3):  # rows 0-2, then 3, 4 and (wrapping) 0
        queue.enqueue(torch.arange(start, start + 3, dtype=torch.float)[:, None], torch.arange(start, start + 3))
    assert queue.features[:, 0].tolist() == [5.0, 1.0, 2.0, 3.0, 4.0]
    assert queue.labels.tolist() == [5, 1, 2, 3, 4]
    assert int(queue.pointer) == 1


def test_a_batch_larger_than_the_queue_leaves_its_last_rows():
    queue = FeatureQueue(size=3, dim=1, num_classes=10)
    queue.enqueue(torch.arange(7, dtype=torch.float)[:, None], torch.arange(7))
    assert sorted(queue.labels.tolist()) == [4, 5, 6]
    assert torch.equal(queue.features[:, 0], queue.labels.float())


def test_queue_starts_as_moco_and_paco_start_it():
    torch.manual_seed(0)
    queue = FeatureQueue(size=16, dim=4, num_classes=3)
    # normalised along dim 0 (builder.py L64): every column has unit norm
    assert torch.allclose(queue.features.norm(dim=0), torch.ones(4))
    assert queue.labels.min() >= 0 and queue.labels.max() < 3 and int(queue.pointer) == 0
    assert {name for name, _ in queue.named_buffers()} == {"features", "labels", "pointer"}


# ---------------------------------------------------------------------- the momentum encoder


def linear(weight, bias):
    layer = nn.Linear(2, 1)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([weight])), layer.bias.copy_(torch.tensor([bias]))
    return layer


def test_momentum_encoder_starts_as_a_copy_then_follows_by_ema():
    online = linear([1.0, 2.0], 0.5)
    key = MomentumEncoder(momentum=0.9)
    key.follow(online)
    assert torch.equal(key.encoder[0].weight, online.weight) and key.encoder[0].weight is not online.weight
    assert not any(p.requires_grad for p in key.parameters())
    with torch.no_grad():
        online.weight.copy_(torch.tensor([[3.0, -2.0]])), online.bias.fill_(1.5)
    key.follow(online)
    # theta_k <- m theta_k + (1 - m) theta_q
    assert key.encoder[0].weight.tolist()[0] == pytest.approx([0.9 * 1 + 0.1 * 3, 0.9 * 2 + 0.1 * -2])
    assert key.encoder[0].bias.item() == pytest.approx(0.9 * 0.5 + 0.1 * 1.5)
    key.follow(online)
    assert key.encoder[0].bias.item() == pytest.approx(0.9 * (0.9 * 0.5 + 0.1 * 1.5) + 0.1 * 1.5)
    out = key(torch.tensor([[1.0, 1.0]]))
    assert not out.requires_grad


def test_momentum_encoder_averages_parameters_and_keeps_its_own_batchnorm_statistics():
    online = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    key = MomentumEncoder(momentum=0.5)
    key.follow(online)
    key(torch.randn(8, 2))  # train mode: its own running statistics move
    assert not torch.equal(key.encoder[0][1].running_mean, online[1].running_mean)


def test_a_checkpoint_loaded_before_the_first_step_is_the_copys_start():
    online = linear([1.0, 2.0], 0.5)
    saved = MomentumEncoder(momentum=0.9)
    saved.follow(linear([7.0, 8.0], -1.0))
    resumed = MomentumEncoder(momentum=0.9)
    resumed.load_state_dict(saved.state_dict())
    resumed.follow(online)
    # the saved average, moved once towards the online encoder, as the run that never stopped
    assert resumed.encoder[0].weight.tolist()[0] == pytest.approx([0.9 * 7 + 0.1 * 1, 0.9 * 8 + 0.1 * 2])


# ---------------------------------------------------------------------- views and variants


def test_query_and_key_are_two_views_of_the_same_images_and_repeat_with_the_seed():
    from ltbench.data.loader import DeviceLoader

    trainer = toy_trainer(toy_spec("paco"), toy_data())
    assert [v.augment for v in trainer.method.draws["main"].view_list()] == ["autoaugment_cutout", "simclr_blur"]
    state = torch.get_rng_state()
    batch = next(DeviceLoader(trainer.data, trainer.method.draws, 8, "cpu", seed=0).epoch())["main"]
    assert torch.equal(torch.get_rng_state(), state), "AutoAugment must not move the global generator"
    assert [v.shape for v in batch.views] == [(8, 3, 16, 16)] * 2 and len(batch.labels) == 8
    assert not torch.equal(batch.views[0], batch.views[1])
    again = next(DeviceLoader(trainer.data, trainer.method.draws, 8, "cpu", seed=0).epoch())["main"]
    assert all(torch.equal(a, b) for a, b in zip(batch.views, again.views))
    identity = {"main": Draw("instance", per_view=(View("none"), View("none")))}
    plain = next(DeviceLoader(trainer.data, identity, 8, "cpu", seed=0).epoch())["main"]
    assert torch.equal(plain.views[0], plain.views[1]) and torch.equal(plain.labels, batch.labels)


def test_cutout_blacks_out_at_most_a_16_pixel_square():
    x = torch.full((50, 1, 32, 32), 200, dtype=torch.uint8)
    cut = paired_augment.cutout(x, torch.Generator().manual_seed(0))
    holes = (cut == 0).sum(dim=(1, 2, 3))
    assert holes.max() == 256 and holes.min() > 0


def test_blur_with_p_0_is_the_identity_and_with_p_1_smooths():
    x = torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8)
    assert torch.equal(paired_augment.random_gaussian_blur(x, torch.Generator().manual_seed(0), p=0.0), x)
    blurred = paired_augment.random_gaussian_blur(x, torch.Generator().manual_seed(0), sigma=(2.0, 2.0), p=1.0)
    assert blurred.float().std() < x.float().std() / 2


def test_gpaco_variant_trains_one_finite_step_without_a_key_encoder():
    trainer = toy_trainer(toy_spec("paco", **{"paco.variant": "gpaco"}), toy_data())
    assert trainer.method.key_encoder is None
    batches = next(iter(trainer.loader.epoch()))
    from ltbench.method import Progress

    loss = trainer.train_step(batches, Progress(0, trainer.epochs, 0, trainer.loader.steps_per_epoch))
    assert math.isfinite(float(loss))
    assert int(trainer.method.queue.pointer) == len(batches["main"].labels)


def test_the_reference_loader_gives_the_same_images_query_and_key_views():
    from ltbench.data.reference_loader import ReferenceLoader

    trainer = toy_trainer(toy_spec("paco"), toy_data())
    draws = trainer.method.draws
    loader = ReferenceLoader(trainer.data, draws, batch_size=8, device="cpu", seed=0, workers=0)
    batch = next(iter(loader.epoch()))["main"]
    assert [v.shape for v in batch.views] == [(8, 3, 16, 16)] * 2 and len(batch.labels) == 8
    again = next(iter(ReferenceLoader(trainer.data, draws, batch_size=8, device="cpu", seed=0, workers=0).epoch()))
    assert all(torch.equal(a, b) for a, b in zip(again["main"].views, batch.views))


# ---------------------------------------------------------------------- the image-file datasets


@pytest.mark.parametrize("dataset, query, temperature", [("imagenet_lt", "sim_blur_rand", 0.07),
                                                         ("inat2018", "rand_cls", 0.2)])
def test_large_datasets_take_paco_lt_s_views_and_protocol(dataset, query, temperature):
    from ltbench.registry import dataset as dataset_info
    from ltbench.sweep import resolve
    from ltbench_methods.paco import PaCo

    spec = resolve("paco", dataset, 100, 0, "paper")
    assert spec.preset == "paper" and dataset not in PaCo.unconfirmed_protocol
    own = spec.own_hyperparameters
    assert (own["query_augment"], own["key_augment"], own["temperature"]) == (query, "sim_blur", temperature)
    assert (own["alpha"], own["queue_size"], own["projection_dim"]) == (0.05, 8192, 128)
    assert (spec.epochs, spec.params["lr"], spec.params["schedule"], spec.batch_size) == \
        (400, 0.02, "cosine", 128)
    assert all("fe56535" in s.source for s in PaCo.settings(dataset_info(dataset)).values())


def test_the_image_file_loader_gives_paco_query_and_key_views_of_the_same_images(data_root):
    from ltbench.data.image_loader import ImageLoader, eval_batches
    from ltbench.registry import dataset as dataset_info
    from ltbench.sweep import resolve
    from ltbench_methods.paco import PaCo

    data = dataset_info("imagenet_lt").build(data_root, None, n_max=None)
    own = resolve("paco", "imagenet_lt", 100, 0, "paper").own_hyperparameters
    draws = PaCo(own, data.class_counts, 8).draws
    params = {"image_size": 16, "flip": True}

    def first(draws, seed=3):
        return next(ImageLoader(data, draws, 12, "cpu", seed=seed, params=params, workers=0).epoch())["main"]

    batch = first(draws)
    assert [v.shape for v in batch.views] == [(12, 3, 16, 16)] * 2 and len(batch.labels) == 12
    assert not torch.equal(batch.views[0], batch.views[1])
    assert all(torch.equal(a, b) for a, b in zip(first(draws).views, batch.views))
    # un-augmented, query and key are one image, the one the label belongs to
    plain = first({"main": Draw("instance", per_view=(View("none"), View("none")))})
    assert torch.equal(plain.views[0], plain.views[1]) and torch.equal(plain.labels, batch.labels)
    (images, labels), = list(eval_batches(data, data.train_x, data.train_y, "cpu", len(data.train_y), 16, workers=0))
    rows = [int((images - view).abs().flatten(1).amax(1).argmin()) for view in plain.views[0]]
    assert all(torch.allclose(images[r], v, atol=1e-5) for r, v in zip(rows, plain.views[0]))
    assert torch.equal(labels[rows], plain.labels)


def test_the_image_file_loader_refuses_a_cifar_only_view_by_name(data_root):
    from ltbench.data.image_loader import ImageLoader
    from ltbench.errors import UserError
    from ltbench.registry import dataset as dataset_info

    data = dataset_info("imagenet_lt").build(data_root, None, n_max=None)
    draws = {"main": Draw("instance", per_view=(View("autoaugment_cutout"), View("sim_blur")))}
    with pytest.raises(UserError, match="'autoaugment_cutout', which the image-file loader lacks"):
        ImageLoader(data, draws, 12, "cpu", seed=3, params={"image_size": 16, "flip": True}, workers=0)
