"""corruptions: the API's contract, and every corruption against the reference libraries.

Reference checks run our batched code and a per-image reference on the same
sample images with the same random draws: `NumpyDraws` hands our code, image by
image, the numpy draws the reference makes after `np.random.seed(seed_i)`.
Where imagecorruptions implements the same algorithm as the CIFAR-10-C script
(only the constants differ, its ImageNet-C ones), we run our code with its
constants against its own functions. Where the CIFAR script differs from it
(zoom crop, snow, frost sizing, elastic affine step, pixelate's upsampling),
the reference is assembled from the libraries the script calls (SciPy, OpenCV,
scikit-image, Pillow, imagecorruptions' motion-blur port). Reference tests are
skipped when those packages are missing; they need
`pip install opencv-python-headless==5.0.0.93 scikit-image==0.26.0` and
`pip install --no-deps imagecorruptions-imaug==1.1.5` (its opencv-python
dependency wants libGL, hence --no-deps and the headless build; imagecorruptions
1.1.2 itself no longer imports: it needs pkg_resources, gone from setuptools).
"""

import io

import numpy as np
import pytest
import torch
from PIL import Image

from cifarbench.data import corruptions as C

SEEDS = [101, 202, 303, 404, 505, 606]


def sample_images(n=6, seed=0):
    """Photo-like 32x32 images: smooth colour fields, a sharp edge, a flat patch, a little noise."""
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(n):
        coarse = Image.fromarray(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8))
        image = np.asarray(coarse.resize((32, 32), Image.BILINEAR)).astype(np.int16)
        image[:, 20:] = image[:, 20:] // 2  # an edge
        image[2:10, 2:12] = rng.integers(0, 256, 3)  # a flat patch (truncation quirks live here)
        image += rng.integers(-6, 7, image.shape)
        images.append(np.clip(image, 0, 255).astype(np.uint8))
    images[0][:, :, :] = np.clip(images[0], 0, 40)  # a dark image
    images[1][0, 0] = 0  # a black pixel (brightness's hue-less case)
    return np.stack(images)


class NumpyDraws:
    """Our draws interface backed by one numpy generator per image, in the reference's call order."""

    def __init__(self, generators):
        self.generators = generators
        self.n, self.device = len(generators), torch.device("cpu")

    def _stack(self, draw):
        return torch.from_numpy(
            np.stack([np.asarray(draw(i, g), dtype=np.float64) for i, g in enumerate(self.generators)])
        )

    def random(self, shape=()):
        return self._stack(lambda i, g: g.random(shape))

    def uniform(self, low, high, shape=()):
        return self._stack(lambda i, g: g.uniform(low, high, shape))

    def normal(self, loc, scale, shape=()):
        return self._stack(lambda i, g: g.normal(loc, scale, shape))

    def poisson(self, lam):
        return self._stack(lambda i, g: g.poisson(lam[i].double().numpy()))

    def randint(self, low, high, shape=()):
        highs = high.tolist() if torch.is_tensor(high) else [high] * self.n

        def draw(i, g):
            return (g.randint if hasattr(g, "randint") else g.integers)(low, highs[i], shape)

        return self._stack(draw).long()


def legacy_draws(seeds=SEEDS):
    return NumpyDraws([np.random.RandomState(s) for s in seeds])


def run_reference(function, images, seeds=SEEDS, **kwargs):
    """The reference applied image by image after np.random.seed(seed_i): float images in [0, 255]."""
    out = []
    for image, seed in zip(images, seeds):
        np.random.seed(seed)
        out.append(np.asarray(function(Image.fromarray(image), **kwargs), dtype=np.float64))
    return np.stack(out)


def ours(images, name, constants, draws=None):
    """Our corruption before its final uint8 truncation, with the reference's draws."""
    draws = draws or legacy_draws()
    return C.values(torch.from_numpy(images), name, constants, draws).double().numpy()


