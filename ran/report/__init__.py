"""Reporting: FINDINGS.md and its PDF (:mod:`~ran.report.findings`; cells, tables and
numbers in :mod:`~ran.report.render`), its collected blocks (the abstract
:mod:`~ran.report.abstract`, the Targets table :mod:`~ran.report.targets`, the runs appendix
:mod:`~ran.report.appendix`), the mechanism diagram (:mod:`~ran.report.diagram`) and the
notebooks' figures (:mod:`ran.report.figures`, log axes in :mod:`~ran.report.figures.axes`)."""
