#!/usr/bin/python3
"""Parses an OpenMetrics text exposition (stdin) with the reference parser of
the Prometheus project's Python client (Debian: python3-prometheus-client)
and prints its samples as JSON: {"families": {name: type}, "samples":
[[name, labels, value], ...]}. A text the parser refuses exits non-zero with
its error. Used by tests/metrics_endpoint.rs and tests/browser/metrics.test.mjs."""

import json
import sys

from prometheus_client.openmetrics.parser import text_string_to_metric_families

text = sys.stdin.read()
families = {}
samples = []
try:
    for family in text_string_to_metric_families(text):
        families[family.name] = family.type
        for sample in family.samples:
            samples.append([sample.name, sample.labels, sample.value])
except Exception as error:  # the parser raises ValueError and others
    print(f"not valid OpenMetrics text: {error!r}", file=sys.stderr)
    sys.exit(1)
json.dump({"families": families, "samples": samples}, sys.stdout)