def assert_matches(actual, expected, atol=2e-3, near=0.0):
    """Float images in [0, 255] equal up to float32 rounding (`atol` levels), except a fraction `near`
    of values allowed within 1 level (where the reference truncates to uint8 midway and float32 and
    float64 rounding can land on either side of an integer). Then the uint8 images, truncated as
    the reference does, differ by at most one level."""
    assert actual.shape == expected.shape
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)  # uint8 would wrap around
    diff = np.abs(actual - expected)
    assert diff.max() <= 1.0 + atol, f"max difference {diff.max():.4f} levels"
    assert (diff > atol).mean() <= near, f"{(diff > atol).mean():.2%} of values differ by more than {atol}"
    truncated = np.abs(np.floor(np.clip(actual, 0, 255)) - np.floor(np.clip(expected, 0, 255)))
    assert truncated.max() <= 1


@pytest.fixture(scope="module")
def reference():
    pytest.importorskip("cv2", reason="reference checks need opencv-python-headless")
    pytest.importorskip("skimage", reason="reference checks need scikit-image")
    module = pytest.importorskip(
        "imagecorruptions.corruptions", reason="reference checks need imagecorruptions-imaug (pip install --no-deps)"
    )
    return module


# ImageNet-C constants, as hard-coded in imagecorruptions' functions, severities 1-5.
IC = {
    "gaussian_noise": [0.08, 0.12, 0.18, 0.26, 0.38],
    "shot_noise": [60, 25, 12, 5, 3],
    "impulse_noise": [0.03, 0.06, 0.09, 0.17, 0.27],
    "defocus_blur": [(3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5)],
    "glass_blur": [(0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2)],
    "motion_blur": [(10, 3), (15, 5), (15, 8), (15, 12), (20, 15)],
    "zoom_blur": [
        np.arange(1, 1.11, 0.01),
        np.arange(1, 1.16, 0.01),
        np.arange(1, 1.21, 0.02),
        np.arange(1, 1.26, 0.02),
        np.arange(1, 1.31, 0.03),
    ],
    "fog": [(1.5, 2), (2.0, 2), (2.5, 1.7), (2.5, 1.5), (3.0, 1.4)],
    "brightness": [0.1, 0.2, 0.3, 0.4, 0.5],
    "contrast": [0.4, 0.3, 0.2, 0.1, 0.05],
}


# ---------------------------------------------------------------- API


def test_names_severities_and_errors():
    assert C.CORRUPTIONS == (
        "gaussian_noise",
        "shot_noise",
        "impulse_noise",
        "defocus_blur",
        "glass_blur",
        "motion_blur",
        "zoom_blur",
        "snow",
        "frost",
        "fog",
        "brightness",
        "contrast",
        "elastic_transform",
        "pixelate",
        "jpeg_compression",
    )
    assert C.SEVERITIES == (1, 2, 3, 4, 5)
    assert set(C.CONSTANTS) == set(C.CORRUPTIONS)
    assert all(len(C.CONSTANTS[name]) == 5 for name in C.CORRUPTIONS)
    images = torch.zeros(2, 3, 32, 32, dtype=torch.uint8)
    with pytest.raises(ValueError, match="allowed: gaussian_noise, shot_noise.*jpeg_compression"):
        C.corrupt(images, "speckle_noise", 1, seed=0)
    for bad in (0, 6, 2.0, True):
        with pytest.raises(ValueError, match=r"severity must be one of \(1, 2, 3, 4, 5\)"):
            C.corrupt(images, "fog", bad, seed=0)
    with pytest.raises(ValueError, match="uint8 tensor"):
        C.corrupt(images.float(), "fog", 1, seed=0)
    with pytest.raises(ValueError, match="uint8 tensor"):
        C.corrupt(torch.zeros(2, 3, 64, 64, dtype=torch.uint8), "fog", 1, seed=0)
    with pytest.raises(ValueError, match="numpy images"):
        C.corrupt(np.zeros((2, 3, 32, 32), np.uint8), "fog", 1, seed=0)
    with pytest.raises(ValueError, match="seed"):
        C.corrupt(images, "fog", 1, seed=-1)


