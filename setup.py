"""Maps the design card's top-level folders onto one import package, ``polydiff``.

``core/`` is ``polydiff.core``, ``domains/`` is ``polydiff.domains``, ``datasets/`` is ``polydiff.datasets`` and
``recipes/`` ships as ``polydiff.recipes`` (YAML only). The package list is built per mapped folder so that an editable
install and a wheel hold exactly the same modules; ``polydiff`` itself is a namespace with no folder of its own.
"""

from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).parent
MAPPED = {"polydiff.core": "core", "polydiff.domains": "domains", "polydiff.datasets": "datasets",
          "polydiff.recipes": "recipes"}

packages, package_dir = [], {}
for name, folder in MAPPED.items():
    packages.append(name)
    package_dir[name] = folder
    for sub in find_packages(where=folder):
        packages.append(f"{name}.{sub}")
        package_dir[f"{name}.{sub}"] = f"{folder}/{sub.replace('.', '/')}"

setup(
    packages=packages,
    package_dir=package_dir,
    package_data={"polydiff.recipes": ["**/*.yaml"]},
    include_package_data=False,
)
