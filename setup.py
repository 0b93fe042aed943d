#!/usr/bin/env python
"""Install rainmer: Rainmer deraining as plugin modules for the BasicSR toolbox."""
from setuptools import find_packages, setup


def read_version() -> str:
    namespace: dict = {}
    with open('rainmer/version.py', encoding='utf-8') as f:
        exec(f.read(), namespace)
    return namespace['__version__']


setup(
    name='rainmer',
    version=read_version(),
    description='Rainmer (ACM MM 2024) multi-view deraining as BasicSR plugin modules',
    long_description=open('README.md', encoding='utf-8').read(),
    long_description_content_type='text/markdown',
    packages=find_packages(exclude=('tests', 'scripts', 'options')),
    include_package_data=True,
    package_data={'rainmer': ['csrc/*.c', 'archs/*.npy']},  # built at first use (rainmer/utils/native.py)
    python_requires='>=3.10',
    install_requires=[
        'basicsr==1.4.2',
        'torch>=2.1',
        'torchvision',
        'numpy',
        'opencv-python',
        'lmdb',
        'pyyaml',
        'einops',
        'tqdm',
        'tensorboard',
        'scikit-image',
    ],
    extras_require={
        'dev': ['pytest', 'ruff'],
        'analysis': ['umap-learn', 'matplotlib'],
    },
    entry_points={
        'console_scripts': [
            'basicsr = rainmer.cli:basicsr_main',
            'rainmer = rainmer.cli:rainmer_main',
        ],
        'basicsr.plugins': ['rainmer = rainmer'],
    },
    zip_safe=False,
)
