"""fakewatch detectors: everything that turns pixels into numbers.

Shared by the daemon and the trainer (``daemon -> detectors <- trainer``): face detection,
alignment and identity embeddings, model definitions, inference runtimes and the model-bundle
format. This package never imports ``daemon`` or ``trainer``.
"""

__version__ = "0.1.0"
