"""The Jinja2 templates of every generated text (``templates/`` at the top of the repository,
shipped in the wheel as ``kgraph/templates``)."""
import functools
import os

import jinja2

_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# installed wheel: kgraph/templates; source checkout and editable install: ../templates
_CANDIDATES = (os.path.join(_PACKAGE, "templates"), os.path.join(os.path.dirname(_PACKAGE), "templates"))


def template_dir():
    for candidate in _CANDIDATES:
        if os.path.isfile(os.path.join(candidate, "model_card.md.j2")):
            return candidate
    raise FileNotFoundError(f"kgraph's templates are missing (looked in {', '.join(_CANDIDATES)})")


@functools.lru_cache(maxsize=1)
def environment():
    return jinja2.Environment(loader=jinja2.FileSystemLoader(template_dir()), keep_trailing_newline=True,
                              undefined=jinja2.StrictUndefined, autoescape=False, trim_blocks=False)


def render(template, **values):
    """Render ``templates/<template>``; a value the template uses but was not given is an error."""
    return environment().get_template(template).render(**values)
