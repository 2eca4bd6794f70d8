"""The MLflow side: every MLflow call of the package lives in this sub-package.

``runs`` (job runs, parameters, artifacts, the prepared dataset by path or
``runs:/`` URI), ``stores`` (pre-flight checks of the tracking and artifact
stores), ``prep``, ``cv``, ``tune`` and ``quality`` (what each job logs),
``registry`` (register, alias, promote, model URIs) and ``pyfunc`` (the served
model).
"""
