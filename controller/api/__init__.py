"""The API: what users, alerts and other tools see of Lifeboat, each word written once.

* :mod:`.names`: group, version, kinds, finalizer, labels, the Events' reporter;
* :mod:`.annotations`: the annotations users ask for manual operations with, and their
  typed form (read by the operator, written by the CLI);
* :mod:`.conditions`: condition types and helpers;
* :mod:`.events`: Event reasons;
* :mod:`.models`: the resource models, one module per kind (the CRDs are generated from
  them by :mod:`.crd`; cross-field rules in :mod:`.rules`).

``names`` and ``annotations`` import no resource models, so the CLI loads them cheaply.
"""
