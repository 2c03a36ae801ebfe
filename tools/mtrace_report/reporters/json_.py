"""JSON output: the analyses' data as they are, for scripts and CI dashboards."""
import json

from .text import write


def write_json(data, stream=None):
    write(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n", stream)
