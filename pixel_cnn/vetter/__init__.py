"""The vetter as served: exactly the code the registered model ships (one folder, copied whole).

A stack's checks, noise and phase bins (``stack``), the model input built from a stack
(``representation``), the vetting statistics (``vetting``), presets and networks
(``networks``), the pixel branch's fold ensemble (``ensemble``), the tabular branch's
inputs and model file (``tabular``), the combiner (``combiner``), and the ``mlflow.pyfunc``
wrapper (``pyfunc``). Modules here import only each other, by relative import, and
third-party libraries: the folder ships under its own top-level name and never shadows the
installed ``pixel_cnn``.
"""
