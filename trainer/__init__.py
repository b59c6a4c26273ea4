"""fakewatch trainer: datasets and preprocessing, pseudo-fakes, training methods, evaluation, export.

Dependency rule: ``trainer -> detectors``; the trainer never imports the daemon.
"""
