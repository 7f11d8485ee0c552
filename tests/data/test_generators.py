"""Generators: exact rates, achieved correlations, monotone severities, determinism, errors."""

from __future__ import annotations

import numpy as np
import pytest

from fmlab.data import (
    CORRUPTIONS,
    add_label_noise,
    colored_digits,
    corrupt,
    load_dataset,
    make_dominoes,
    rotate_images,
    rotated_digits,
)

# -- label noise ---------------------------------------------------------------------------------


@pytest.mark.parametrize("rate", [0.0, 0.1, 0.3, 0.5, 0.8, 1.0])
@pytest.mark.parametrize("kind", ["symmetric", "asymmetric"])
def test_label_noise_rate_is_exact(rate: float, kind: str) -> None:
    y = np.random.default_rng(1).integers(0, 10, size=5003)
    noisy, mask = add_label_noise(y, rate, 10, kind=kind, seed=3)
    assert mask.sum() == round(rate * y.size)
    np.testing.assert_array_equal(mask, noisy != y)  # every flip is a real change
    assert noisy.dtype == np.int64 and noisy.min() >= 0 and noisy.max() < 10
    # Per class, the rate is as close as integers allow.
    for c in range(10):
        members = y == c
        assert abs(mask[members].mean() - rate) <= 1.0 / members.sum() + 1e-12


def test_symmetric_noise_spreads_over_all_other_classes() -> None:
    y = np.zeros(20_000, dtype=np.int64)
    y[10_000:] = np.arange(10_000) % 5
    noisy, mask = add_label_noise(y, 0.5, 5, seed=0)
    targets = np.bincount(noisy[mask & (y == 0)], minlength=5)
    assert targets[0] == 0
    assert targets[1:].min() > 0.8 * targets[1:].mean()  # about uniform over the other four


def test_asymmetric_noise_follows_the_mapping() -> None:
    y = np.arange(1000) % 10
    noisy, mask = add_label_noise(y, 0.4, 10, kind="asymmetric", seed=0)
    np.testing.assert_array_equal(noisy[mask], (y[mask] + 1) % 10)
    patrini = {2: 7, 3: 8, 5: 6, 6: 5, 7: 1}
    noisy, mask = add_label_noise(y, 0.5, 10, kind="asymmetric", mapping=patrini, seed=0)
    assert set(np.unique(y[mask])) == set(patrini)
    assert mask.sum() == round(0.5 * 500)  # rate of the eligible (mapped) labels
    assert all(noisy[i] == patrini[y[i]] for i in np.flatnonzero(mask))


def test_label_noise_is_deterministic_by_seed() -> None:
    y = np.arange(3000) % 10
    a = add_label_noise(y, 0.3, 10, seed=7)
    b = add_label_noise(y, 0.3, 10, seed=7)
    c = add_label_noise(y, 0.3, 10, seed=8)
    np.testing.assert_array_equal(a[0], b[0])
    assert not np.array_equal(a[1], c[1])
    assert np.array_equal(y, np.arange(3000) % 10)  # the input is not modified


@pytest.mark.parametrize(
    ("kwargs", "error", "pattern"),
    [
        ({"rate": 1.5}, ValueError, r"'rate' parameter of add_label_noise must be a float in the "
                                    r"range \[0, 1\]\. Got 1\.5"),
        ({"rate": "a lot"}, TypeError, r"'rate'.*Got 'a lot' of type str"),
        ({"kind": "pairwise"}, ValueError, r"Invalid kind 'pairwise'.*'symmetric', 'asymmetric'"),
        ({"n_classes": 3}, ValueError, r"\[0, 3\).*Got values from 0 to 9.*n_classes"),
        ({"n_classes": 1}, ValueError, r"'n_classes'.*\[2, inf\]"),
        ({"kind": "asymmetric", "mapping": {1: 1}}, ValueError, r"Invalid mapping entry 1 -> 1"),
        ({"mapping": {1: 2}}, ValueError, r"'mapping' applies only to kind='asymmetric'"),
        ({"labels": [0.5, 1.0]}, TypeError, r"'labels' must hold integers"),
        ({"labels": [[0, 1]]}, ValueError, r"'labels' must have 1 dimension"),
        ({"seed": -1}, ValueError, r"'seed'"),
    ],
)
def test_label_noise_errors(kwargs: dict, error: type, pattern: str) -> None:
    args = {"labels": np.arange(20) % 10, "rate": 0.2, "n_classes": 10} | kwargs
    with pytest.raises(error, match=pattern):
        add_label_noise(**args)


