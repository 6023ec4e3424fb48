import pytest
import torch
import torch.nn.functional as F

from ltbench.data import augment


def test_crop_matches_a_per_image_reference():
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8)
    state = gen.get_state()
    out = augment.random_crop(x, 4, gen)
    gen.set_state(state)
    offsets = torch.randint(0, 9, (2, 16), generator=gen)
    padded = F.pad(x, (4, 4, 4, 4))
    for i in range(16):
        oy, ox = offsets[0, i].item(), offsets[1, i].item()
        assert torch.equal(out[i], padded[i, :, oy : oy + 32, ox : ox + 32])


def test_augmentation_is_random_per_sample():
    gen = torch.Generator().manual_seed(1)
    image = torch.randint(0, 256, (1, 3, 32, 32), dtype=torch.uint8)
    batch = image.repeat(64, 1, 1, 1)
    out = augment.standard(batch, gen)
    distinct = {tuple(o.flatten().tolist()) for o in out}
    assert len(distinct) > 30  # 81 crops x 2 flips: identical inputs must come out different
    flips = augment.random_flip(batch, torch.Generator().manual_seed(2))
    flipped = [torch.equal(f, image[0].flip(2)) for f in flips]
    assert 10 < sum(flipped) < 54


def test_same_generator_state_same_batch():
    x = torch.randint(0, 256, (8, 1, 32, 32), dtype=torch.uint8)
    a = augment.standard(x, torch.Generator().manual_seed(3))
    b = augment.standard(x, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


def test_normalize_is_totensor_then_normalize():
    x = torch.full((1, 1, 2, 2), 255, dtype=torch.uint8)
    out = augment.normalize(x, torch.tensor(0.5).view(1, 1, 1, 1), torch.tensor(0.25).view(1, 1, 1, 1))
    assert torch.allclose(out, torch.full_like(out, 2.0))


def test_resized_crop_of_the_whole_image_is_the_image():
    x = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    out = augment.random_resized_crop(x, torch.Generator().manual_seed(0), scale=(1.0, 1.0), ratio=(1.0, 1.0))
    assert out.dtype == torch.uint8 and torch.equal(out, x)
    zoomed = augment.random_resized_crop(x.repeat(16, 1, 1, 1), torch.Generator().manual_seed(0))
    assert zoomed.shape == (64, 3, 32, 32) and len({tuple(z.flatten().tolist()) for z in zoomed}) > 56


def test_grayscale_turns_about_p_of_the_images_grey_and_leaves_one_channel_alone():
    x = torch.randint(0, 256, (400, 3, 8, 8), dtype=torch.uint8)
    out = augment.random_grayscale(x, torch.Generator().manual_seed(0), p=0.2)
    grey = (out[:, 0] == out[:, 1]).all(dim=(1, 2)) & (out[:, 1] == out[:, 2]).all(dim=(1, 2))
    assert 50 < grey.sum() < 110 and torch.equal(out[~grey], x[~grey])
    expected = (0.299 * x[:, 0].float() + 0.587 * x[:, 1].float() + 0.114 * x[:, 2].float()).round()
    assert torch.equal(out[grey, 0].float(), expected[grey])
    one_channel = x[:, :1]
    assert torch.equal(augment.random_grayscale(one_channel, torch.Generator().manual_seed(0), p=1.0), one_channel)


def test_colour_jitter_on_grey_images_is_brightness_and_contrast_only():
    x = torch.randint(100, 150, (200, 1, 8, 8), dtype=torch.uint8)  # no clipping at 0.4
    out = augment.random_color_jitter(x, torch.Generator().manual_seed(0), strength=0.4)
    changed = (out != x).flatten(1).any(dim=1)
    assert 130 < changed.sum() < 190  # applied with p 0.8
    # brightness then contrast is an affine map of each image's pixel values (up to rounding)
    for i in torch.nonzero(changed).flatten()[:10].tolist():
        design = torch.stack([x[i].flatten().float(), torch.ones(64)], 1)
        fit = torch.linalg.lstsq(design, out[i].flatten().float()[:, None]).solution
        assert (design @ fit - out[i].flatten()[:, None]).abs().max() < 1.5
    colour = augment.random_color_jitter(torch.randint(0, 256, (8, 3, 8, 8), dtype=torch.uint8),
                                         torch.Generator().manual_seed(0), strength=0.4)
    assert colour.shape == (8, 3, 8, 8) and colour.dtype == torch.uint8


def test_contrastive_views_differ_per_sample_and_follow_the_generator():
    x = torch.randint(0, 256, (1, 3, 32, 32), dtype=torch.uint8).repeat(32, 1, 1, 1)
    for crop in ("pad", "resized"):
        a = augment.contrastive(x, torch.Generator().manual_seed(5), crop=crop, color_jitter=0.4)
        b = augment.contrastive(x, torch.Generator().manual_seed(5), crop=crop, color_jitter=0.4)
        assert torch.equal(a, b) and len({tuple(v.flatten().tolist()) for v in a}) > 25


# ---------------------------------------------------------------------- RandAugment and the views registry


def test_batched_randaugment_is_a_function_of_the_generators_seed_only():
    import random

    import numpy as np

    from ltbench.data import paired_augment

    x = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8)
    states = torch.get_rng_state(), random.getstate(), np.random.get_state()
    a = paired_augment.randaugment(x, torch.Generator().manual_seed(7))
    assert torch.equal(torch.get_rng_state(), states[0]), "RandAugment must not move torch's generator"
    assert random.getstate() == states[1], "RandAugment must not move Python's generator"
    after = np.random.get_state()
    assert after[0] == states[2][0] and np.array_equal(after[1], states[2][1]) and after[2:] == states[2][2:]
    # the global generators' states have no say in the views
    torch.manual_seed(123)
    random.seed(123)
    np.random.seed(123)
    assert torch.equal(paired_augment.randaugment(x, torch.Generator().manual_seed(7)), a)
    b = paired_augment.randaugment(x, torch.Generator().manual_seed(8))
    assert a.shape == x.shape and a.dtype == torch.uint8 and not torch.equal(a, b)
    assert len({tuple(v.flatten().tolist()) for v in a if not torch.equal(v, x[0])}) > 8


