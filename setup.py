"""A shim: the packaging is declared in pyproject.toml (PEP 517/621).

Kept because Dataflow's --setup_file (and Flex Templates'
FLEX_TEMPLATE_PYTHON_SETUP_FILE) name a setup.py: Beam builds the package
with `python -m build --sdist`, or `python setup.py sdist` where `build` is
missing, and setuptools (61 or later) reads pyproject.toml in both cases.
Install with pip (`pip install .` or `pip install -e .`), never with
`python setup.py install/develop`.
"""

import setuptools

setuptools.setup()
