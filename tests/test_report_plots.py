"""The online report's plots (online/report/report.py) when a day has too few users for an
interval: drawn, not an error."""

import json


from groundrec.online.report.run import ReportConfig, run
from groundrec.shared.events import Event, Impression, open_store


def test_a_day_with_one_user_is_plotted_without_an_interval(tmp_path):
    import matplotlib  # noqa: F401  (installed by make install: a missing one fails, never skips)
    store = open_store(f"sqlite:///{tmp_path}/events.db")
    store.add_impressions([Impression("r1", "u1", 1_000_000.0, "v1", ("a", "b"))])
    store.add([Event("u1", "a", 1_000_010.0, "view", 1.0, None, "r1")])
    store.close()
    run(ReportConfig(events=f"sqlite:///{tmp_path}/events.db", out=tmp_path / "report"))
    results = json.loads((tmp_path / "report" / "results.json").read_text())
    assert results["versions"]["v1"]["clicks"] == 1
    assert any(p.suffix == ".png" for p in (tmp_path / "report").iterdir())