def test_randaugment_skips_each_op_with_p_half_as_the_originals():
    from ltbench.data import paired_augment

    # noise in 1..200: every op of the list changes such an image at a magnitude near 10 except
    # Solarize, whose threshold int(m * 25.6) stays above 200 unless m < 7.8 (4 std below 10);
    # and Invert twice gives the image back
    transform = paired_augment.timm_randaugment(32, 3)
    names = [op.name for op in transform.ops]
    assert "Identity" not in names and len(names) == 15 and transform.num_layers == 2
    prob = transform.ops[0].prob
    assert all(op.prob == prob == 0.5 and op.magnitude_std == 0.5 for op in transform.ops)
    idle = (1 - prob) + prob * names.count("Solarize") / len(names)
    expected = idle**2 + (prob * names.count("Invert") / len(names)) ** 2
    x = torch.randint(1, 201, (2000, 3, 32, 32), dtype=torch.uint8)
    out = paired_augment.randaugment(x, torch.Generator().manual_seed(0))
    unchanged = (out == x).flatten(1).all(dim=1).float().mean().item()
    # 2000 images: the share's std is 0.010; torchvision's RandAugment, which always applies
    # both ops, leaves about (1/14)**2 = 0.005 of them as they were (Identity twice)
    assert expected == pytest.approx(0.2856, abs=1e-3)
    assert abs(unchanged - expected) < 0.04, unchanged


