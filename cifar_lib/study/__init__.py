"""The study: sweeps as data and running them, Optuna, tables and statistics of records,
figures, and the notebooks' helpers. It imports the core (cifar_lib's top level); the core
never imports it."""