def test_every_corruption_keeps_layout_and_is_deterministic():
    images = torch.from_numpy(sample_images()).permute(0, 3, 1, 2).contiguous()
    seed_free = {"defocus_blur", "zoom_blur", "brightness", "contrast", "pixelate", "jpeg_compression"}
    for name in C.CORRUPTIONS:
        out = C.corrupt(images, name, 3, seed=7)
        assert out.shape == images.shape and out.dtype == torch.uint8 and out.device == images.device
        assert torch.equal(out, C.corrupt(images, name, 3, seed=7)), name
        other_seed = C.corrupt(images, name, 3, seed=8)
        assert torch.equal(out, other_seed) == (name in seed_free), name
        # numpy NHWC in, numpy NHWC out, same bytes.
        nhwc = C.corrupt(images.permute(0, 2, 3, 1).numpy(), name, 3, seed=7)
        assert isinstance(nhwc, np.ndarray) and np.array_equal(nhwc, out.permute(0, 2, 3, 1).numpy()), name
    assert C.corrupt(images[:0], "fog", 1, seed=0).shape == (0, 3, 32, 32)


def test_stronger_severity_changes_images_more():
    images = torch.from_numpy(sample_images(8, seed=1)).permute(0, 3, 1, 2).contiguous()
    # elastic_transform is left out: in the CIFAR constants its random affine step shrinks
    # with severity (jitter 2.6 -> 1.0 px) while the local warp grows, so the mean pixel change
    # falls from severity 1 to 5.
    for name in set(C.CORRUPTIONS) - {"elastic_transform"}:
        change = [
            (C.corrupt(images, name, s, seed=0).float() - images.float()).abs().mean().item() for s in C.SEVERITIES
        ]
        # Not monotone in between for every corruption (frost 4-5 dims the image more than it
        # adds frost), but severity 5 always departs further than severity 1.
        assert change[4] > change[0] > 0, (name, change)


def test_each_corruption_and_severity_has_its_own_stream():
    seeds = {C.stream_seed(0, name, s) for name in C.CORRUPTIONS for s in C.SEVERITIES}
    assert len(seeds) == 75
    images = {C.image_seeds(0, name, s, [0])[0] for name in C.CORRUPTIONS for s in C.SEVERITIES}
    assert len(images) == 75
    assert C.stream_seed(1, "fog", 1) != C.stream_seed(0, "fog", 1)
    # Gaussian noise at severities 1 and 2 from the same seed: uncorrelated noise patterns.
    images = torch.full((16, 3, 32, 32), 128, dtype=torch.uint8)
    noise1 = C.corrupt(images, "gaussian_noise", 1, seed=0).float() - 128
    noise2 = C.corrupt(images, "gaussian_noise", 2, seed=0).float() - 128
    correlation = np.corrcoef(noise1.flatten().numpy(), noise2.flatten().numpy())[0, 1]
    assert abs(correlation) < 0.03
    assert noise1.std().item() == pytest.approx(0.04 * 255, rel=0.05)  # CIFAR-10-C severity 1


