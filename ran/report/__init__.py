"""Reporting: FINDINGS.md and its PDF (:mod:`~ran.report.findings`), the mechanism
diagram (:mod:`~ran.report.diagram`) and the notebooks' figures (:mod:`ran.report.figures`)."""