# -- dominoes --------------------------------------------------------------------------------------


@pytest.mark.parametrize("p", [1.0, 0.95, 0.75, 0.5, 0.0])
def test_dominoes_achieve_the_requested_correlation(p: float, need) -> None:
    need("mnist")
    need("fashion-mnist")
    ds = make_dominoes(2001, p=p, seed=0)
    agree = ds.attributes["digit"] == ds.attributes["fashion"]
    np.testing.assert_array_equal(agree, ds.attributes["agree"])
    for y in (0, 1):
        members = ds.labels == y
        assert agree[members].sum() == round(p * members.sum())
    assert abs(np.bincount(ds.labels).tolist()[0] - 1000.5) <= 0.5  # balanced labels
    # Probit-free check of the correlation between the two binary features.
    d, f = ds.attributes["digit"].astype(float), ds.attributes["fashion"].astype(float)
    if 0 < p < 1:
        assert np.corrcoef(d, f)[0, 1] == pytest.approx(2 * p - 1, abs=2e-3)


def test_dominoes_are_made_of_the_source_images(need) -> None:
    need("mnist")
    need("fashion-mnist")
    ds = make_dominoes(500, p=0.5, split="test", seed=1)
    mnist = load_dataset("mnist", "test")
    fashion = load_dataset("fashion-mnist", "test")
    assert ds.images.shape == (500, 56, 28) and ds.images.dtype == np.uint8
    np.testing.assert_array_equal(ds.images[:, :28], mnist.images[ds.attributes["digit_index"]])
    np.testing.assert_array_equal(ds.images[:, 28:], fashion.images[ds.attributes["fashion_index"]])
    np.testing.assert_array_equal(mnist.labels[ds.attributes["digit_index"]],
                                  np.array([0, 1])[ds.attributes["digit"]])
    np.testing.assert_array_equal(fashion.labels[ds.attributes["fashion_index"]],
                                  np.array([3, 4])[ds.attributes["fashion"]])  # Dress, Coat
    assert len(np.unique(ds.attributes["digit_index"])) == 500  # no reuse when there is enough


def test_spurious_variant_groups(need) -> None:
    need("mnist")
    need("fashion-mnist")
    ds = make_dominoes(4000, p=0.95, label="fashion", seed=0)
    assert ds.classes == ("Dress", "Coat")
    np.testing.assert_array_equal(ds.labels, ds.attributes["fashion"])
    np.testing.assert_array_equal(ds.attributes["spurious"], ds.attributes["digit"])
    counts = np.bincount(ds.attributes["group"], minlength=4)
    assert counts.tolist() == [1900, 100, 100, 1900]  # groups 1 and 2 are the minorities


def test_dominoes_determinism_and_defaults(need) -> None:
    need("mnist")
    need("fashion-mnist")
    a = make_dominoes(300, p=0.9, seed=5)
    b = make_dominoes(300, p=0.9, seed=5)
    c = make_dominoes(300, p=0.9, seed=6)
    np.testing.assert_array_equal(a.images, b.images)
    assert not np.array_equal(a.images, c.images)
    test = make_dominoes(split="test", digit_classes=("3", "8"), fashion_classes=(0, 6))
    assert len(test) == 2 * 974  # class 8 has 974 test images: no reuse by default
    assert test.classes == ("3", "8")