def test_an_images_bytes_depend_on_its_index_alone_not_on_the_batch_or_its_chunks(monkeypatch):
    """corrupt(x)[:k] == corrupt(x[:k]); a subset corrupted with its test-split indices gets the whole set's bytes;
    cutting the batch into chunks of 3 changes nothing; and each image has noise of its own. Matrix products in
    blocks of 16 images: 40 images make three."""
    images = torch.from_numpy(sample_images(40, seed=2)).permute(0, 3, 1, 2).contiguous()
    subset = [1, 4, 33, 38]
    monkeypatch.setitem(C.IMAGE_BLOCK, "cpu", 16)
    for name in C.CORRUPTIONS:
        whole = C.corrupt(images, name, 4, seed=5)
        assert torch.equal(C.corrupt(images[:3], name, 4, seed=5), whole[:3]), name
        assert torch.equal(C.corrupt(images[subset], name, 4, seed=5, index=subset), whole[subset]), name
        with monkeypatch.context() as m:
            m.setattr(C, "chunk_size", lambda device: 3)
            assert torch.equal(C.corrupt(images, name, 4, seed=5), whole), name
    flat = torch.full((4, 3, 32, 32), 128, dtype=torch.uint8)
    noise = C.corrupt(flat, "gaussian_noise", 3, seed=5)
    assert not torch.equal(noise[0], noise[1])  # images do not share their draws
    assert torch.equal(C.corrupt(flat[:1], "gaussian_noise", 3, seed=5, index=[1])[0], noise[1])
    with pytest.raises(ValueError, match="one non-negative test-split index per image"):
        C.corrupt(flat, "fog", 1, seed=0, index=[0, 1])


def test_draws_come_from_the_seeded_per_image_generators():
    """The draws a corruption gets are those of its images' own CPU generators, whatever the batch."""
    images = torch.full((5, 3, 32, 32), 128, dtype=torch.uint8)
    out = C.corrupt(images, "gaussian_noise", 3, seed=5).permute(0, 2, 3, 1)
    seeds = C.image_seeds(5, "gaussian_noise", 3, range(5))
    mask, state = 2**64 - 1, C.stream_seed(5, "gaussian_noise", 3)
    for i, seed in enumerate(seeds):  # SplitMix64's i-th output from the stream's seed, in Python's integers
        z = (state + (i + 1) * 0x9E3779B97F4A7C15) & mask
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
        assert seed == z ^ (z >> 31)
    for i, seed in enumerate(seeds):
        draws = C.ImageDraws([seed], "cpu")
        nhwc = images[i : i + 1].permute(0, 2, 3, 1).contiguous()
        assert torch.equal(out[i : i + 1], C.apply(nhwc, "gaussian_noise", C.CONSTANTS["gaussian_noise"][2], draws))


def test_noise_statistics_of_the_torch_draws():
    # The production draws (torch) are not the reference's numpy draws: check their statistics.
    images = torch.full((64, 3, 32, 32), 100, dtype=torch.uint8)
    impulse = C.corrupt(images, "impulse_noise", 5, seed=0)  # 7% of values to 0 or 255
    assert (impulse == 255).float().mean().item() == pytest.approx(0.035, abs=0.003)
    assert (impulse == 0).float().mean().item() == pytest.approx(0.035, abs=0.003)
    shot = C.corrupt(images, "shot_noise", 5, seed=0).double()  # Poisson(100/255 * 50) / 50
    rate = 100 / 255 * 50
    assert (shot.mean().item() + 0.5) / 255 * 50 == pytest.approx(rate, rel=0.02)  # truncation took ~0.5
    assert (shot / 255 * 50).var().item() == pytest.approx(rate, rel=0.05)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_gives_the_cpus_bytes_up_to_one_level():
    images = torch.from_numpy(sample_images()).permute(0, 3, 1, 2).contiguous()
    for name in C.CORRUPTIONS:
        out = C.corrupt(images.cuda(), name, 3, seed=0)
        assert out.device.type == "cuda" and out.shape == images.shape
        assert torch.equal(out, C.corrupt(images.cuda(), name, 3, seed=0))
        # the same draws (the CPU's generators); float32 sums in another order: where the reference truncates a
        # value that is an integer up to rounding, one level either way (the module's contract)
        assert_matches(out.cpu().numpy(), C.corrupt(images, name, 3, seed=0).numpy(), near=0.01)


# ---------------------------------------------------------------- against imagecorruptions


@pytest.mark.parametrize(
    "name", ["gaussian_noise", "shot_noise", "defocus_blur", "motion_blur", "fog", "brightness", "contrast"]
)
def test_same_algorithm_as_imagecorruptions(reference, name):
    images = sample_images()
    for severity in C.SEVERITIES:
        expected = run_reference(getattr(reference, name), images, severity=severity)
        actual = ours(images, name, IC[name][severity - 1])
        assert_matches(actual, expected), (name, severity)


