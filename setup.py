"""Package discovery for the three tiers: every package under offline/, online/ and shared/
installs as groundrec.<tier>...; a new subpackage needs no edit here (pyproject.toml holds
everything else)."""

from setuptools import find_packages, setup

TIERS = ("offline", "online", "shared")

setup(
    packages=[f"groundrec.{tier}" for tier in TIERS]
    + [f"groundrec.{tier}.{sub}" for tier in TIERS for sub in find_packages(tier)],
    package_dir={f"groundrec.{tier}": tier for tier in TIERS},
)