@pytest.mark.parametrize(
    ("kwargs", "error", "pattern"),
    [
        ({"p": 1.2}, ValueError, r"'p' parameter of make_dominoes must be a float in the range"),
        ({"split": "dev"}, ValueError, r"Invalid split 'dev' for make_dominoes"),
        ({"label": "colour"}, ValueError, r"Invalid label 'colour'.*\('digit', 'fashion'\)"),
        ({"digit_classes": (1, 1)}, ValueError, r"'digit_classes'.*two different classes"),
        ({"fashion_classes": ("Dress", "Hat")}, ValueError, r"Invalid fashion_classes entry 'Hat'"),
        ({"digit_classes": (0, 10)}, ValueError, r"'digit_classes'.*\[0, 9\]"),
        ({"n": 1}, ValueError, r"'n' parameter of make_dominoes must be an int"),
    ],
)
def test_dominoes_errors(kwargs: dict, error: type, pattern: str) -> None:
    with pytest.raises(error, match=pattern):
        make_dominoes(**({"n": 10} | kwargs))


# -- coloured and rotated digits ------------------------------------------------------------------


def test_colored_digits_rates_and_channels(need) -> None:
    need("mnist")
    ds = colored_digits(4000, color_flip=0.1, label_noise=0.25, split="test", seed=0)
    assert ds.images.shape == (4000, 28, 28, 3) and ds.images.dtype == np.uint8
    shape = ds.attributes["shape_label"]
    np.testing.assert_array_equal(shape, (ds.attributes["digit"] >= 5).astype(int))
    assert (ds.labels != shape).sum() == sum(round(0.25 * (shape == v).sum()) for v in (0, 1))
    color = ds.attributes["color"]
    assert (color != ds.labels).sum() == sum(round(0.1 * (ds.labels == v).sum()) for v in (0, 1))
    red, green = ds.images[..., 0], ds.images[..., 1]
    assert (green[color == 0] == 0).all() and (red[color == 1] == 0).all()
    assert (ds.images[..., 2] == 0).all()
    src = load_dataset("mnist", "test")
    # The stroke survives: each image's brightness equals one of the test images'.
    assert set(ds.images.sum(axis=(1, 2, 3)).tolist()) <= set(
        src.images.astype(np.int64).sum(axis=(1, 2)).tolist())


def test_rotation_by_90_degrees_is_exact() -> None:
    x = np.random.default_rng(0).integers(0, 256, size=(4, 28, 28), dtype=np.uint8)
    np.testing.assert_array_equal(rotate_images(x, 90), np.rot90(x, k=1, axes=(1, 2)))
    np.testing.assert_array_equal(rotate_images(x, 0), x)
    rgb = np.random.default_rng(0).integers(0, 256, size=(2, 16, 16, 3), dtype=np.uint8)
    np.testing.assert_array_equal(rotate_images(rgb, -90), np.rot90(rgb, k=-1, axes=(1, 2)))


def test_rotated_digits_domains(need) -> None:
    need("mnist")
    ds = rotated_digits(1200, split="test", seed=0)
    counts = np.bincount(ds.attributes["domain"])
    assert counts.tolist() == [200] * 6
    assert set(ds.attributes["angle"]) == {0, 15, 30, 45, 60, 75}
    src = load_dataset("mnist", "test")
    # Domain 0 (0 degrees) holds untouched source images; mass is roughly preserved elsewhere.
    zero = ds.images[ds.attributes["domain"] == 0].reshape(200, -1)
    pool = {img.tobytes() for img in src.images}
    assert all(row.tobytes() in pool for row in zero)
    ratio = ds.images.reshape(1200, -1).sum(1)[ds.attributes["domain"] == 5].mean() / \
        zero.sum(1).mean()
    assert 0.85 < ratio < 1.15
    one = rotated_digits(50, angles=30, split="test", seed=0)
    assert (one.attributes["angle"] == 30).all()