def test_impulse_noise_against_imagecorruptions(reference):
    images = sample_images()
    for severity in C.SEVERITIES:
        expected = np.stack(
            [reference.impulse_noise(Image.fromarray(im), severity, seed=s) for im, s in zip(images, SEEDS)]
        )
        draws = NumpyDraws([np.random.default_rng(s) for s in SEEDS])  # skimage's own generator
        assert np.array_equal(ours(images, "impulse_noise", IC["impulse_noise"][severity - 1], draws), expected)


def test_glass_blur_against_imagecorruptions(reference, monkeypatch):
    # Its pixel shuffle is numba-compiled; the plain Python function draws the same numbers
    # from numpy's global generator, which NumpyDraws can replay.
    monkeypatch.setattr(reference, "_shuffle_pixels_njit_glass_blur", reference._shuffle_pixels_njit_glass_blur.py_func)
    images = sample_images()
    for severity in (1, 2, 4):  # delta 1 (the one-gather path CIFAR uses), 2 and 3 (step by step)
        expected = np.stack(
            [reference.glass_blur(Image.fromarray(im), severity, seed=s) for im, s in zip(images, SEEDS)]
        )
        # It truncates to uint8 between its two blurs, and in flat areas the blurred value is an
        # integer up to rounding, which float32 and float64 break either way: up to a quarter of
        # the values end 1 level apart. A wrong shuffle moves edges by whole pixels (tens of levels).
        assert_matches(ours(images, "glass_blur", IC["glass_blur"][severity - 1]), expected, near=0.25)


def test_zoom_blur_against_imagecorruptions(reference):
    # imagecorruptions keeps the top-left corner of each zoomed image (centred=False).
    images = sample_images()
    for severity in C.SEVERITIES:
        expected = run_reference(reference.zoom_blur, images, severity=severity)
        actual = C._zoom_blur(torch.from_numpy(images), IC["zoom_blur"][severity - 1], None, centred=False)
        assert_matches(actual.double().numpy(), expected)


def test_disk_kernel_equals_imagecorruptions_disk(reference):
    for radius, alias in IC["defocus_blur"] + list(C.CONSTANTS["defocus_blur"]):
        expected = reference.disk(radius, alias_blur=alias)
        kernel = C.disk_kernel(radius, alias)
        half, reach = expected.shape[0] // 2, kernel.shape[0] // 2
        assert np.allclose(
            kernel, expected[half - reach : half + reach + 1, half - reach : half + reach + 1], atol=1e-7
        )
        assert kernel.sum() == pytest.approx(expected.sum(), abs=1e-6)  # nothing cropped away


def test_motion_blur_taps_equal_imagecorruptions(reference):
    for radius, sigma in IC["motion_blur"] + list(C.CONSTANTS["motion_blur"]):
        width = reference.getOptimalKernelWidth1D(radius, sigma)
        assert np.allclose(C.motion_blur_taps(radius, sigma), reference.getMotionBlurKernel(width, sigma))


# ---------------------------------------------------------------- against the CIFAR script's libraries


def clipped_zoom_centred(image, factor):
    """The CIFAR script's clipped_zoom: crop the centre, scipy zoom (bilinear), keep the centre."""
    from scipy.ndimage import zoom

    size = image.shape[0]
    crop = int(np.ceil(size / factor))
    top = (size - crop) // 2
    zoomed = zoom(image[top : top + crop, top : top + crop], (factor, factor, 1), order=1)
    trim = (zoomed.shape[0] - size) // 2
    return zoomed[trim : trim + size, trim : trim + size]


