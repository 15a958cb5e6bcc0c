"""Ticket search: finding a sparse mask at initialization, and what a ticket becomes.

``find`` (``find_ticket``, every method's entry point), ``search`` (``TicketSearch``: Algorithm 1 as a
Keras model), ``search_callback`` (``TicketSearchCallback``), ``search_config`` (``SearchConfig``),
``method_options`` (each method's own options, ``AWTOptions``, ...),
``methods`` (the registry of ticket methods), ``baselines`` (one-shot methods), ``iterative``
(Cosentino et al.), ``_selection`` (top-k, allocations, N:M), ``pruning_schedule`` (``AWTSchedule``,
tfmot's pruning schedule), ``ticket`` (``Ticket``), ``export`` (SavedModel, TFLite, Keras 3). May
import the shared top-level modules, ``engine`` and ``adversarial`` (the search attacks with PGD,
Cosentino's rounds train adversarially); nothing from ``running``.
"""
