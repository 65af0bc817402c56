"""Alerts: rules over the query layer, evaluated on a schedule, delivered to receivers.

``rules`` (shapes and checks), ``evaluate`` (conditions -> label sets that hold),
``state`` (pending -> firing -> resolved), ``deliver`` (Alertmanager and webhook
posts, retried), ``evaluator`` (the loop and its lease). docs/alerts.md has the contract.
"""
