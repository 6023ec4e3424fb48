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
    from ltbench.data import paired_augment

    x = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8)
    state = torch.get_rng_state()
    a = paired_augment.randaugment(x, torch.Generator().manual_seed(7))
    assert torch.equal(torch.get_rng_state(), state), "RandAugment must not move the global generator"
    torch.manual_seed(123)  # the global generator's state has no say in the views
    assert torch.equal(paired_augment.randaugment(x, torch.Generator().manual_seed(7)), a)
    b = paired_augment.randaugment(x, torch.Generator().manual_seed(8))
    assert a.shape == x.shape and a.dtype == torch.uint8 and not torch.equal(a, b)
    # each image draws its own ops: two ops at full magnitude leave almost none as it was
    assert sum(torch.equal(a[i], x[i]) for i in range(len(x))) <= 2
    assert len({tuple(v.flatten().tolist()) for v in a}) == len(x)


def test_randaugment_keeps_the_originals_magnitude_scale_and_fill():
    from torchvision.transforms import RandAugment

    from ltbench.data import paired_augment

    # with 11 bins, magnitude 10 is the top of each op's range, as randaugment.py's level 10 of 10
    space = RandAugment(num_magnitude_bins=paired_augment.RAND_BINS)._augmentation_space(11, (32, 32))
    assert float(space["Rotate"][0][paired_augment.RAND_MAGNITUDE]) == 30.0
    assert float(space["ShearX"][0][paired_augment.RAND_MAGNITUDE]) == pytest.approx(0.3)
    assert paired_augment.RAND_FILL == (124, 116, 104)
    assert paired_augment.rand_fill(1) == [117]
    grey = torch.randint(0, 256, (8, 1, 28, 28), dtype=torch.uint8)
    assert paired_augment.randaugment(grey, torch.Generator().manual_seed(0)).shape == grey.shape


def test_every_registered_augmentation_keeps_shape_and_type_and_follows_the_generator():
    from ltbench.data.loader import AUGMENTATIONS

    for channels in (1, 3):
        x = torch.randint(0, 256, (6, channels, 32, 32), dtype=torch.uint8)
        for name, transform in AUGMENTATIONS.items():
            a = transform(x, torch.Generator().manual_seed(1), padding=4, flip=True)
            assert a.shape == x.shape and a.dtype == torch.uint8, name
            assert torch.equal(transform(x, torch.Generator().manual_seed(1), padding=4, flip=True), a), name


def test_a_draw_of_several_views_takes_them_from_per_view():
    from ltbench.method import Draw, View

    draw = Draw("instance", per_view=[View("rand_cls"), View("sim"), View("sim")])
    assert draw.views == 3 and [v.augment for v in draw.view_list()] == ["rand_cls", "sim", "sim"]
    assert Draw(views=2, augment="sim").view_list() == (View("sim"), View("sim"))
    with pytest.raises(ValueError, match="per_view"):
        Draw(views=2, per_view=(View("sim"), View("sim"), View("sim")))
