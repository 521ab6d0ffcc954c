"""dnn_jax.predict: image files classified by a trained run, as its checkpoint's logits say."""

import numpy as np
import pytest
from conftest import run_python
from PIL import Image

from dnn_jax import inference, predict, train
from dnn_jax.data import catalog, locate, splits
from dnn_jax.errors import UserError
from dnn_jax.report import predict as report_predict

NUM_IMAGES = 5


@pytest.fixture(scope='module')
def mlp_run(base_config, tmp_path_factory):
  """The workdir of an MNIST MLP (32 hidden units) trained one epoch on 512 images."""
  config = base_config()
  config.model.hidden_sizes = (32,)
  config.data.train_split = 'train[:512]'
  config.data.validation_split = config.data.test_split = 'test[:500]'
  config.num_epochs = 1
  config.num_devices = 1
  config.progress = 'lines'
  workdir = tmp_path_factory.mktemp('mlp')
  train.train_and_evaluate(config, workdir)
  return workdir


@pytest.fixture
def pngs(mnist, tmp_path):
  """A directory of the first test images as PNGs, and a text file named bad.png."""
  for i, image in enumerate(mnist.test['image'][:NUM_IMAGES]):
    Image.fromarray(image[..., 0]).save(tmp_path / f'test_{i}.png')
  (tmp_path / 'bad.png').write_text('not an image\n')
  return tmp_path


def _checkpoint_logits(workdir, images_NxHxWxC):
  model = inference.load(workdir, 'best').model
  x_NxHxWxC = images_NxHxWxC.astype(np.float32) / 255.0
  return report_predict.logits(model, x_NxHxWxC, len(x_NxHxWxC))


@pytest.mark.slow
def test_each_image_gets_the_checkpoints_top_classes_and_a_bad_file_one_line(
  mlp_run, mnist, pngs, capsys
):
  results = predict.predict_files(mlp_run, [pngs], top_k=3)
  out, err = capsys.readouterr()
  files = [str(pngs / f'test_{i}.png') for i in range(NUM_IMAGES)]
  assert [r['path'] for r in results] == files
  top1 = [r['top_k'][0]['class'] for r in results]
  logits_NxK = _checkpoint_logits(mlp_run, mnist.test['image'][:NUM_IMAGES])
  assert top1 == np.argmax(logits_NxK, -1).tolist()
  softmax_NxK = np.exp(logits_NxK) / np.exp(logits_NxK).sum(-1, keepdims=True)
  for result, softmax_K in zip(results, softmax_NxK, strict=True):
    probabilities = [t['probability'] for t in result['top_k']]
    assert len(probabilities) == 3 and probabilities == sorted(probabilities, reverse=True)
    want = [softmax_K[t['class']] for t in result['top_k']]
    np.testing.assert_allclose(probabilities, want, rtol=1e-5)  # inputs as evaluation's: x / 255
    assert [t['name'] for t in result['top_k']] == [str(t['class']) for t in result['top_k']]
  lines = out.splitlines()
  assert [line.split(': ')[0] for line in lines] == files
  assert lines[0].split(': ')[1].startswith(f'{top1[0]} ')
  skipped = [line for line in err.splitlines() if line.startswith('skipped')]
  assert skipped == [f'skipped {pngs / "bad.png"}: not an image that Pillow can read']


@pytest.mark.slow
def test_invert_turns_a_dark_digit_on_white_into_the_datasets_white_on_black(
  mlp_run, mnist, tmp_path
):
  image = mnist.test['image'][0][..., 0]
  Image.fromarray(image).save(tmp_path / 'digit.png')
  Image.fromarray(255 - image).save(tmp_path / 'paper.png')
  (as_is,) = predict.predict_files(mlp_run, [tmp_path / 'digit.png'], top_k=10)
  (inverted,) = predict.predict_files(mlp_run, [tmp_path / 'paper.png'], top_k=10, invert=True)
  (paper,) = predict.predict_files(mlp_run, [tmp_path / 'paper.png'], top_k=10)
  assert inverted['top_k'] == as_is['top_k']
  assert paper['top_k'] != as_is['top_k']


