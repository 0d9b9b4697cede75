"""Analysis of a study, read back from MLflow: the paper's tables, multi-seed consistency,
figures, and a self-contained report.

Modules (one concept each):

- :mod:`~seqablate.analysis.study`: a study's trial runs and search space, read from MLflow.
- :mod:`~seqablate.analysis.runs`: trial runs as plain records, their configuration,
  evaluation conditions, and seed grouping.
- :mod:`~seqablate.analysis.tables`: Tables I-VI in the paper's shape (seeds aggregated).
- :mod:`~seqablate.analysis.detections`: every run's per-patient detections, read back once.
- :mod:`~seqablate.analysis.verdicts`: margins, the weak-model floor, Holm; the verdict words.
- :mod:`~seqablate.analysis.findings`: the paper's claims with networks and recipe intervals.
- :mod:`~seqablate.analysis.forest`: the findings' forest plot and compact table.
- :mod:`~seqablate.analysis.render`: tables as Markdown / HTML with best bold, second underlined.
- :mod:`~seqablate.analysis.hpo`: best trials and Optuna parameter importances.
- :mod:`~seqablate.analysis.consistency`: saliency shares, across-seed spread, Kendall's W.
- :mod:`~seqablate.analysis.traces`: every run's saliency traces, grouped by configuration.
- :mod:`~seqablate.analysis.figures`: PR and FROC figures from the logged curves.
- :mod:`~seqablate.analysis.overlays`: predictions and truth outlined on a test slice.
- :mod:`~seqablate.analysis.plots`: matplotlib figures (PNG).
- :mod:`~seqablate.analysis.report`: assembles report.md / report.html, logs it to MLflow.

Only :mod:`seqablate.tracking` talks to MLflow; everything here works on pandas / numpy.
"""
