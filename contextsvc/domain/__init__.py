"""The model and the rules of services, states and tasks: plain functions on plain
documents (dicts as the store keeps them), with no Flask and no HTTP. A request
handler, a background sweeper or an importer calls them alike.

* :mod:`.fields`, :mod:`.events`: what a client may send (marshmallow schemas of
  the event bodies; every other key is attached data).
* :mod:`.inputs`: a body validated and split into an :class:`~.inputs.Input`.
* :mod:`.model`: one description per kind (service, state, task), from which the
  rendered fields, the reserved keys and the documented output are derived.
* :mod:`.rules`: starting, completing, associating, attached data.
* :mod:`.queries`: which resources a query selects, and their order.
* :mod:`.export`: which services an export selects, the form it writes, and
  reading that form back (import).
"""
