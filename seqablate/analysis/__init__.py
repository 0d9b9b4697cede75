"""Analysis of a study, read back from MLflow: the paper's tables, multi-seed consistency,
figures, and a self-contained report.

Modules (one concept each):

- :mod:`~seqablate.analysis.runs`: trial runs as plain records, their configuration,
  evaluation conditions, and seed grouping.
- :mod:`~seqablate.analysis.tables`: Tables I-VI in the paper's shape (seeds aggregated).
- :mod:`~seqablate.analysis.render`: tables as Markdown / HTML with best bold, second underlined.
- :mod:`~seqablate.analysis.hpo`: best trials and Optuna parameter importances.
- :mod:`~seqablate.analysis.consistency`: saliency shares, across-seed spread, Kendall's W.
- :mod:`~seqablate.analysis.plots`: matplotlib figures (PNG).
- :mod:`~seqablate.analysis.report`: assembles report.md / report.html, logs it to MLflow.

Only :mod:`seqablate.tracking` talks to MLflow; everything here works on pandas / numpy.
"""