def test_zoom_blur_cifar_against_scipy():
    pytest.importorskip("scipy")
    images = sample_images()
    for severity in C.SEVERITIES:
        factors = C.CONSTANTS["zoom_blur"][severity - 1]
        expected = []
        for image in images:
            x = (image / 255.0).astype(np.float32)
            total = sum(clipped_zoom_centred(x, f) for f in factors)
            expected.append(np.clip((x + total) / (len(factors) + 1), 0, 1) * 255)
        assert_matches(ours(images, "zoom_blur", factors), np.stack(expected))


def test_snow_against_the_cifar_recipe(reference):
    import cv2

    images = sample_images()
    for severity in C.SEVERITIES:
        loc, scale, factor, threshold, radius, sigma, weight = C.CONSTANTS["snow"][severity - 1]
        expected = []
        for image, seed in zip(images, SEEDS):
            rng = np.random.RandomState(seed)
            x = image.astype(np.float32) / 255
            layer = clipped_zoom_centred(rng.normal(loc, scale, (32, 32))[..., None], factor)
            layer[layer < threshold] = 0
            layer = (np.clip(layer.squeeze(), 0, 1) * 255).astype(np.uint8)
            layer = reference._motion_blur(layer, radius, sigma, rng.uniform(-135, -45))
            layer = (np.round(layer) / 255)[..., None]  # ImageMagick writes 8-bit, rounded
            grey = cv2.cvtColor(x, cv2.COLOR_RGB2GRAY)[..., None]
            x = weight * x + (1 - weight) * np.maximum(x, grey * 1.5 + 0.5)
            expected.append(np.clip(x + layer + np.rot90(layer, k=2), 0, 1) * 255)
        # Truncated to uint8 before the blur and rounded after it: a few values land 1 level apart.
        assert_matches(ours(images, "snow", C.CONSTANTS["snow"][severity - 1]), np.stack(expected), near=0.02)


def reference_frost_textures(reference):
    """make_cifar_c.py's frost pictures: cv2.imread, cv2.resize by 0.2 (bilinear), BGR -> RGB."""
    import importlib.resources

    import cv2

    folder = importlib.resources.files(reference.__package__) / "frost"
    names = ["frost1.png", "frost2.png", "frost3.png", "frost4.jpg", "frost5.jpg"]
    return [cv2.resize(cv2.imread(str(folder / name)), (0, 0), fx=0.2, fy=0.2)[..., ::-1] for name in names]


def test_frost_textures_are_the_reference_pictures_resized(reference):
    # To regenerate cifarbench/frost_textures.npz: np.savez_compressed(path, **{f"frost{i}": t ...}).
    expected = reference_frost_textures(reference)
    shipped = C.frost_textures()
    assert len(shipped) == 5
    for texture, reference_texture in zip(shipped, expected):
        assert texture.dtype == np.uint8 and np.array_equal(texture, reference_texture)
    assert C.FROST_TEXTURES.stat().st_size < 200_000


def test_frost_against_the_cifar_recipe(reference):
    textures = reference_frost_textures(reference)
    images = sample_images()
    for severity in C.SEVERITIES:
        image_weight, frost_weight = C.CONSTANTS["frost"][severity - 1]
        expected = []
        for image, seed in zip(images, SEEDS):
            rng = np.random.RandomState(seed)
            frost = textures[rng.randint(5)]
            top, left = rng.randint(0, frost.shape[0] - 32), rng.randint(0, frost.shape[1] - 32)
            crop = frost[top : top + 32, left : left + 32]
            expected.append(np.clip(image_weight * image + frost_weight * crop, 0, 255))
        assert_matches(ours(images, "frost", C.CONSTANTS["frost"][severity - 1]), np.stack(expected))


