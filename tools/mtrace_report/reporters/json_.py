"""JSON output: the analyses' data as they are, for scripts and CI dashboards."""
import json
import sys


def write_json(data, stream=None):
    stream = stream or sys.stdout
    json.dump(data, stream, indent=2, sort_keys=True, default=str)
    stream.write("\n")
