"""Running: recipes, runs over a directory, sweeps, tracking and the command line.

``recipes`` (YAML views of the library's configurations), ``pipeline`` (``Run``: it only composes
the phases), ``run_directory``, ``run_inputs``, ``report``, ``sweep`` and ``cells`` (a grid of runs,
its cells on Ray), ``tracking`` (MLflow), ``plots``, ``logs``, ``cli`` (``tf-awt``). May import
everything below it; nothing imports it but the package's lazy public names.
"""
