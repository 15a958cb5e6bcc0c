"""Ticket search: finding a sparse mask at initialization, and what a ticket becomes.

``search`` (``find_ticket``, ``TicketSearch``: Algorithm 1), ``search_config`` (``SearchConfig``),
``methods`` (the registry of ticket methods), ``baselines`` (one-shot methods), ``iterative``
(Cosentino et al.), ``_selection`` (top-k, allocations, N:M), ``pruning_schedule`` (``AWTSchedule``,
tfmot's pruning schedule), ``ticket`` (``Ticket``), ``export`` (SavedModel, TFLite, Keras 3). May
import the shared top-level modules, ``engine`` and ``adversarial`` (the search attacks with PGD,
Cosentino's rounds train adversarially); nothing from ``running``.
"""
