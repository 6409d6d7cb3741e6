"""The command lines: the options every command shares and the per-class loop (``args``), ``main.py``/``train.py``/
``eval.py``/``predict.py`` (``commands``), ``export_model.py`` (``export_model``), ``infer.py`` (``infer``) and the
results tables (``report``)."""
