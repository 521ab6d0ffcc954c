"""dnn_jax.data.clahe: OpenCV's CLAHE exactly, close to scikit-image's, and CIE LAB."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import natural_image
from skimage import color, exposure

from dnn_jax.data import clahe

# Compiled once per call signature: much faster than op-by-op dispatch on a busy CPU.
_clahe_channel = jax.jit(clahe.clahe_channel, static_argnums=(1, 2))


# What OpenCV 4.14 returns for cv2.createCLAHE(3.0, (4, 3)).apply(image) on this 10x9 image:
# 4 tile columns and 3 tile rows, both sizes padded (REFLECT_101) to whole tiles of 4x3.
_CV2_IMAGE = np.fromfunction(lambda i, j: (i * 37 + j * 11 + (i * j) % 7 * 13) % 256, (10, 9))
_CV2_CLAHE = np.array(
  [
    [42, 64, 71, 53, 53, 57, 53, 64, 82],
    [106, 128, 152, 128, 138, 149, 191, 102, 121],
    [149, 191, 198, 234, 120, 166, 223, 146, 194],
    [175, 213, 241, 202, 244, 200, 239, 201, 250],
    [180, 234, 202, 255, 225, 23, 255, 225, 41],
    [202, 42, 255, 239, 104, 53, 26, 20, 149],
    [234, 128, 110, 106, 102, 88, 85, 82, 212],
    [26, 64, 77, 72, 82, 125, 120, 129, 172],
    [96, 128, 156, 154, 170, 182, 212, 158, 179],
    [144, 191, 206, 239, 160, 219, 242, 179, 228],
  ]
)


def test_clahe_matches_opencv_exactly():
  out = _clahe_channel(jnp.asarray(_CV2_IMAGE, jnp.float32), 3.0, (4, 3))
  # OpenCV rounds its interpolated float to uint8; the op keeps the float, which must round to
  # OpenCV's value but for ties (x.5 can land on either side after XLA's float reordering).
  np.testing.assert_allclose(np.asarray(out), _CV2_CLAHE, atol=0.5 + 1e-3, rtol=0)


@pytest.mark.parametrize(
  ('size', 'grid', 'clip_limit', 'max_mean_diff', 'max_diff'),
  [
    (32, 8, 2.0, 3.0, 25.0),  # the notebook's CIFAR setting: 16-pixel tiles, bins clipped at 1
    (64, 4, 4.0, 1.5, 10.0),  # 256-pixel tiles, bins clipped at 4
  ],
)
def test_clahe_is_close_to_skimage(size, grid, clip_limit, max_mean_diff, max_diff):
  image = natural_image((size, size))
  # OpenCV clips bins at int(clip_limit * tile pixels / 256), skimage at int(clip_limit *
  # tile pixels): skimage's clip_limit is OpenCV's / 256. Both interpolate between tile
  # centers at x / tile - 0.5. They differ in: skimage spreads the clipped excess over the
  # bins under the limit (OpenCV over all bins, the residual from bin 0 up), bins 16384
  # levels into 253 bins, and stretches its output to the full range (done here to ours).
  expected = exposure.equalize_adapthist(
    image, kernel_size=size // grid, clip_limit=clip_limit / 256, nbins=256
  )
  out = np.asarray(_clahe_channel(jnp.asarray(image, jnp.float32), clip_limit, grid))
  stretched = (out - out.min()) / (out.max() - out.min())
  diff = np.abs(stretched - expected) * 255
  assert diff.mean() < max_mean_diff and diff.max() < max_diff  # measured: 1.6/17, 1.0/7
  assert np.corrcoef(stretched.ravel(), expected.ravel())[0, 1] > 0.99


def test_clahe_raises_local_contrast_and_keeps_a_constant_image_constant():
  rng = np.random.default_rng(0)
  low_contrast = jnp.asarray(100 + rng.integers(0, 8, (32, 32, 1)), jnp.float32)
  out = jax.jit(clahe.equalize_clahe)(low_contrast)
  local_std = lambda x: np.asarray(x).reshape(8, 4, 8, 4).std(axis=(1, 3)).mean()
  assert local_std(out) > 5 * local_std(low_contrast)
  constant = jax.jit(clahe.equalize_clahe)(jnp.full((32, 32, 3), 128.0))
  assert np.ptp(np.asarray(constant)) < 1e-3
  gray = _clahe_channel(jnp.full((32, 32), 128.0), 2.0, 8)
  np.testing.assert_array_equal(np.asarray(gray), 143.0)  # what OpenCV returns


def test_rgb_to_lab_matches_skimage_and_round_trips():
  image = natural_image((16, 16, 3))
  lab = jax.jit(clahe.rgb_to_lab)(jnp.asarray(image, jnp.float32))
  np.testing.assert_allclose(np.asarray(lab), color.rgb2lab(image), atol=0.05)
  np.testing.assert_allclose(np.asarray(jax.jit(clahe.lab_to_rgb)(lab)), image, atol=0.01)