def test_randaugment_fills_with_the_imagenet_mean_and_grey_images_with_its_luma():
    from ltbench.data import paired_augment

    assert paired_augment.RAND_FILL == (124, 116, 104)
    assert paired_augment.rand_fill(1) == [117]
    colour = paired_augment.timm_randaugment(224, 3)
    assert colour.ops[0].kwargs["fillcolor"] == (124, 116, 104)
    assert colour.ops[0].hparams["translate_const"] == int(224 * 0.45)
    assert paired_augment.timm_randaugment(28, 1).ops[0].hparams["translate_const"] == 12
    # a flat grey image: rotations and shears bring in the fill in the corners
    grey = torch.full((64, 1, 28, 28), 30, dtype=torch.uint8)
    out = paired_augment.randaugment(grey, torch.Generator().manual_seed(0))
    assert out.shape == grey.shape and (out == 117).any()


def test_randaugment_on_image_files_and_dataloader_items_follows_their_seed_alone():
    import random

    import numpy as np
    from PIL import Image

    from ltbench.data.image_transforms import train_view
    from ltbench.data.reference_loader import SeededRandAugment

    picture = Image.fromarray(np.random.default_rng(0).integers(1, 201, (40, 48, 3), dtype=np.uint8))
    python_state, torch_state = random.getstate(), torch.get_rng_state()
    views = [train_view(picture, 32, np.random.default_rng(seed), rand_ops=2) for seed in (7, 7, 8)]
    assert torch.equal(views[0], views[1]) and not torch.equal(views[0], views[2])
    transform = SeededRandAugment()
    with torch.random.fork_rng(devices=[]):
        outputs = []
        for seed in (3, 3, 4):
            torch.manual_seed(seed)
            outputs.append(np.asarray(transform(picture)))
    assert np.array_equal(outputs[0], outputs[1]) and not np.array_equal(outputs[0], outputs[2])
    assert random.getstate() == python_state and torch.equal(torch.get_rng_state(), torch_state)
    # about (8/15)**2 of 200 items pass through unchanged, as on the tensor path
    unchanged = 0
    with torch.random.fork_rng(devices=[]):
        for seed in range(200):
            torch.manual_seed(seed)
            unchanged += np.array_equal(np.asarray(transform(picture)), np.asarray(picture))
    assert 30 < unchanged < 90


def test_every_registered_augmentation_keeps_shape_and_type_and_follows_the_generator():
    from ltbench.data.loader import AUGMENTATIONS

    for channels in (1, 3):
        x = torch.randint(0, 256, (6, channels, 32, 32), dtype=torch.uint8)
        for name, transform in AUGMENTATIONS.items():
            a = transform(x, torch.Generator().manual_seed(1), padding=4, flip=True)
            assert a.shape == x.shape and a.dtype == torch.uint8, name
            assert torch.equal(transform(x, torch.Generator().manual_seed(1), padding=4, flip=True), a), name


def test_every_registered_augmentation_has_a_dataloader_version():
    """The reference loader accepts every name of the CIFAR-sized loader's registry: each must
    build a per-image transform giving a normalised float view of the image's shape."""
    from PIL import Image

    from ltbench.data.loader import AUGMENTATIONS
    from ltbench.data.reference_loader import pil_transform
    from ltbench.method import View
    from ltbench.testing import toy_data

    data = toy_data()
    image = Image.fromarray(data.train_x[0].transpose(1, 2, 0).squeeze(-1) if data.train_x.shape[1] == 1
                            else data.train_x[0].transpose(1, 2, 0))
    for name in AUGMENTATIONS:
        view = pil_transform(data, View(name), padding=4, flip=True)(image)
        assert view.shape == data.train_x.shape[1:] and view.dtype == torch.float32, name


def test_a_draw_of_several_views_takes_them_from_per_view():
    from ltbench.method import Draw, View

    draw = Draw("instance", per_view=[View("rand_cls"), View("sim"), View("sim")])
    assert draw.views == 3 and [v.augment for v in draw.view_list()] == ["rand_cls", "sim", "sim"]
    assert Draw(views=2, augment="sim").view_list() == (View("sim"), View("sim"))
    with pytest.raises(ValueError, match="per_view"):
        Draw(views=2, per_view=(View("sim"), View("sim"), View("sim")))
