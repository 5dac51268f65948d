"""JUnit XML for CI systems: one testcase per verdict, rebuilt from the journal alone."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

from chaos.judge.timeline import Timeline
from chaos.judge.verdict import Status, Verdict
from chaos.outdir import write_file


def write_junit(path: Path, timeline: Timeline, verdicts: Sequence[Verdict], suite: str = "drainspec") -> None:
    """One testcase per verdict: failures carry the evidence, not-applicable ones are skipped."""
    root = ET.Element(
        "testsuite",
        name=suite,
        tests=str(len(verdicts)),
        failures=str(sum(v.status == Status.FAIL for v in verdicts)),
        skipped=str(sum(v.status == Status.NOT_APPLICABLE for v in verdicts)),
    )
    for verdict in verdicts:
        case = ET.SubElement(root, "testcase", classname=suite, name=verdict.name)
        if verdict.status == Status.FAIL:
            failure = ET.SubElement(case, "failure", message=verdict.summary)
            failure.text = "\n".join(str(item) for item in verdict.evidence)
        elif verdict.status == Status.NOT_APPLICABLE:
            ET.SubElement(case, "skipped", message=verdict.summary)
    data = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    write_file(path, data)
