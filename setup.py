"""Build glue: installs agent/ as the package "kansoku" and plugins/ as "kansoku_plugins"."""

from setuptools import find_packages, setup

PACKAGE_DIRS = {"kansoku": "agent", "kansoku_plugins": "plugins"}

packages = []
for name, folder in PACKAGE_DIRS.items():
    packages.append(name)
    packages += [f"{name}.{sub}" for sub in find_packages(folder)]

setup(packages=packages, package_dir=PACKAGE_DIRS)