# -- corruptions -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def clean() -> np.ndarray:
    from fmlab.data import dataset_info
    from fmlab.testing import require_or_skip

    if not dataset_info("fashion-mnist").available:
        require_or_skip("Fashion-MNIST is missing; sudo apt-get install dataset-fashion-mnist")
    return load_dataset("fashion-mnist", "test").images[:300]


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_severity_is_monotone_in_distance_from_clean(name: str, clean: np.ndarray) -> None:
    dist = [np.abs(corrupt(clean, name, s, seed=0).astype(float) - clean).mean()
            for s in range(1, 6)]
    assert dist[0] > 0.5  # severity 1 already changes the images
    assert all(b > a for a, b in zip(dist, dist[1:], strict=False)), dist


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_corruption_shapes_dtypes_and_seeds(name: str, clean: np.ndarray) -> None:
    x = clean[:20]
    out = corrupt(x, name, 3, seed=1)
    assert out.shape == x.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(out, corrupt(x, name, 3, seed=1))
    rgb = np.stack([x, x[::-1], x], axis=-1)
    assert corrupt(rgb, name, 2).shape == rgb.shape
    assert corrupt(x[0], name, 2).shape == x[0].shape
    stochastic = name in ("gaussian_noise", "shot_noise", "fog", "elastic")
    assert stochastic == (not np.array_equal(out, corrupt(x, name, 3, seed=2)))
    if not stochastic:  # vectorised result equals the per-image result
        np.testing.assert_array_equal(out[5], corrupt(x[5:6], name, 3)[0])
    np.testing.assert_array_equal(x, clean[:20])  # input untouched


def test_jpeg_matches_pillow_roughly(clean: np.ndarray) -> None:
    import io

    from PIL import Image

    x = clean[:30]
    ours = corrupt(x, "jpeg", 4).astype(float)  # quality 15
    theirs = []
    for img in x:
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="JPEG", quality=15)
        theirs.append(np.asarray(Image.open(buf)))
    err_ours = np.abs(ours - x).mean()
    err_pil = np.abs(np.asarray(theirs, float) - x).mean()
    assert err_ours == pytest.approx(err_pil, rel=0.25)
    assert np.abs(ours - np.asarray(theirs, float)).mean() < 0.5 * err_pil


def test_contrast_keeps_the_mean(clean: np.ndarray) -> None:
    out = corrupt(clean, "contrast", 5).astype(float)
    np.testing.assert_allclose(out.mean(axis=(1, 2)), clean.mean(axis=(1, 2)), atol=0.6)
    assert out.std(axis=(1, 2)).mean() < 0.1 * clean.std(axis=(1, 2)).mean()


@pytest.mark.parametrize(
    ("kwargs", "error", "pattern"),
    [
        ({"corruption": "snow"}, ValueError, r"Invalid corruption 'snow' for corrupt\. Valid"),
        ({"severity": 0}, ValueError, r"'severity' parameter of corrupt must be an int in the "
                                      r"range \[1, 5\]\. Got 0"),
        ({"severity": 2.0}, TypeError, r"'severity'.*of type float"),
        ({"images": np.zeros((2, 8, 8), np.float32)}, TypeError, r"must be a uint8 array.*float32"),
        ({"images": np.zeros((2, 8, 8, 2), np.uint8)}, ValueError, r"\(N, H, W\) or \(N, H, W, 3\)"),
    ],
)
def test_corrupt_errors(kwargs: dict, error: type, pattern: str) -> None:
    args = {"images": np.zeros((2, 8, 8), np.uint8), "corruption": "fog", "severity": 1} | kwargs
    with pytest.raises(error, match=pattern):
        corrupt(**args)


@pytest.mark.parametrize("sigma", [0.5, 1.0, 4.0, 12.0])
def test_blur_matches_scipy_gaussian_filter(sigma: float) -> None:
    from scipy.ndimage import gaussian_filter

    from fmlab.data._corruptions import _blur

    x = np.random.default_rng(0).random((3, 28, 20, 2)).astype(np.float32)
    ref = gaussian_filter(x, (0, sigma, sigma, 0), mode="reflect", truncate=3.0)
    np.testing.assert_allclose(_blur(x, sigma), ref, atol=1e-5)
