#!/usr/bin/env python3
"""Asks TensorBoard's own HParams plugin (the code behind the HPARAMS tab) what it finds in a
log directory, and prints one line per run (session group):
`RUN<TAB>STATUS<TAB>{hparams as JSON}<TAB>{metric tag: last value, as JSON}`.
Used by test/io/tensorboard_test.cpp to check the hparams summaries io/tensorboard.cpp writes.
Usage: read_hparams.py LOG_DIR"""
import json
import sys

from tensorboard.backend.event_processing import data_provider
from tensorboard.backend.event_processing import plugin_event_multiplexer
from tensorboard.plugins import base_plugin
from tensorboard.plugins.hparams import hparams_plugin
from werkzeug import test as wtest
from werkzeug import wrappers


def post(app, route, body):
    client = wtest.Client(app, wrappers.Response)
    r = client.post(route, data=json.dumps(body), content_type="application/json")
    if r.status_code != 200:
        raise SystemExit(f"{route}: HTTP {r.status_code}: {r.get_data(as_text=True)}")
    return json.loads(r.get_data(as_text=True))


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    logdir = sys.argv[1]
    mux = plugin_event_multiplexer.EventMultiplexer()
    mux.AddRunsFromDirectory(logdir)
    mux.Reload()
    ctx = base_plugin.TBContext(
        logdir=logdir,
        data_provider=data_provider.MultiplexerDataProvider(mux, logdir),
        multiplexer=mux,
    )
    apps = hparams_plugin.HParamsPlugin(ctx).get_plugin_apps()
    experiment = post(apps["/experiment"], "/experiment", {"experimentName": ""})
    if not experiment.get("hparamInfos"):
        raise SystemExit("the HParams plugin found no hyperparameters")
    request = {
        "experimentName": "",
        "startIndex": 0,
        "sliceSize": 1000,
        "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"],
        "colParams": [],
    }
    groups = post(apps["/session_groups"], "/session_groups", request)
    for g in sorted(groups.get("sessionGroups", []), key=lambda g: g["name"]):
        status = g["sessions"][0].get("status", "STATUS_UNKNOWN") if g.get("sessions") else "-"
        metrics = {m["name"]["tag"]: m["value"] for m in g.get("metricValues", [])}
        print(f"{g['name']}\t{status}\t{json.dumps(g['hparams'], sort_keys=True)}\t"
              f"{json.dumps(metrics, sort_keys=True)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