def test_elastic_transform_against_the_cifar_recipe(reference):
    import cv2
    from scipy.ndimage import map_coordinates
    from skimage.filters import gaussian

    images = sample_images()
    for severity in C.SEVERITIES:
        alpha, sigma, jitter = C.CONSTANTS["elastic_transform"][severity - 1]
        expected = []
        for image, seed in zip(images, SEEDS):
            rng = np.random.RandomState(seed)
            x = image.astype(np.float32) / 255
            source = np.float32([[26, 26], [26, 6], [6, 6]])  # centre 16 +- a third of 32
            target = source + rng.uniform(-jitter, jitter, size=source.shape).astype(np.float32)
            x = cv2.warpAffine(x, cv2.getAffineTransform(source, target), (32, 32), borderMode=cv2.BORDER_REFLECT_101)
            dx = (gaussian(rng.uniform(-1, 1, (32, 32)), sigma, mode="reflect", truncate=3) * alpha).astype(np.float32)
            dy = (gaussian(rng.uniform(-1, 1, (32, 32)), sigma, mode="reflect", truncate=3) * alpha).astype(np.float32)
            col, row, channel = np.meshgrid(np.arange(32), np.arange(32), np.arange(3))
            coordinates = [(row + dy[..., None]).ravel(), (col + dx[..., None]).ravel(), channel.ravel()]
            out = map_coordinates(x, coordinates, order=1, mode="reflect").reshape(x.shape)
            expected.append(np.clip(out, 0, 1) * 255)
        assert_matches(
            ours(images, "elastic_transform", C.CONSTANTS["elastic_transform"][severity - 1]), np.stack(expected)
        )


def test_pixelate_equals_pillow_box_resizes():
    images = sample_images()
    for severity in C.SEVERITIES:
        factor = C.CONSTANTS["pixelate"][severity - 1]
        small = int(32 * factor)
        expected = np.stack(
            [
                np.asarray(Image.fromarray(im).resize((small, small), Image.BOX).resize((32, 32), Image.BOX))
                for im in images
            ]
        )
        assert np.array_equal(ours(images, "pixelate", factor), expected), severity
        assert np.array_equal(C.corrupt(images, "pixelate", severity), expected)


def test_jpeg_equals_pillow_round_trip():
    images = sample_images()
    for severity in C.SEVERITIES:
        quality = C.CONSTANTS["jpeg_compression"][severity - 1]
        expected = []
        for image in images:
            buffer = io.BytesIO()
            Image.fromarray(image).save(buffer, "JPEG", quality=quality)
            expected.append(np.asarray(Image.open(buffer)))
        assert np.array_equal(C.corrupt(images, "jpeg_compression", severity), np.stack(expected))


def test_accuracy_under_corruption_is_the_same_with_the_pillow_corruptions_in_the_background():
    """On a GPU, pixelate and JPEG are made in a thread while the device infers the others: the same table."""
    from types import SimpleNamespace

    from cifarbench.data.transforms import Preprocess
    from cifarbench.eval import robustness
    from cifarbench.runtime.device import Runtime

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    images = torch.from_numpy(sample_images(40, seed=3)).permute(0, 3, 1, 2).contiguous()
    labels = torch.arange(40) % 4
    settings = SimpleNamespace(
        corruptions=["pixelate", "gaussian_noise", "jpeg_compression"], severities=[2, 5], corruption_images=0
    )
    rt = Runtime(device=torch.device("cpu"), amp_dtype=None, compile=False)
    prep = Preprocess(32, (0.5,) * 3, (0.25,) * 3)
    args = (model, images, labels, prep, rt, 16, settings, 7)
    serial, (index, hits) = robustness.accuracy(*args, background=False)
    background, (index_b, hits_b) = robustness.accuracy(*args, background=True)
    assert background == serial and np.array_equal(index, index_b) and np.array_equal(hits, hits_b)
    runs = sum(len(by_severity) for by_severity in serial["corruptions"].values())
    assert float(np.mean(hits / runs)) == pytest.approx(serial["corruption_top1"])
    assert list(serial["corruptions"]) == settings.corruptions
    for per_severity in serial["corruptions"].values():
        assert list(per_severity) == ["2", "5"]
        assert all(v * 40 == round(v * 40) for v in per_severity.values())  # a count of the 40 images
    assert serial["corruption_top1"] == pytest.approx(
        np.mean([v for s in serial["corruptions"].values() for v in s.values()])
    )
