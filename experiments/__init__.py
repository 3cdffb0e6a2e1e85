"""The experiments: one folder each (``ideal/``, ``dialog/``), shared launcher code in ``shared/``.

Not installed with the library: run them from the repository root, e.g. ``python -m experiments.ideal``.
"""