def test_images_take_the_datasets_channels_and_size(mnist, tmp_path):
  digit = mnist.test['image'][0][..., 0]
  Image.fromarray(np.stack([digit] * 3, -1)).save(tmp_path / 'rgb.png')
  big = Image.fromarray(digit).resize((56, 56), Image.Resampling.NEAREST)
  big.save(tmp_path / 'big.jpg', quality=95)
  shape = catalog.get('mnist').image_shape
  gray = predict.read_image(tmp_path / 'rgb.png', shape)
  assert gray.dtype == np.uint8 and np.array_equal(gray, digit[..., None])
  resized = predict.read_image(tmp_path / 'big.jpg', shape)
  assert resized.shape == (28, 28, 1)
  assert np.corrcoef(resized.ravel(), digit.ravel())[0, 1] > 0.95
  colour = predict.read_image(tmp_path / 'rgb.png', catalog.get('cifar10').image_shape)
  assert colour.shape == (32, 32, 3)


def test_unreadable_files_say_why(tmp_path):
  (tmp_path / 'text.png').write_text('hello')
  with open(tmp_path / 'cut.png', 'wb') as f:  # a PNG's signature and nothing after it
    f.write(b'\x89PNG\r\n\x1a\n')
  shape = catalog.get('mnist').image_shape
  for name, why in [
    ('missing.png', 'no such file'),
    ('text.png', 'not an image that Pillow can read'),
    ('cut.png', 'not an image that Pillow can read'),
  ]:
    with pytest.raises(predict.UnreadableImage, match=why):
      predict.read_image(tmp_path / name, shape)


@pytest.mark.slow
def test_no_readable_image_is_a_user_error(mlp_run, tmp_path, capsys):
  (tmp_path / 'notes.txt').write_text('no images here')
  with pytest.raises(UserError, match='no image could be read'):
    predict.predict_files(mlp_run, [tmp_path, tmp_path / 'missing.png'])
  err = capsys.readouterr().err
  assert f'skipped {tmp_path}: a directory without image files' in err
  assert f'skipped {tmp_path / "missing.png"}: no such file' in err
  with pytest.raises(UserError, match='give the image files or directories'):
    predict.predict_files(mlp_run, [])


@pytest.mark.parametrize('name', ['mnist', 'cifar10'])
def test_the_catalogs_class_names_are_the_prepared_datasets(name):
  version = catalog.version(name)
  found = locate.find_prepared(
    name, version, [locate.writable_data_dir(), *locate.extra_data_dirs()]
  )
  if found is None:
    pytest.skip(f'no prepared {name} (CI points $DNN_JAX_DATA_DIRS at ../shared/data/tfds)')
  names = splits.read_label_feature(name, version, found).names
  assert catalog.get(name).label_names() == names


@pytest.mark.e2e
def test_the_command_prints_a_line_per_image_and_skips_the_bad_one(mlp_run, mnist, pngs):
  result = run_python(
    '-m', 'dnn_jax.predict', f'--workdir={mlp_run}', str(pngs / 'test_3.png'), '--top_k=2',
    str(pngs / 'bad.png'), str(pngs / 'test_1.png'),
  )  # fmt: skip
  assert result.returncode == 0, result.stderr
  lines = result.stdout.splitlines()
  assert [line.split(': ')[0] for line in lines] == [str(pngs / f'test_{i}.png') for i in (3, 1)]
  top1 = np.argmax(_checkpoint_logits(mlp_run, mnist.test['image'][[3, 1]]), -1).tolist()
  assert [int(line.split(': ')[1].split()[0]) for line in lines] == top1
  assert all(line.count(', ') == 1 for line in lines)  # --top_k=2: two classes each
  assert f'skipped {pngs / "bad.png"}: not an image that Pillow can read' in result.stderr
