"""The server modes of conftest's ``app`` do what they claim: a restart before every
request, two replicas by turns sharing counter state through the store, and the test's
own store usable beside them. Every test on ``client`` relies on this."""

from __future__ import annotations

from otlp_build import DEPLOYMENT, S0, SEC, T0, metrics_request, number, post, sum_metric


def test_each_mode_serves_from_the_apps_it_claims(app, client, creds, store, server_mode):
    served = []
    for i in range(4):
        r = post(client.with_key(creds["ingest_key"]),
                 metrics_request(DEPLOYMENT, [sum_metric("c", [number(T0 + i * SEC, 10 * (i + 1), start=S0)])]))
        assert r.status_code == 200, r.text
        served.append(app.current)
    distinct = len({id(a) for a in served})
    assert distinct == {"steady": 1, "restart": 4, "replicas": 2}[server_mode]
    if server_mode == "replicas":
        assert served[0] is served[2] and served[1] is served[3]
        assert all(a.state.ingestor.state.shared for a in served)
    if server_mode != "steady":
        assert all(a.state.store is not store for a in served)
    # deltas are exact whichever process computed them, and the fixture's store reads them
    got = store.ex.query(f"SELECT value FROM {store.t('metric_points')} WHERE metric = 'c' ORDER BY ts")
    assert [r["value"] for r in got] == [10.0, 10.0, 10.0, 10.0]
