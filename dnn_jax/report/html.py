"""The report's index.html: title, config summary, test metrics, each picture with a caption.

Every link is relative, so the report folder can be copied or served anywhere.
"""

import dataclasses
import html
import json
import pathlib

from dnn_jax import files

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
td, th { border: 1px solid #ccc; padding: 0.25em 0.7em; text-align: left; }
figure { margin: 1.5em 0; }
img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #555; max-width: 60em; }
pre { background: #f6f6f6; padding: 0.7em; overflow-x: auto; }
.note { background: #fff4d6; padding: 0.5em 0.8em; }
"""


@dataclasses.dataclass(frozen=True)
class Picture:
  """One figure of the report: a file in the report folder and what it shows."""

  file: str
  caption: str
  title: str = ''
  links: tuple = ()  # other files of the same picture (e.g. an SVG), linked under it


def _table(rows) -> str:
  cells = ''.join(
    f'<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>' for k, v in rows
  )
  return f'<table>{cells}</table>'


def render(
  *, title: str, summary: list, metrics: list, pictures: list, notes: list = (),
  text_files: tuple = (), config: dict | None = None,
) -> str:  # fmt: skip
  """The page as a string: summary and metrics are (name, value) rows."""
  parts = [
    '<!DOCTYPE html>',
    '<html lang="en"><head><meta charset="utf-8">',
    f'<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>',
    f'<h1>{html.escape(title)}</h1>',
  ]
  parts += [f'<p class="note">{html.escape(n)}</p>' for n in notes]
  parts += ['<h2>Run</h2>', _table(summary), '<h2>Test metrics</h2>', _table(metrics)]
  if text_files:
    links = ', '.join(f'<a href="{html.escape(f)}">{html.escape(f)}</a>' for f in text_files)
    parts.append(f'<p>As text: {links}</p>')
  for picture in pictures:
    heading = f'<h2>{html.escape(picture.title)}</h2>' if picture.title else ''
    extra = ''.join(
      f' <a href="{html.escape(f)}">{html.escape(f)}</a>' for f in (picture.file, *picture.links)
    )
    parts.append(
      f'{heading}<figure><a href="{html.escape(picture.file)}">'
      f'<img src="{html.escape(picture.file)}" alt="{html.escape(picture.title or picture.file)}">'
      f'</a><figcaption>{html.escape(picture.caption)} ({extra.strip()})</figcaption></figure>'
    )
  if config is not None:
    parts.append(
      '<details><summary>The whole config</summary><pre>'
      f'{html.escape(json.dumps(config, indent=2))}</pre></details>'
    )
  parts.append('</body></html>')
  return '\n'.join(parts) + '\n'


def write(path: pathlib.Path, **kwargs) -> pathlib.Path:
  """Writes render(**kwargs) to path; returns path."""
  files.write_text(path, render(**kwargs))
  return path
