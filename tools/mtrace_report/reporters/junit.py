"""JUnit XML for the gate, the format CI systems (GitLab, Jenkins, GitHub actions'
reporters) show as test results: one test case per check, one per offending stack."""
import xml.etree.ElementTree as ET

from ..analysis.stacks import frame_text
from ..errors import ReportError

SUITE = "mtrace leak gate"
CLASSNAME = "mtrace.gate"


def _stack_text(entry):
    return "\n".join(f"#{i} {frame_text(f)}" for i, f in enumerate(entry["frames"])) or "(no stack)"


def write_junit(result, path):
    suite = ET.Element("testsuite", name=SUITE)
    cases = failures = 0
    for c in result["checks"]:
        cases += 1
        case = ET.SubElement(suite, "testcase", classname=CLASSNAME,
                             name=f"{c['name']} <= {c['limit']}")
        if not c["passed"]:
            failures += 1
            fail = ET.SubElement(case, "failure", message=f"{c['name']}: {c['value']} > {c['limit']}")
            fail.text = "\n\n".join(
                f"{e['bytes']} bytes in {e['blocks']} blocks (pid {e['pid']})\n{_stack_text(e)}"
                for e in result["offending"])
    for e in result["offending"]:
        cases += 1
        top = frame_text(e["frames"][0]) if e["frames"] else f"stack {e['stack_id']}"
        case = ET.SubElement(suite, "testcase", classname=CLASSNAME,
                             name=f"leak in pid {e['pid']} at {top}")
        failures += 1
        fail = ET.SubElement(case, "failure", message=f"{e['bytes']} bytes in {e['blocks']} blocks leaked")
        fail.text = _stack_text(e)
    suite.set("tests", str(cases))
    suite.set("failures", str(failures))
    suite.set("errors", "0")
    root = ET.Element("testsuites")
    root.append(suite)
    try:
        ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)
    except OSError as e:
        raise ReportError(f"cannot write {path}: {e.strerror}", "check the --junit path")
