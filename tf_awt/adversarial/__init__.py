"""Adversarial training and evaluation: PGD, the training loop and its schedules, collapse
detection, the evaluation and its attack suites, and their configurations.

``attacks`` (``Attack``, ``pgd``), ``training`` (``adversarial_fit``), ``training_schedule`` and
``_learning_rate`` (ε warm-up, learning-rate schedules), ``collapse``, ``evaluation``,
``attack_suites``, ``autoattack``, ``phase_config`` (``TrainConfig``, ``EvalConfig``,
``ExportConfig``). May import the shared top-level modules and ``engine``; nothing from ``tickets``
or ``running``.
"""
