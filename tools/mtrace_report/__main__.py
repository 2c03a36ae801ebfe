"""`python3 -m mtrace_report`: the entry point the tools/mtrace-report launcher runs."""
import sys

from .cli import main

sys.exit(main())
